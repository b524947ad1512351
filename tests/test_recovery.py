"""Recovery: the head refit with the masks frozen, and LoRA (peft) on a pruned model (same class
and shapes, weights changed, merged, saved with the record on its card, loaded back)."""

import numpy as np
import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_whisper
from transformers import AutoModelForAudioClassification, TrainingArguments

from hf_keepwhat import MaskConfig, get_mask_model, recover_with_lora, refit_head
from hf_keepwhat.recovery import lora_target_modules


def _train_args(folder, steps: int = 4):
    return TrainingArguments(
        str(folder), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
    )  # fmt: skip


def _nn_state(mm) -> dict:
    """Every tensor of the MaskModel, frozen backbone included (`state_dict` holds the adapter)."""
    return torch.nn.Module.state_dict(mm)


def _pruned():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [1, 2])
    mm.set_kept("encoder.layers.1.ffn", [])  # a zero-width FFN: no adapter for it
    return mm.prune()


def test_lora_recovery_trains_merges_and_records(tmp_path):
    pruned = _pruned()
    targets = lora_target_modules(pruned)
    assert "encoder.layers.0.self_attn.q_proj" in targets
    assert not any(t.startswith("encoder.layers.1.fc") for t in targets)
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    recovered = recover_with_lora(pruned, _train_args(tmp_path / "lora"), _synthetic_dataset())
    assert type(recovered) is type(pruned) and not recovered.training
    assert {k: v.shape for k, v in recovered.state_dict().items()} == shapes  # merged: no lora_*
    changed = [k for k, v in recovered.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoder.layers.0.self_attn.q_proj.weight" in changed
    assert "classifier.weight" in changed  # the head trains with the adapters
    assert "encoder.layers.1.fc1.weight" not in changed
    record = recovered.keepwhat_record["recovery"]
    assert record["method"] == "lora" and record["steps"] == 4

    recovered.save_pretrained(tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert "fine-tuned on the task with LoRA" in card and "4 steps" in card
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path / "model").eval()
    x = torch.randn(2, 16, 100)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_features=x).logits, recovered(input_features=x).logits
        )


def test_head_refit_trains_the_head_only_and_is_recorded(tmp_path):
    config = MaskConfig(budget_mode="lagrangian", target_sparsity=0.3, distill_weight=1.0)
    mm = get_mask_model(tiny_whisper(), config)
    mm.set_kept("encoder.layers.0.heads", [1, 2])
    mm.set_kept("encoder.layers.1.ffn", [0, 4])
    before = {k: v.clone() for k, v in _nn_state(mm).items()}
    data = _synthetic_dataset()
    x = torch.tensor(np.stack(data["input_features"]), dtype=torch.float32)
    labels = torch.tensor(data["labels"])
    with torch.no_grad():
        loss_before = mm.eval()(input_features=x, labels=labels).task_loss

    assert refit_head(mm, _train_args(tmp_path / "refit", steps=30), data) is mm
    changed = {k for k, v in _nn_state(mm).items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("model.projector.", "model.classifier.")) for k in changed)
    with torch.no_grad():
        assert mm(input_features=x, labels=labels).task_loss < loss_before  # fitted to the units
    assert all(p.requires_grad for p in mm.masks.parameters()) and mm.lagrange.requires_grad
    assert mm.head_refit == {"steps": 30, "learning_rate": 1e-2}

    pruned = mm.prune()
    assert pruned.config.keepwhat["head_refit"] == {"steps": 30, "learning_rate": 1e-2}
    pruned.save_pretrained(tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    assert "trained again on the kept units with the masks frozen" in card and "30 steps" in card
