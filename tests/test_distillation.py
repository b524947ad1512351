"""Distillation from the dense model while masks train (`MaskConfig.distill_weight`)."""

import copy

import pytest
import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_wav2vec2, tiny_whisper
from transformers import Trainer, TrainingArguments

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model
from hf_keepwhat.distillation import relative_squared_error


def _whisper_batch():
    torch.manual_seed(0)
    return {"input_features": torch.randn(2, 16, 100), "labels": torch.tensor([0, 2])}


def test_loss_is_the_relative_error_between_pruned_and_dense_encoder_outputs():
    model = tiny_whisper()
    dense = copy.deepcopy(model).eval()
    config = MaskConfig(target_sparsity=0.3, distill_weight=2.5)
    mm = get_mask_model(model, config).train()
    batch = _whisper_batch()

    untouched = mm(**batch)  # every unit kept: the student is the teacher
    assert untouched.distillation_loss.item() == pytest.approx(0.0, abs=1e-10)

    mm.set_kept("encoder.layers.0.heads", [1])
    mm.set_kept("encoder.layers.1.ffn", [0, 3, 5])
    out = mm(**batch)
    # Independent references: the unwrapped dense model and the physically pruned one.
    with torch.no_grad():
        teacher = dense.encoder(batch["input_features"]).last_hidden_state
        student = mm.prune().encoder(batch["input_features"]).last_hidden_state
    expected = ((student - teacher) ** 2).sum() / (teacher**2).sum()
    assert out.distillation_loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.distillation_loss.item() > 1e-5  # tiny random weights: small, not 0
    assert torch.allclose(out.auxiliary_loss, out.sparsity_penalty + 2.5 * out.distillation_loss)
    assert torch.allclose(out.loss, out.task_loss + out.auxiliary_loss)
    assert mm.last_distillation_loss == pytest.approx(out.distillation_loss.item())
    assert len(mm._hooks.handles) == len(mm.unit_groups)  # the teacher pass put them back


def test_its_gradient_reaches_the_masks_only():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.3, distill_weight=1.0))
    mm.train()
    mm.set_kept("encoder.layers.0.heads", [1])
    mm(**_whisper_batch()).distillation_loss.backward()
    head = [p for n, p in mm.named_parameters() if n.startswith("model.") and p.requires_grad]
    assert head and all(p.grad is None for p in head)
    grads = [m.logits.grad for m in mm.masks.values()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_off_in_eval_without_gradients_with_frozen_masks_and_at_weight_zero():
    batch = _whisper_batch()
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.3, distill_weight=1.0))
    mm.set_kept("encoder.layers.0.heads", [1])
    eval_out = mm.eval()(**batch)
    assert eval_out.distillation_loss is None
    assert torch.allclose(eval_out.loss, eval_out.task_loss + eval_out.sparsity_penalty)
    with torch.no_grad():
        assert mm.train()(**batch).distillation_loss is None
    mm.masks.requires_grad_(False)  # a dense baseline or fixed structured masks
    assert mm(**batch).distillation_loss is None
    plain = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.3)).train()
    assert plain(**batch).distillation_loss is None


def test_wav2vec2_backbone_output_is_distilled():
    mm = get_mask_model(tiny_wav2vec2(), MaskConfig(target_sparsity=0.3, distill_weight=1.0))
    mm.train()
    group = next(g for g in mm.unit_groups if g.kind == "ffn")
    mm.set_kept(group.name, [0])
    torch.manual_seed(0)
    out = mm(input_values=torch.randn(2, 4000), labels=torch.tensor([0, 1]))
    assert out.distillation_loss.item() > 0
    assert torch.allclose(out.loss, out.task_loss + out.auxiliary_loss)


def test_plain_module_is_refused_with_the_fix():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match="distill_weight needs a transformers model"):
        get_mask_model(model, MaskConfig(distill_weight=1.0), example_inputs=torch.randn(1, 4))


def test_relative_error_is_scale_free():
    teacher = torch.randn(3, 5, 7)
    student = teacher + 0.1 * torch.randn(3, 5, 7)
    assert relative_squared_error(student, teacher).item() == pytest.approx(
        relative_squared_error(10 * student, 10 * teacher).item(), rel=1e-5
    )
    assert relative_squared_error(torch.zeros(3), torch.ones(3)).item() == pytest.approx(1.0)


def test_trainer_trains_with_it_and_logs_it(tmp_path):
    config = MaskConfig(
        budget="macs", target_sparsity=0.4, distill_weight=1.0, mask_learning_rate=0.05
    )
    mm = get_mask_model(tiny_whisper(), config)
    args = TrainingArguments(
        tmp_path, max_steps=6, per_device_train_batch_size=4, logging_steps=3, report_to=[]
    )
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=_synthetic_dataset(),
        callbacks=[SparsityCallback(config)],
    )
    trainer.train()
    logged = [h["distillation_loss"] for h in trainer.state.log_history if "distillation_loss" in h]
    assert len(logged) == 2 and all(value >= 0 for value in logged)
