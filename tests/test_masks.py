"""The paper's straight-through mask."""

import pytest
import torch

from hf_keepwhat import StraightThroughMask


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
