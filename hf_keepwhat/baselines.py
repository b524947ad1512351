"""Masks chosen without training, at a given budget: the structured-pruning baselines (magnitude,
random) the learned masks are compared with, and a quick way to get a pruned model of a given
size for speed measurements (speed does not depend on which units remain)."""

from __future__ import annotations

import math

import torch

SCORES = ("l1", "random")


def unit_scores(mm, group, score: str, generator: torch.Generator) -> torch.Tensor:
    """One score per unit of `group`: the L1 norm of its producer rows, or random.

    Args:
        mm: The `MaskModel`.
        group: A unit group of `mm`.
        score: `"l1"` or `"random"`.
        generator: Random generator for `"random"`.
    """
    if score == "random":
        return torch.rand(group.num_units, generator=generator)
    if score != "l1":
        raise ValueError(f"Unknown score {score!r}; choose from {SCORES}.")
    total = torch.zeros(group.num_units)
    for path in group.producers:
        weight = mm.model.get_submodule(path).weight.detach().float().abs()
        rows = weight.reshape(weight.shape[0], -1).sum(dim=1)
        total += rows.reshape(group.num_units, group.unit_width).sum(dim=1).cpu()
    return total


def set_structured_masks(mm, target: float, score: str = "l1", seed: int = 0) -> float:
    """Keeps, in every group, the same fraction of units (the best by `score`), with the fraction
    chosen by bisection so that `target` of the budget is removed; returns the realised fraction.

    Args:
        mm: The `MaskModel` (its masks are overwritten).
        target: Fraction of the budget (`mm.mask_config.budget`) to remove.
        score: `"l1"` (magnitude structured pruning) or `"random"`.
        seed: Seed of the random scores.
    """
    generator = torch.Generator().manual_seed(seed)
    order = {
        g.name: torch.argsort(unit_scores(mm, g, score, generator), descending=True)
        for g in mm.unit_groups
    }

    def apply(keep_fraction: float) -> float:
        for group in mm.unit_groups:
            count = min(
                group.num_units, max(group.min_kept, math.ceil(keep_fraction * group.num_units))
            )
            mm.set_kept(group.name, order[group.name][:count].tolist())
        return mm.realised_sparsity()

    low, high = 0.0, 1.0  # keep fractions: removing more as the fraction falls
    for _ in range(30):
        middle = (low + high) / 2
        if apply(middle) > target:
            low = middle
        else:
            high = middle
    return apply(high)
