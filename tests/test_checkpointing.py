"""`TrainingArguments(gradient_checkpointing=True)` with a MaskModel: the masks still get their
gradients, and train to exactly what they train to without checkpointing."""

import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_whisper
from transformers import Trainer, TrainingArguments

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model


def _trained_masks(tmp_path, checkpointing: bool):
    torch.manual_seed(0)
    config = MaskConfig(target_sparsity=0.5, mask_learning_rate=0.05)
    mm = get_mask_model(tiny_whisper(), config)
    args = TrainingArguments(
        str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
        gradient_checkpointing=checkpointing, report_to=[], use_cpu=True, disable_tqdm=True,
        save_strategy="no", seed=0,
    )  # fmt: skip
    Trainer(
        mm, args, train_dataset=_synthetic_dataset(), callbacks=[SparsityCallback(config)]
    ).train()
    assert mm.model.encoder.gradient_checkpointing == checkpointing
    return {k: v for k, v in mm.state_dict().items() if k.startswith("masks.")}


def test_masks_train_the_same_with_gradient_checkpointing(tmp_path):
    plain = _trained_masks(tmp_path / "a", checkpointing=False)
    checkpointed = _trained_masks(tmp_path / "b", checkpointing=True)
    assert any((v - 1.0).abs().max() > 0.1 for v in checkpointed.values())  # they moved
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, atol=1e-5, rtol=1e-5)
