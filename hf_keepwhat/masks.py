"""Mask parametrisations: how learnable parameters turn into a 0/1 mask over a group's units.

The interface is small on purpose so that a hard-concrete / L0 variant can be added next to the
paper's straight-through mask without touching the rest of the package.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskParametrization(nn.Module):
    """Base class of one group's mask.

    Subclasses hold the learnable parameters and implement `forward` (the mask used in the
    network's forward pass), `keep_probability` (the differentiable quantity the sparsity penalty
    reads) and `set_kept`.
    """

    def __init__(self, num_units: int):
        super().__init__()
        self.num_units = num_units

    def forward(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def keep_probability(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def set_kept(self, indices) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def kept(self) -> torch.Tensor:
        """Returns the boolean hard mask: which units are kept at inference."""
        with torch.no_grad():
            return self.forward() > 0.5

    def kept_indices(self) -> torch.Tensor:
        """Returns the sorted indices of the kept units."""
        return torch.nonzero(self.kept(), as_tuple=False).flatten()


class StraightThroughMask(MaskParametrization):
    """The paper's mask: `m = round(sigmoid(theta))` forward, identity gradient backward.

    A unit that is off keeps receiving gradient through the straight-through estimator, so it can
    come back on.

    Args:
        num_units: Number of units in the group.
        init: Initial logit of every unit (1.0 in the paper: every unit starts on).
    """

    def __init__(self, num_units: int, init: float = 1.0):
        super().__init__(num_units)
        self.init = float(init)
        self.logits = nn.Parameter(torch.full((num_units,), self.init))

    def forward(self) -> torch.Tensor:
        hard = torch.round(torch.sigmoid(self.logits))
        return self.logits + (hard - self.logits).detach()

    def keep_probability(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def set_kept(self, indices) -> None:
        """Sets a hard mask: the listed units on, every other unit off.

        Args:
            indices: Iterable of unit indices to keep, each in `[0, num_units)`.
        """
        index = torch.as_tensor(list(indices), dtype=torch.long)
        if index.numel() and (index.min() < 0 or index.max() >= self.num_units):
            raise IndexError(
                f"Unit indices must lie in [0, {self.num_units}); got "
                f"min {int(index.min())}, max {int(index.max())}."
            )
        # +-|init| (at least 1) keeps the logit where a trained mask would be, not at +-inf, so
        # training can continue from a mask set by hand.
        magnitude = max(abs(self.init), 1.0)
        with torch.no_grad():
            self.logits.fill_(-magnitude)
            self.logits[index] = magnitude


MASK_CLASSES = {"straight_through": StraightThroughMask}


def build_mask(mask_type: str, num_units: int, init: float) -> MaskParametrization:
    """Creates the mask of one group.

    Args:
        mask_type: A key of `MASK_CLASSES` (`MaskConfig.mask_type`).
        num_units: Number of units in the group.
        init: Initial logit.
    """
    if mask_type not in MASK_CLASSES:
        raise ValueError(f"Unknown mask_type {mask_type!r}; choose from {sorted(MASK_CLASSES)}.")
    return MASK_CLASSES[mask_type](num_units, init)
