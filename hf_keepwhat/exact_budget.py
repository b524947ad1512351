"""Meeting the sparsity target exactly once the masks have trained.

The hard-mask penalty is zero only on the target, but the task loss pulls the other way, so
training can settle a little short of it (on GM instruments, 46-51% removed for a 50% target).
A user who can afford N MACs needs at most N. `meet_target` switches off the kept units the
masks were least sure of (lowest keep probability, the ranking `round_to` also uses), or first
those of them that fit the shortfall, until the target is met. No library ranks our masks,
hence this small search by hand.
"""

from __future__ import annotations

import copy

import torch


def _kept_by_confidence(mm, unit_kinds=None) -> list[tuple[float, str, int]]:
    """Every kept unit (of `unit_kinds`, default all) as (keep probability, group name, index),
    least sure first."""
    candidates = []
    for group in mm.unit_groups:
        if unit_kinds is not None and group.kind not in unit_kinds:
            continue
        mask = mm.get_mask(group.name)
        kept = mask.kept_indices()
        probability = mask.keep_probability().detach()[kept]
        candidates += [
            (float(p), group.name, int(u)) for p, u in zip(probability, kept, strict=True)
        ]
    return sorted(candidates)


def _unit_costs(mm) -> dict[str, float]:
    """Fraction of the budget that switching off one more kept unit of each group frees, at the
    current masks (the cost model is not linear, so `meet_target` checks the exact figure)."""
    kept = [mm.get_mask(g.name).kept() for g in mm.unit_groups]
    now = float(mm.budget.realised_kept_fraction(kept))
    costs = {}
    for i, group in enumerate(mm.unit_groups):
        if kept[i].any():
            fewer = kept[i].clone()
            fewer[int(fewer.nonzero()[0])] = False
            costs[group.name] = now - float(
                mm.budget.realised_kept_fraction([*kept[:i], fewer, *kept[i + 1 :]])
            )
    return costs


def _fitting_the_gap_first(mm, candidates, gap: float) -> list[tuple[float, str, int]]:
    """`candidates` reordered: first, least sure first, the units no costlier than what is still
    missing; then the others, cheapest first (the least sure of equal cost first), so that what
    the first cannot cover is closed by the cheapest unit that can."""
    costs, fitting = _unit_costs(mm), []
    for candidate in candidates:
        if gap <= 0:
            break
        if costs[candidate[1]] <= gap:
            fitting.append(candidate)
            gap -= costs[candidate[1]]
    chosen = set(fitting)
    rest = [c for c in candidates if c not in chosen]
    return fitting + sorted(rest, key=lambda c: (costs[c[1]], c[0]))


#: How `meet_target` picks the units to switch off.
SELECTIONS = ("least_sure", "fit_the_gap")


@torch.no_grad()
def _check_meet_arguments(mm, target: float, selection: str, unit_kinds) -> None:
    if not 0.0 <= target < 1.0:
        raise ValueError(f"target={target} must be a fraction to remove, in [0, 1).")
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} must be one of {SELECTIONS}.")
    kinds = {g.kind for g in mm.unit_groups}
    if unit_kinds is not None and not set(unit_kinds) <= kinds:
        raise ValueError(
            f"unit_kinds={list(unit_kinds)} names kinds this model's masks do not have; "
            f"choose from {sorted(kinds)}."
        )


def _switcher(mm, candidates: list):
    """`switch_off(count)`: the trained masks with the first `count` candidates switched off
    (0: the trained masks as they were); returns the realised fraction."""
    trained = copy.deepcopy(mm.masks.state_dict())

    def switch_off(count: int) -> float:
        mm.masks.load_state_dict(trained)
        off: dict[str, set[int]] = {}
        for _, name, unit in candidates[:count]:
            off.setdefault(name, set()).add(unit)
        for name, units in off.items():
            mm.get_mask(name).switch_off(sorted(units))
        return mm.realised_sparsity()

    return switch_off


def meet_target(
    mm, target: float | None = None, selection: str = "least_sure", unit_kinds=None
) -> float:
    """Switches off kept units of a trained `MaskModel` until its hard masks remove at least
    `target` of the budget; returns the realised fraction.

    Does nothing when the target is already met. Otherwise it switches off the fewest units, in
    the order `selection` gives (the other logits are left as they are), and `mm.target_met`
    records it; `mm.prune()` then writes it to the pruning record and the model card. The head
    was trained with those units on: call `refit_head` afterwards to fit it to the final units.
    `prune(round_to=...)` adds units back to round widths, so it can miss the target again (it
    warns when it does).

    Args:
        mm: A trained `MaskModel`.
        target: Fraction of `mm.mask_config.budget` to remove, in [0, 1); default the config's
            `target_sparsity`.
        selection: `"least_sure"`: in order of keep probability, whatever their cost.
            `"fit_the_gap"`: first the least sure units no costlier than what is still missing,
            then the cheapest unit that closes the rest, so that a small shortfall is not
            covered by a costly unit (a whole attention head for a gap of a few FFN neurons).
            Neither is safe: on GM instruments each lost 7-10 points at a budget where the
            other lost about none (README, "Exact budget"); refit the head and check.
        unit_kinds: Only units of these kinds (`"heads"`, `"ffn"`, `"conv"`) are switched off;
            default every kind. A convolution-stem channel feeds every layer, so switching
            one off moves every layer's input: on GM instruments, `fit_the_gap` at 50% lost
            9.7 points with 19 conv channels among its units and 0.6 with heads and FFN only.
    """
    target = mm.mask_config.target_sparsity if target is None else float(target)
    _check_meet_arguments(mm, target, selection, unit_kinds)
    before = mm.realised_sparsity()
    if before >= target:
        return before
    candidates = _kept_by_confidence(mm, unit_kinds)
    if selection == "fit_the_gap":
        candidates = _fitting_the_gap_first(mm, candidates, target - before)
    switch_off = _switcher(mm, candidates)
    if switch_off(len(candidates)) < target:
        switch_off(0)
        raise ValueError(
            f"Even with every unit{'' if unit_kinds is None else f' of {list(unit_kinds)}'} off, "
            f"the masks remove less than target={target} of the {mm.mask_config.budget} budget "
            "(what no mask covers still costs); choose a lower target or more unit_kinds."
        )
    short, enough = 0, len(candidates)  # switching off `enough` units meets the target
    while enough - short > 1:
        middle = (short + enough) // 2
        if switch_off(middle) >= target:
            enough = middle
        else:
            short = middle
    realised = switch_off(enough)
    mm.target_met = {
        "target": target,
        "realised_before": before,
        "realised": realised,
        "units_switched_off": enough,
        "selection": selection,
        **({} if unit_kinds is None else {"unit_kinds": sorted(unit_kinds)}),
    }
    return realised
