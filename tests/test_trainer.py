"""Mask training with transformers.Trainer: masks and head move, the backbone does not."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_models import tiny_whisper
from transformers import Trainer, TrainingArguments, WhisperFeatureExtractor

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model
from hf_keepwhat.adapter import ADAPTER_WEIGHTS_FILE


def _synthetic_dataset(n: int = 16) -> Dataset:
    """Tones whose pitch depends on the label, through a real Whisper feature extractor."""
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    audio, labels = [], []
    for i in range(n):
        label = i % 3
        tone = np.sin(2 * np.pi * (300 + 400 * label) * t) + 0.1 * rng.standard_normal(t.size)
        audio.append(tone.astype(np.float32))
        labels.append(label)
    features = extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    return Dataset.from_dict(
        {"input_features": list(features), "labels": labels, "speaker": ["x"] * n}
    )


def _training_args(output_dir, **changes) -> TrainingArguments:
    """Batch 4 on the CPU, no reporting or progress bars, plus `changes`."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **changes,
    )


def test_trainer_moves_masks_and_head_only(tmp_path):
    config = MaskConfig(target_sparsity=0.5, target_warmup_steps=4)
    mm = get_mask_model(tiny_whisper(), config)
    frozen_before = {
        n: p.detach().clone() for n, p in mm.model.named_parameters() if not p.requires_grad
    }
    head_before = mm.model.classifier.weight.detach().clone()
    masks_before = {n: p.detach().clone() for n, p in mm.masks.named_parameters()}

    args = _training_args(tmp_path, max_steps=6, learning_rate=0.05, logging_steps=2, save_steps=6)
    callback = SparsityCallback(config)
    trainer = Trainer(model=mm, args=args, train_dataset=_synthetic_dataset(), callbacks=[callback])
    trainer.train()

    for name, before in frozen_before.items():
        assert torch.equal(before, dict(mm.model.named_parameters())[name]), name
    assert not torch.equal(head_before, mm.model.classifier.weight)
    for name, before in masks_before.items():
        assert not torch.equal(before, dict(mm.masks.named_parameters())[name]), name

    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert train_logs and all("removed_params" in entry for entry in train_logs)
    assert train_logs[0]["sparsity_target"] < config.target_sparsity  # still warming up
    assert mm.current_target == config.target_sparsity
    assert (tmp_path / "checkpoint-6" / ADAPTER_WEIGHTS_FILE).exists()


def test_warmup_schedule():
    callback = SparsityCallback(MaskConfig(target_sparsity=0.6, target_warmup_steps=10))
    assert callback.target_at(0) == 0.0
    assert abs(callback.target_at(5) - 0.3) < 1e-12
    assert callback.target_at(50) == 0.6


def test_warmup_starts_from_what_dropped_layers_remove(tmp_path):
    """With `last_layer`, the budget already counts the dropped layers as removed; a warm-up
    from 0 would pull every mask on until the target passed that share."""
    config = MaskConfig(
        budget="macs",
        target_sparsity=0.8,
        target_warmup_steps=10,
        last_layer=1,
        max_input_seconds=1,
    )
    mm = get_mask_model(tiny_whisper(), config)
    dropped = mm.budget.min_removed_fraction()
    assert dropped == pytest.approx(mm.sparsity_report()["total"]["macs_removed_fraction"])
    assert 0.1 < dropped < 0.8  # one of three layers, less what no mask touches
    callback = SparsityCallback(config)
    args = _training_args(tmp_path, max_steps=2, logging_steps=1, learning_rate=1e-3)
    trainer = Trainer(model=mm, args=args, train_dataset=_synthetic_dataset(), callbacks=[callback])
    trainer.train()

    # Logged after each step, at the target that step trained with (steps 0 and 1).
    targets = [e["sparsity_target"] for e in trainer.state.log_history if "loss" in e]
    assert targets == pytest.approx([dropped, dropped + (0.8 - dropped) * 0.1])
    assert callback.target_at(10) == 0.8
    # A target below the dropped share is not lowered to it: the warm-up never runs backwards.
    low = SparsityCallback(MaskConfig(budget="macs", target_sparsity=0.05, target_warmup_steps=10))
    low.on_train_begin(args, None, None, model=mm)
    assert low.target_at(0) == 0.05


def _train(output_dir, dataset, resume=None):
    torch.manual_seed(7)  # the same "pretrained" backbone in every run
    config = MaskConfig(target_sparsity=0.5, target_warmup_steps=4, mask_learning_rate=0.05)
    mm = get_mask_model(tiny_whisper(), config)
    args = _training_args(output_dir, max_steps=8, save_steps=4, learning_rate=1e-2, seed=0)
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=dataset,
        callbacks=[SparsityCallback(config)],
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
    )
    trainer.train(resume_from_checkpoint=resume)
    return mm


def test_checkpoints_hold_masks_and_head_and_resume_exactly(tmp_path):
    from safetensors import safe_open

    dataset = _synthetic_dataset()
    uninterrupted = _train(tmp_path / "a", dataset)
    checkpoint = tmp_path / "a" / "checkpoint-4"
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == set(uninterrupted.state_dict())
    assert all(k.startswith(("masks.", "model.projector.", "model.classifier.")) for k in keys)

    resumed = _train(tmp_path / "b", dataset, resume=str(checkpoint))
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_hard_concrete_masks_train_with_trainer_and_prune_to_what_eval_computed(tmp_path):
    """The hard-concrete masks sample only while they train: evaluation, the sparsity the
    callback logs and the pruned model all use the hard mask."""
    config = MaskConfig(
        budget="macs", target_sparsity=0.5, mask_type="hard_concrete", mask_learning_rate=0.5
    )
    mm = get_mask_model(tiny_whisper(), config)
    args = _training_args(
        tmp_path, max_steps=20, learning_rate=0.05, logging_steps=5, save_strategy="no"
    )
    dataset = _synthetic_dataset()
    trainer = Trainer(
        model=mm, args=args, train_dataset=dataset, callbacks=[SparsityCallback(config)]
    )
    trainer.train()

    logged = [e["removed_macs"] for e in trainer.state.log_history if "removed_macs" in e]
    assert logged[-1] == pytest.approx(mm.realised_sparsity()) and logged[-1] > 0
    mm.eval()
    features = torch.tensor(np.stack(dataset["input_features"][:4]), dtype=torch.float32)
    with torch.no_grad():
        masked = mm(input_features=features).logits
        again = mm(input_features=features).logits
        pruned = mm.prune()(input_features=features).logits
    assert torch.equal(masked, again)  # no sampling in eval mode
    assert (masked - pruned).abs().max().item() <= 1e-4
