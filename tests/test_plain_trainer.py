"""The plain `Trainer` path (no `optimizer_cls_and_kwargs`): the masks still learn at their own
rate and the Lagrange multipliers still ascend, as with the parameter groups of the README."""

import pytest
import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_whisper
from transformers import Trainer, TrainingArguments

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model


def _train(tmp_path, config, with_groups: bool, steps: int = 8):
    torch.manual_seed(0)
    mm = get_mask_model(tiny_whisper(), config)
    before = {k: v.clone() for k, v in mm.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=steps,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        seed=0,
    )
    extra = {"optimizer_cls_and_kwargs": mm.optimizer_cls_and_kwargs(args)} if with_groups else {}
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=_synthetic_dataset(),
        callbacks=[SparsityCallback(config)],
        **extra,
    )
    trainer.train()
    return mm, before


@pytest.mark.parametrize("budget_mode", ["penalty", "lagrangian"])
def test_plain_trainer_trains_masks_as_the_parameter_groups_do(tmp_path, budget_mode):
    config = MaskConfig(
        target_sparsity=0.5, mask_learning_rate=0.05, budget_mode=budget_mode, penalty_on="mask"
    )
    plain, before = _train(tmp_path / "plain", config, with_groups=False)
    grouped, _ = _train(tmp_path / "groups", config, with_groups=True)
    plain_state, grouped_state = plain.state_dict(), grouped.state_dict()
    moved = max(
        float((plain_state[k] - before[k]).abs().max()) for k in before if k.startswith("masks.")
    )
    assert moved > 0.2  # 8 Adam steps at 0.05 each; at the head's rate (1e-3) they would be 0.008
    for key, value in grouped_state.items():  # the same steps: Adam is invariant to the scaling
        torch.testing.assert_close(plain_state[key], value, atol=1e-5, rtol=1e-4)
    if budget_mode == "lagrangian":
        assert (plain_state["lagrange"] > before["lagrange"]).all()  # ascended


def test_rate_leaves_saved_logits_and_resumed_state_unchanged(tmp_path):
    config = MaskConfig(target_sparsity=0.5, mask_learning_rate=0.05, budget_mode="lagrangian")
    mm, _ = _train(tmp_path, config, with_groups=False, steps=2)
    assert mm.get_mask(mm.unit_groups[0].name).rate == pytest.approx(50.0)
    state = {k: v.clone() for k, v in mm.state_dict().items()}
    torch.manual_seed(0)  # the same base weights as `_train`'s
    fresh = get_mask_model(tiny_whisper(), config)  # rate 1, as when Trainer resumes
    fresh.load_state_dict(state)
    out = torch.randn(2, 16, 100)
    mm.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(mm(input_features=out).logits, fresh(input_features=out).logits)
        torch.testing.assert_close(mm.sparsity_penalty(), fresh.sparsity_penalty())
    fresh.get_mask(fresh.unit_groups[0].name).set_rate(7.0)  # a rate change keeps the values
    torch.testing.assert_close(fresh.state_dict(), state)
