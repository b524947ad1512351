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
    runs = []  # forward runs of a module inside a layer: recomputed in backward if checkpointed
    mm.model.encoder.layers[1].fc1.register_forward_hook(lambda *_: runs.append(1))
    args = TrainingArguments(
        str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
        gradient_checkpointing=checkpointing, report_to=[], use_cpu=True, disable_tqdm=True,
        save_strategy="no", seed=0,
    )  # fmt: skip
    Trainer(
        mm, args, train_dataset=_synthetic_dataset(), callbacks=[SparsityCallback(config)]
    ).train()
    assert mm.model.encoder.gradient_checkpointing == checkpointing
    # 4 steps: the layer runs once per step, twice when checkpointed (in eval mode, as the
    # frozen backbone is; transformers alone checkpoints only layers in training mode).
    assert not mm.model.encoder.layers[1].training
    assert len(runs) == (8 if checkpointing else 4)
    masks = {k: v for k, v in mm.state_dict().items() if k.startswith("masks.")}
    model = mm.unload()
    assert not model.encoder.gradient_checkpointing
    assert all("forward" not in m.__dict__ for m in model.modules())
    return masks


def test_masks_train_the_same_with_gradient_checkpointing(tmp_path):
    plain = _trained_masks(tmp_path / "a", checkpointing=False)
    checkpointed = _trained_masks(tmp_path / "b", checkpointing=True)
    assert any((v - 1.0).abs().max() > 0.1 for v in checkpointed.values())  # they moved
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, atol=1e-5, rtol=1e-5)
