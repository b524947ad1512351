"""`train_to_target`: masks short of their target train on with the penalty's target raised by the
shortfall until they meet it; only masks and head change, and the record reaches the pruned model,
the adapter and their cards."""

import copy

import pytest
import torch
from test_exact_budget import _trained_like
from test_recovery import _nn_state, _train_args
from test_trainer import _synthetic_dataset
from transformers import TrainerCallback

from hf_keepwhat import MaskModel, train_to_target
from hf_keepwhat.cards import after_training_notes


class _Seen(TrainerCallback):
    """After every step: the target the penalty pulled towards, the realised sparsity, and the
    learning rate of the next step."""

    def __init__(self, mm):
        self.mm, self.targets, self.realised, self.rates = mm, [], [], []

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        self.targets.append(self.mm.current_target)
        self.realised.append(self.mm.realised_sparsity())
        self.rates.append(lr_scheduler.get_last_lr()[0])


@pytest.mark.slow
def test_trains_on_towards_the_raised_target_until_it_is_met(tmp_path):
    base, mm = _trained_like(mask_learning_rate=0.1)
    before = mm.realised_sparsity()
    assert before < 0.5
    state = {k: v.clone() for k, v in _nn_state(mm).items()}
    seen = _Seen(mm)

    args = _train_args(tmp_path / "rounds", steps=10)
    realised = train_to_target(mm, args, _synthetic_dataset(), rounds=4, callbacks=[seen])

    assert realised == mm.realised_sparsity() >= 0.5
    record = mm.target_trained
    aims = record["aims"]
    assert record["target"] == 0.5 and record["realised_before"] == before
    assert record["realised"] == realised and record["steps"] == len(seen.targets)
    # The first aim is the target plus the shortfall; every later one adds what is still missing.
    assert aims[0] == pytest.approx(0.5 + (0.5 - before))
    assert len(aims) > 1 and aims == sorted(aims)
    # Every round but the last ran its 10 steps; training stopped at the first step that met it.
    rounds = [a for a in aims[:-1] for _ in range(10)]
    assert seen.targets == rounds + [aims[-1]] * (len(seen.targets) - len(rounds))
    assert max(seen.realised[:-1]) < 0.5 <= seen.realised[-1] == realised
    # With no warm-up in `args`, each round's rate rises from 0 towards the head's over its steps.
    assert seen.rates[:9] == pytest.approx([1e-2 * step / 10 for step in range(1, 10)])
    assert mm.current_target == 0.5  # back to the target, for the logs and a later run
    changed = {k for k, v in _nn_state(mm).items() if not torch.equal(v, state[k])}
    assert any(k.startswith("masks.") for k in changed)
    assert all(k.startswith(("masks.", "model.projector.", "model.classifier.")) for k in changed)

    sentence = f"trained on for {record['steps']} steps in {len(aims)} round(s)"
    pruned = mm.prune()
    assert pruned.config.keepwhat["target_trained"] == record
    pruned.save_pretrained(tmp_path / "pruned")
    assert sentence in (tmp_path / "pruned" / "README.md").read_text()
    mm.save_pretrained(tmp_path / "adapter")
    assert sentence in (tmp_path / "adapter" / "README.md").read_text()
    loaded = MaskModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    assert loaded.target_trained == record


def test_a_met_target_trains_nothing(tmp_path):
    _, mm = _trained_like(target=0.05)
    state = copy.deepcopy(mm.state_dict())
    realised = train_to_target(mm, _train_args(tmp_path), _synthetic_dataset())
    assert realised == mm.realised_sparsity() > 0.05 and mm.target_trained is None
    for key, value in mm.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize(
    "kwargs, message", [({"target": 1.0}, r"in \[0, "), ({"rounds": 0}, "at least 1")]
)
def test_an_invalid_target_or_round_count_is_refused(tmp_path, kwargs, message):
    _, mm = _trained_like()
    with pytest.raises(ValueError, match=message):
        train_to_target(mm, _train_args(tmp_path), _synthetic_dataset(), **kwargs)
    assert mm.target_trained is None


def test_the_card_says_once_where_mask_training_stopped_when_both_closed_the_gap():
    trained = {"target": 0.5, "realised_before": 0.46, "realised": 0.49, "aims": [0.54, 0.55],
               "steps": 40, "learning_rate": 1e-3}  # fmt: skip
    met = {"target": 0.5, "realised_before": 0.49, "realised": 0.501, "units_switched_off": 3,
           "selection": "least_sure"}  # fmt: skip
    notes = after_training_notes(
        {"mask_config": {"budget": "macs"}, "target_trained": trained, "target_met": met}
    )
    assert notes.count("Mask training stopped at 46.0%") == 1
    assert "Training stopped at 49.0% of the backbone's MACs removed" in notes
