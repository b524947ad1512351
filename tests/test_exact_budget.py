"""`meet_target`: trained masks short of their target are completed, least sure units first, the
fewest that meet it; the record reaches the pruned model, the adapter and both cards."""

import copy

import pytest
import torch
from tiny_models import tiny_whisper

from hf_keepwhat import MaskConfig, MaskModel, get_mask_model, meet_target
from hf_keepwhat.cards import after_training_notes


def _trained_like(mask_type: str = "straight_through", target: float = 0.5, **config):
    """A tiny Whisper whose masks, like trained ones, have spread logits; at target 0.5 they
    remove too little."""
    torch.manual_seed(0)
    base = tiny_whisper()
    config = MaskConfig(budget="macs", target_sparsity=target, mask_type=mask_type, **config)
    mm = get_mask_model(copy.deepcopy(base), config)
    with torch.no_grad():
        for mask in mm.masks.values():
            mask.logits.copy_(torch.randn(mask.num_units) + 1.5)
    return base, mm


def _probabilities(mm) -> dict[str, torch.Tensor]:
    return {g.name: mm.get_mask(g.name).keep_probability().detach().clone() for g in mm.unit_groups}


@pytest.mark.parametrize(
    "mask_type", ["straight_through", "straight_through_gated", "hard_concrete"]
)
def test_meets_the_target_with_the_fewest_least_sure_units(mask_type):
    _, mm = _trained_like(mask_type)
    assert mm.realised_sparsity() < 0.5
    before, kept_before, probability = mm.realised_sparsity(), mm.kept_units(), _probabilities(mm)

    assert meet_target(mm) == mm.realised_sparsity() >= 0.5
    met = mm.target_met
    assert met["target"] == 0.5 and met["realised_before"] == before and met["units_switched_off"]
    switched = {
        (name, int(u))
        for name, kept in kept_before.items()
        for u in kept
        if u not in mm.kept_units()[name]
    }
    assert len(switched) == met["units_switched_off"]
    assert all(set(mm.kept_units()[n].tolist()) <= set(k.tolist()) for n, k in kept_before.items())
    # The least sure first: no unit still kept was less sure than one switched off.
    highest_off = max(float(probability[n][u]) for n, u in switched)
    lowest_on = min(float(probability[n][k].min()) for n, k in mm.kept_units().items() if len(k))
    assert highest_off <= lowest_on
    # The logits of the units left alone keep their values (and so their ranking).
    after = _probabilities(mm)
    for name, kept in kept_before.items():
        untouched = [int(u) for u in kept if (name, int(u)) not in switched]
        torch.testing.assert_close(after[name][untouched], probability[name][untouched])
    # The fewest: turning the last of them back on falls short of the target again.
    last_name, last_unit = max(switched, key=lambda s: float(probability[s[0]][s[1]]))
    mm.set_kept(last_name, [*mm.kept_units()[last_name].tolist(), last_unit])
    assert mm.realised_sparsity() < 0.5


def test_a_met_target_changes_nothing():
    _, mm = _trained_like(target=0.05)
    state = copy.deepcopy(mm.masks.state_dict())
    assert meet_target(mm) == mm.realised_sparsity() > 0.05
    assert mm.target_met is None
    for key, value in mm.masks.state_dict().items():
        assert torch.equal(value, state[key])


def test_an_unreachable_or_invalid_target_is_refused_and_changes_nothing():
    _, mm = _trained_like(target=0.2, unit_kinds=["heads"])
    state = copy.deepcopy(mm.masks.state_dict())
    with torch.no_grad():
        for group in mm.unit_groups:
            mm.set_kept(group.name, [])
        most = mm.realised_sparsity()  # the FFNs, which no mask covers here, still cost
        mm.masks.load_state_dict(state)
    with pytest.raises(ValueError, match="Even with every unit off"):
        meet_target(mm, target=(most + 1) / 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        meet_target(mm, target=1.0)
    for key, value in mm.masks.state_dict().items():
        assert torch.equal(value, state[key])
    assert mm.target_met is None


def test_the_record_reaches_the_pruned_model_the_adapter_and_their_cards(tmp_path):
    base, mm = _trained_like()
    meet_target(mm)
    mm.head_refit = {"steps": 7, "learning_rate": 0.001}  # as `refit_head` sets it
    sentence = f"the {mm.target_met['units_switched_off']} kept units with the lowest keep"

    pruned = mm.prune()
    assert pruned.config.keepwhat["target_met"] == mm.target_met
    assert pruned.config.keepwhat["report"]["total"]["macs_removed_fraction"] >= 0.5
    pruned.save_pretrained(tmp_path / "pruned")
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert sentence in card and "short of the 50.0% target" in card and "7 steps" in card

    mm.save_pretrained(tmp_path / "adapter")
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert sentence in card and "7 steps" in card
    loaded = MaskModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    assert loaded.target_met == mm.target_met and loaded.head_refit == mm.head_refit
    assert loaded.prune().config.keepwhat["target_met"] == mm.target_met


@pytest.mark.parametrize("budget", ["params", "macs"])
def test_realised_sparsity_counts_the_units_pruning_must_keep(budget):
    # Whisper's conv stem keeps one channel physically (no zero-channel convolution) even when
    # its mask removes them all: the realised figure `meet_target` checks must count it.
    mm = get_mask_model(tiny_whisper(), MaskConfig(budget=budget))
    mm.set_kept("encoder.conv1.channels", [])
    assert next(g for g in mm.unit_groups if g.name == "encoder.conv1.channels").min_kept == 1
    removed = mm.sparsity_report()["total"][f"{budget}_removed_fraction"]
    assert mm.realised_sparsity() == pytest.approx(removed, abs=1e-6)


@pytest.mark.parametrize("budget", ["params", "macs"])
def test_the_reachable_target_counts_the_units_pruning_must_keep(budget):
    # So that every target `get_mask_model` accepts is one `meet_target` can meet.
    mm = get_mask_model(tiny_whisper(), MaskConfig(budget=budget))
    for group in mm.unit_groups:
        mm.set_kept(group.name, [])
    assert mm.budget.max_removed_fraction() == pytest.approx(mm.realised_sparsity(), abs=1e-6)


def test_rounding_widths_after_meet_target_warns_when_it_misses_the_target(caplog):
    _, mm = _trained_like()
    meet_target(mm)
    with caplog.at_level("WARNING", logger="hf_keepwhat.pruning"):
        exact = mm.prune()
        assert "added units back" not in caplog.text
        rounded = mm.prune(round_to=16)  # FFNs of 48 neurons: 16, 32 or 48 kept
    removed = [
        p.config.keepwhat["report"]["total"]["macs_removed_fraction"] for p in (exact, rounded)
    ]
    assert removed[0] >= 0.5 > removed[1]
    assert "round_to=16 added units back" in caplog.text


def test_fit_the_gap_covers_a_small_shortfall_without_a_costly_unit():
    # The least sure unit is a whole head, worth far more than what is missing: "least_sure"
    # switches it off, "fit_the_gap" covers the shortfall with FFN neurons instead.
    _, mm = _trained_like()
    heads = next(g for g in mm.unit_groups if g.kind == "heads")
    with torch.no_grad():
        for mask in mm.masks.values():
            mask.logits.copy_(torch.linspace(4.0, 5.0, mask.num_units))  # every unit kept
        mm.get_mask(heads.name).logits[0] = 0.1  # the least sure unit of all
    neuron = mm.realised_sparsity()
    ffn = next(g for g in mm.unit_groups if g.kind == "ffn")
    mm.set_kept(ffn.name, mm.kept_units()[ffn.name][1:])
    neuron = mm.realised_sparsity() - neuron  # what one FFN neuron frees
    mm.set_kept(ffn.name, list(range(ffn.num_units)))
    target = mm.realised_sparsity() + 2.5 * neuron  # three neurons' worth, far less than a head
    state = copy.deepcopy(mm.masks.state_dict())

    meet_target(mm, target, selection="least_sure")
    assert 0 not in mm.kept_units()[heads.name].tolist()
    assert mm.target_met["units_switched_off"] == 1 and mm.target_met["selection"] == "least_sure"

    mm.masks.load_state_dict(state)
    realised = meet_target(mm, target, selection="fit_the_gap")
    assert 0 in mm.kept_units()[heads.name].tolist()  # the head stays
    assert target <= realised < target + neuron * 1.01  # no more than one neuron's overshoot
    assert mm.target_met["units_switched_off"] == 3 and mm.target_met["selection"] == "fit_the_gap"
    assert "no costlier than the shortfall" in after_training_notes(mm.prune().config.keepwhat)
    with pytest.raises(ValueError, match="selection='cheapest' must be one of"):
        meet_target(mm, 0.9, selection="cheapest")


def test_unit_kinds_limit_what_is_switched_off():
    _, mm = _trained_like()
    conv = {g.name: mm.kept_units()[g.name].tolist() for g in mm.unit_groups if g.kind == "conv"}
    assert conv
    assert meet_target(mm, unit_kinds=["heads", "ffn"]) >= 0.5
    assert {name: mm.kept_units()[name].tolist() for name in conv} == conv
    assert mm.target_met["unit_kinds"] == ["ffn", "heads"]
    assert "(of the kinds ffn, heads only)" in after_training_notes(mm.prune().config.keepwhat)
    with pytest.raises(ValueError, match=r"unit_kinds=\['neurons'\].*choose from"):
        meet_target(mm, target=0.6, unit_kinds=["neurons"])
