"""The paper's straight-through mask, and the same with a gate over its whole group."""

import pytest
import torch

from hf_keepwhat import GatedStraightThroughMask, StraightThroughMask


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
