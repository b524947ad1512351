"""The paper's straight-through mask, the same with a gate over its whole group, and the
hard-concrete (L0) mask."""

import pytest
import torch

from hf_keepwhat import GatedStraightThroughMask, HardConcreteMask, StraightThroughMask


def test_init_keeps_every_unit_and_forward_is_hard():
    mask = StraightThroughMask(5, init=1.0)
    assert torch.equal(mask(), torch.ones(5))
    assert torch.allclose(mask.keep_probability(), torch.sigmoid(torch.tensor(1.0)).expand(5))


def test_gradient_passes_straight_through_also_to_units_that_are_off():
    mask = StraightThroughMask(3)
    mask.set_kept([0, 2])
    weights = torch.tensor([1.0, 2.0, 3.0])
    (mask() * weights).sum().backward()
    assert torch.equal(mask.logits.grad, weights)


def test_set_kept_and_indices():
    mask = StraightThroughMask(6)
    mask.set_kept([4, 1])
    assert mask.kept_indices().tolist() == [1, 4]
    mask.set_kept([])
    assert mask.kept_indices().tolist() == []


def test_set_kept_out_of_range():
    mask = StraightThroughMask(4)
    with pytest.raises(IndexError, match=r"\[0, 4\).*max 4"):
        mask.set_kept([0, 4])
    with pytest.raises(IndexError, match="min -1"):
        mask.set_kept([-1])


# ---- CoFi's coarse gate over a whole group ------------------------------------------------


def test_gate_multiplies_every_unit_and_both_learn_straight_through():
    mask = GatedStraightThroughMask(3)
    mask.set_kept([0, 2])
    weights = torch.tensor([1.0, 2.0, 3.0])
    (mask() * weights).sum().backward()
    assert torch.equal(mask.logits.grad, weights)  # the gate is on: units as without it
    assert torch.equal(mask.gate.grad, torch.tensor([4.0]))  # what the kept units carry
    with torch.no_grad():
        mask.gate.fill_(-1.0)
    assert torch.equal(mask(), torch.zeros(3))
    assert mask.kept_indices().tolist() == []
    mask.logits.grad = None
    (mask() * weights).sum().backward()
    assert torch.equal(mask.logits.grad, torch.zeros(3))  # frozen while their gate is off
    expected = torch.sigmoid(mask.logits) * torch.sigmoid(torch.tensor(-1.0))
    assert torch.allclose(mask.keep_probability(), expected)


def test_gate_follows_set_kept():
    mask = GatedStraightThroughMask(4)
    mask.set_kept([])
    assert mask.gate.item() < 0 and mask.kept_indices().tolist() == []
    mask.set_kept(torch.tensor([3, 1]))
    assert mask.gate.item() > 0 and mask.kept_indices().tolist() == [1, 3]


def test_gate_is_stored_as_theta_whatever_the_rate():
    mask = GatedStraightThroughMask(2, init=1.5)
    mask.set_rate(0.05)
    state = mask.state_dict()
    assert torch.equal(state["gate"], torch.tensor([1.5]))
    assert torch.equal(state["logits"], torch.tensor([1.5, 1.5]))
    restored = GatedStraightThroughMask(2)
    restored.set_rate(0.05)
    restored.load_state_dict(state)
    assert torch.allclose(restored.gate_theta(), torch.tensor([1.5]))


# ---- hard-concrete (L0) masks -------------------------------------------------------------


def test_hard_concrete_samples_while_training_and_is_hard_otherwise():
    mask = HardConcreteMask(4000, init=0.0)
    with torch.no_grad():
        mask.logits[:2000] = 2.0
        mask.logits[2000:] = -2.0
    mask.train()
    torch.manual_seed(0)
    sample = mask()
    assert sample.min() >= 0 and sample.max() <= 1
    assert ((sample > 0) & (sample < 1)).any() and (sample == 0).any() and (sample == 1).any()
    # keep_probability is P(z > 0), the L0 norm: what a sample's non-zeros estimate.
    non_zero = (sample > 0).float()
    expected = mask.keep_probability().detach()
    assert abs(non_zero[:2000].mean() - expected[0]) < 0.03
    assert abs(non_zero[2000:].mean() - expected[-1]) < 0.03
    # Reparameterised: the sample's gradient reaches log_alpha (not straight through).
    sample.sum().backward()
    assert (mask.logits.grad > 0).any() and (mask.logits.grad >= 0).all()

    hard = torch.cat([torch.ones(2000), torch.zeros(2000)])
    assert torch.equal(mask.kept(), hard.bool())  # while training too: kept() never samples
    mask.eval()
    assert torch.equal(mask(), hard)
    mask.train()
    mask.logits.requires_grad_(False)  # frozen masks (a head refit) use the hard mask too
    assert torch.equal(mask(), hard)
    assert torch.equal(mask.kept(), hard.bool())


def test_hard_concrete_expected_mask_is_one_half_at_the_hard_threshold():
    """The penalty on sampled masks pulls on a quantity that crosses 1/2 where the hard mask
    flips (log_alpha = 0), so what it counts and what pruning keeps agree."""
    mask = HardConcreteMask(20000, init=0.0)
    torch.manual_seed(1)
    assert abs(mask().mean().item() - 0.5) < 0.01


def test_hard_concrete_expected_mask_is_soft_away_from_the_threshold():
    """Why the penalty on sampled masks lands off target (docs/artifacts.md, "Exact budget"): a unit
    pruning removes (log_alpha = -2) still counts about 0.14, one it keeps (+2) about 0.86."""
    torch.manual_seed(3)
    for log_alpha, expected in ((-2.0, 0.143), (2.0, 0.857)):
        mask = HardConcreteMask(50000, init=log_alpha)
        assert abs(mask().mean().item() - expected) < 0.01


def test_hard_concrete_units_set_by_hand_stay_decided_while_training():
    mask = HardConcreteMask(1000)
    mask.set_kept(range(500))
    mask.train()
    torch.manual_seed(2)
    sample = mask()
    assert (sample[:500] == 1).float().mean() > 0.99
    assert (sample[500:] == 0).float().mean() > 0.99
    mask.switch_off([0])
    assert mask.kept_indices().tolist() == list(range(1, 500))


def test_kept_with_gradient_counts_what_pruning_keeps_with_the_training_masks_gradient():
    """`penalty_on="kept"`: hard-concrete counts `log_alpha > 0`, not its soft samples, and the
    gradient is the samples'; for the straight-through mask it is the mask itself."""
    mask = HardConcreteMask(6, init=0.0)
    with torch.no_grad():
        mask.logits.copy_(torch.tensor([2.0, 2.0, 2.0, -2.0, -2.0, -2.0]))
    mask.train()
    torch.manual_seed(4)
    counted = mask.kept_with_gradient()
    assert torch.equal(counted, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    counted.sum().backward()
    torch.manual_seed(4)
    expected = torch.autograd.grad(mask().sum(), mask.logits)[0]
    assert torch.equal(mask.logits.grad, expected)

    straight = StraightThroughMask(3)
    straight.set_kept([1])
    assert torch.equal(straight.kept_with_gradient(), straight())
    straight.kept_with_gradient().sum().backward()
    assert torch.equal(straight.logits.grad, torch.ones(3))
