"""Mask training on the real Whisper tiny.en with real speech (FSDD): the budget is met."""

import random

import pytest
import torch
from conftest import real_asset
from datasets import Dataset
from fsdd import fsdd_split, load_16k
from transformers import (
    Trainer,
    TrainingArguments,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model
from hf_keepwhat.profiling import count_params

STEPS = 120


@pytest.fixture(scope="module")
def whisper_path():
    return real_asset("KEEPWHAT_WHISPER_TINY")


def _features(extractor, items):
    audio = [load_16k(path) for path, _ in items]
    features = extractor(audio, sampling_rate=16_000, return_tensors="np").input_features
    return Dataset.from_dict({"input_features": list(features), "labels": [d for _, d in items]})


def test_params_budget_is_met_on_real_whisper(whisper_path, tmp_path):
    fsdd = real_asset("KEEPWHAT_FSDD")
    hf_logging.set_verbosity_error()  # the classifier head is new: the load report says so
    model = WhisperForAudioClassification.from_pretrained(whisper_path, num_labels=10)
    full_encoder_params = count_params(model.encoder)
    extractor = WhisperFeatureExtractor.from_pretrained(whisper_path, chunk_length=3)
    train_items = fsdd_split(fsdd, "train")
    random.Random(0).shuffle(train_items)
    train = _features(extractor, train_items[: STEPS * 8])

    config = MaskConfig(
        budget="params",
        target_sparsity=0.5,
        max_input_seconds=3,
        mask_learning_rate=0.03,
        target_warmup_steps=40,
    )
    mm = get_mask_model(model, config)
    backbone_before = {n: p.detach().clone() for n, p in mm.model.encoder.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=STEPS,
        learning_rate=1e-3,
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=train,
        callbacks=[SparsityCallback(config)],
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
    )
    trainer.train()

    total = mm.sparsity_report()["total"]
    print(
        f"realised removed fraction of encoder params after {STEPS} steps: "
        f"{total['params_removed_fraction']:.4f} (3 s encoder, {total['params_original']} params); "
        f"vs the 30 s encoder ({full_encoder_params} params): "
        f"{1 - total['params_remaining'] / full_encoder_params:.4f}"
    )
    assert abs(total["params_removed_fraction"] - 0.5) <= 0.05
    for name, before in backbone_before.items():
        assert torch.equal(before, dict(mm.model.encoder.named_parameters())[name]), name

    # The pruned real model computes what the masked one does, at the predicted size.
    mm.eval()
    test = _features(extractor, fsdd_split(fsdd, "test")[:4])
    inputs = torch.tensor(test["input_features"])
    pruned = mm.prune()
    with torch.no_grad():
        diff = (mm(input_features=inputs).logits - pruned(input_features=inputs).logits).abs().max()
    assert diff.item() <= 1e-4
    assert count_params(pruned.encoder) == total["params_remaining"]
