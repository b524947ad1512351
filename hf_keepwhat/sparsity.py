"""Sparsity budgets: what units cost, the penalty that pulls towards the target, and reports.

The paper's penalty counts units (`budget="units"`): every mask site weighs the same, so 16 heads
weigh as much as 4096 neurons. `"params"` and `"macs"` weigh units by what deleting them saves,
so the target is a fraction of the backbone's parameters or MACs, the numbers a user cares about.

Costs are not additive per unit: a convolution between two masked conv layers loses rows with
the units of one group and columns with the other, so what remains of it is
`numel * kept_fraction(a) * kept_fraction(b)`. The cost model therefore keeps one term per
tensor, with the groups whose kept fractions multiply it; the same formula gives the
differentiable penalty (keep probabilities) and the exact realised count (hard masks).
A pre-LN layer whose units are all removed becomes a pass-through: its layer norms and output
biases go too, a term counted unless every group of the layer is empty.
`budget="latency"` prices the same kept fractions with a measured `latency.LatencyTable`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from .latency import LatencyTable, feature_names
from .masks import mask_key
from .slicing import owned_slices
from .units import EmptiableLayer, KeptUnits, UnitGroup


@dataclass
class CostTerm:
    """One tensor's (or one computation's) cost, scaled by the kept fractions of its groups.

    Args:
        params: Parameters at full width.
        macs: MACs at full width for the reference input.
        groups: Indices of the groups whose kept fractions multiply this term (one per masked
            dimension, so a group can appear twice).
        owner: Index of the group this term is reported under (its producer, else its consumer).
        unless_empty: Indices of groups that, when all of them keep no unit, remove this term
            (what a layer loses when it becomes a pass-through).
    """

    params: int
    macs: int
    groups: tuple[int, ...]
    owner: int
    unless_empty: tuple[int, ...] = ()


def build_cost_terms(
    model: nn.Module, groups: Sequence[UnitGroup], emptiable: Sequence[EmptiableLayer] = ()
) -> list[CostTerm]:
    """One `CostTerm` per parameter tensor the groups slice (`slicing.owned_slices`), each
    group's extra MACs, and per layer that can become a pass-through, what that saves.

    Args:
        model: The model the groups' paths are relative to.
        groups: The unit groups.
        emptiable: The layers that become `PassThroughLayer`s when all their units go.
    """
    owners: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for index, group in enumerate(groups):
        for owned in owned_slices(group):
            owners[(owned.module, owned.tensor)][int(owned.consumer)] = index
    frames = {path: n for group in groups for path, n in group.frames.items()}

    terms = []
    for (path, name), by_side in owners.items():
        tensor = getattr(model.get_submodule(path), name, None)
        if not isinstance(tensor, nn.Parameter):
            continue  # no bias, or a buffer (running statistics, an index)
        # A Linear or Conv1d weight costs one MAC per element per output frame.
        macs = frames.get(path, 0) * tensor.numel() if name == "weight" and tensor.dim() > 1 else 0
        owner = by_side.get(0, by_side.get(1))
        sides = tuple(by_side[side] for side in sorted(by_side))
        terms.append(CostTerm(tensor.numel(), macs, sides, owner))
    for index, group in enumerate(groups):
        if group.extra_macs_per_unit:
            terms.append(CostTerm(0, group.extra_macs_per_unit * group.num_units, (index,), index))
    index_of = {group.name: index for index, group in enumerate(groups)}
    for layer in emptiable:
        # The layer's parameters no group slices (layer norms, output biases, a WavLM gate's
        # projection), less the one bias the pass-through keeps. No MACs: an emptied layer's
        # matmuls are zero-width and FlopCounterMode counts no norm or addition.
        layer_params = model.get_submodule(layer.layer).named_parameters(prefix=layer.layer)
        freed = sum(p.numel() for n, p in layer_params if tuple(n.rsplit(".", 1)) not in owners)
        biases = [model.get_submodule(c).bias for c in layer.consumers]
        own_bias = next((b.numel() for b in biases if b is not None), 0)
        members = tuple(index_of[g] for g in layer.groups)
        terms.append(CostTerm(freed - own_bias, 0, (), members[0], unless_empty=members))
    return terms


def _term_kept(term: CostTerm, fractions: Sequence[torch.Tensor], key: str) -> torch.Tensor:
    kept = getattr(term, key) * math.prod((fractions[g] for g in term.groups), start=1)
    if term.unless_empty:
        # 0 when every listed group is empty; no branch, so tensors need no host sync.
        kept = kept * (1 - math.prod((fractions[g] == 0 for g in term.unless_empty), start=1))
    return kept


class CostModel:
    """Exact parameter and MAC accounting of a masked backbone, and its predicted latency when a
    `LatencyTable` is given.

    Args:
        model: The model the groups' paths are relative to.
        groups: The masked unit groups.
        totals: `{"params", "macs"}` of the original backbone (before layers were dropped).
        after_drop: `{"params", "macs"}` after dropping layers, before masking.
        emptiable: Layers that become `PassThroughLayer`s when all their units are removed.
        latency: A latency model of this backbone (`totals["macs"]` must be the MACs it was
            profiled at); adds the `"latency"` key, in milliseconds.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[UnitGroup],
        totals: dict,
        after_drop: dict,
        emptiable: Sequence[EmptiableLayer] = (),
        latency: LatencyTable | None = None,
    ):
        self.groups = list(groups)
        self.terms = build_cost_terms(model, groups, emptiable)
        self.totals = dict(totals)
        self.after_drop = dict(after_drop)
        index_of = {group.name: index for index, group in enumerate(self.groups)}
        self.emptiable_members = [tuple(index_of[g] for g in e.groups) for e in emptiable]
        self.latency = latency
        if latency is not None:
            # Fractions of the dense model's predicted time: a dropped layer counts as emptied.
            self.totals["latency"] = latency.dense_predicted_ms
            self.after_drop["latency"] = float(self.remaining([1.0] * len(self.groups), "latency"))
        # Everything no mask can touch: embeddings, layer norms, output biases, ...
        self.unmasked = {
            key: after_drop[key] - sum(getattr(t, key) for t in self.terms)
            for key in ("params", "macs")
        }
        #: What deleting one unit of each group from the full model saves, by group name.
        self.per_unit = {
            group.name: {key: self._marginal(index, key) for key in ("params", "macs")}
            for index, group in enumerate(self.groups)
        }

    def _marginal(self, index: int, key: str) -> int:
        """What removing one unit of group `index` from the full model saves."""
        group = self.groups[index]
        return (
            sum(getattr(t, key) * t.groups.count(index) for t in self.terms if index in t.groups)
            // group.num_units
        )

    def remaining(self, fractions: Sequence[torch.Tensor], key: str) -> torch.Tensor:
        """Backbone parameters (`key="params"`), MACs, or predicted milliseconds
        (`"latency"`) left, given each group's kept fraction.

        Args:
            fractions: Kept fraction of each group, in group order (tensors or floats).
            key: `"params"`, `"macs"` or `"latency"` (with a latency table).
        """
        if key == "latency":
            return self.latency.predict(self.latency_features(fractions))
        return self.unmasked[key] + sum(_term_kept(t, fractions, key) for t in self.terms)

    def latency_features(self, fractions: Sequence[torch.Tensor]) -> dict:
        """The `LatencyTable` features at these kept fractions: MMACs kept per unit kind
        (differentiable), and the groups and layers not empty (counts: removing a whole block
        or layer is a step, with no gradient, as the pass-through term of the params budget).

        Args:
            fractions: Kept fraction of each group, in group order (tensors or floats).
        """
        kinds = sorted({g.kind for g in self.groups})
        features = dict.fromkeys(feature_names(kinds), 0.0)
        for term in self.terms:
            kind = self.groups[term.owner].kind
            features[f"mmacs_{kind}"] += _term_kept(term, fractions, "macs") / 1e6
        for group, fraction in zip(self.groups, fractions, strict=True):
            features[f"groups_{group.kind}"] += fraction > 0
        for members in self.emptiable_members:
            features["layers"] += 1 - math.prod((fractions[g] == 0 for g in members), start=1)
        return features

    def report(self, kept: Sequence[torch.Tensor]) -> dict:
        """Realised kept/removed units, parameters and MACs, per group and in total.

        A tensor sliced by two groups (a conv between two masked conv layers) is reported under
        the group that produces it, so the per-group figures add up to the total.

        Args:
            kept: One boolean tensor per group: which units the hard mask keeps.
        """
        # Exact rational arithmetic: MAC counts exceed float32's integer range. Pruning keeps at
        # least `min_kept` units of a group physically, so that is what remains.
        fractions = [
            Fraction(max(int(k.sum()), g.min_kept), k.numel())
            for g, k in zip(self.groups, kept, strict=True)
        ]
        full = [1] * len(self.groups)
        rows = []
        for index, (group, keep) in enumerate(zip(self.groups, kept, strict=True)):
            row = {
                **group.describe(),
                "params_per_unit": self.per_unit[group.name]["params"],
                "macs_per_unit": self.per_unit[group.name]["macs"],
                "kept_units": int(keep.sum()),
            }
            row["removed_units"] = group.num_units - row["kept_units"]
            for key in ("params", "macs"):
                owned = [t for t in self.terms if t.owner == index]
                before = sum(_term_kept(t, full, key) for t in owned)
                after = round(sum(_term_kept(t, fractions, key) for t in owned))
                row[f"kept_{key}"] = after
                row[f"removed_{key}"] = int(before) - after
            rows.append(row)
        total = {}
        for key in ("params", "macs"):
            remaining = round(self.remaining(fractions, key))
            total[f"{key}_original"] = int(self.totals[key])
            total[f"{key}_remaining"] = remaining
            total[f"{key}_removed_fraction"] = 1.0 - remaining / self.totals[key]
        if self.latency is not None:
            remaining = float(self.remaining([float(f) for f in fractions], "latency"))
            total["latency_ms_original"] = self.totals["latency"]
            total["latency_ms_remaining"] = remaining
            total["latency_removed_fraction"] = 1.0 - remaining / self.totals["latency"]
            total["latency_runtime"] = self.latency.describe()
        total["units_kept"] = sum(r["kept_units"] for r in rows)
        total["units_total"] = sum(r["num_units"] for r in rows)
        # The paper's measure: mean over mask sites of the fraction of units removed.
        masked = [float(k.float().mean()) for k in kept]
        total["units_removed_fraction"] = 1.0 - sum(masked) / len(masked)
        return {"groups": rows, "total": total}


class Budget:
    """The quantity the sparsity target is a fraction of, and the penalty towards it.

    Args:
        kind: `"units"` (the paper), `"params"`, `"macs"` or `"latency"`.
        costs: The `CostModel` of the masked backbone.
    """

    def __init__(self, kind: str, costs: CostModel):
        self.kind = kind
        self.costs = costs

    def kept_fraction(self, keep: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fraction of the budget kept, given each group's per-unit keep values.

        Args:
            keep: One tensor per group: keep probabilities for the penalty, 0/1 for realised.
        """
        fractions = [k.mean() for k in keep]
        if self.kind == "units":
            # The paper: mean over mask sites of the mean keep probability.
            return sum(fractions) / len(fractions)
        return self.costs.remaining(fractions, self.kind) / self.costs.totals[self.kind]

    def realised_kept_fraction(self, kept: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fraction of the budget the hard masks keep once pruned: like `kept_fraction`, but a
        group counts at least its `min_kept` units, which pruning keeps physically (as
        `CostModel.report` counts them). No host sync: it runs on every forward.

        Args:
            kept: One boolean tensor per group: which units the hard mask keeps.
        """
        if self.kind == "units":  # the paper's measure counts the masks themselves
            return self.kept_fraction([k.float() for k in kept])
        fractions = [
            k.float().sum().clamp(min=g.min_kept) / k.numel()
            for g, k in zip(self.costs.groups, kept, strict=True)
        ]
        return self.costs.remaining(fractions, self.kind) / self.costs.totals[self.kind]

    def _removed_with_every_unit(self, kept: bool) -> float:
        every_unit = [torch.full((g.num_units,), kept) for g in self.costs.groups]
        return 1.0 - float(self.realised_kept_fraction(every_unit))

    def max_removed_fraction(self) -> float:
        """The largest fraction of the budget that pruning every masked unit can reach (the
        units a group must keep, `min_kept`, still cost), so that `meet_target` can reach every
        target this allows."""
        return self._removed_with_every_unit(kept=False)

    def min_removed_fraction(self) -> float:
        """The fraction of the budget removed with every masked unit kept: what dropping the
        layers above `last_layer` removed (0 without it, and for the units budget, which counts
        masks only), where `SparsityCallback`'s warm-up starts."""
        return self._removed_with_every_unit(kept=True)

    def penalty(
        self,
        keep: Sequence[torch.Tensor],
        target: float,
        weight: float,
        multipliers: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The paper's `weight * d**2`, or the Lagrangian `l1 * d + l2 * d**2` when
        `multipliers` are given, with `d = kept_fraction - (1 - target)`.

        Args:
            keep: One keep-value tensor per group (probabilities, or straight-through masks).
            target: Fraction of the budget to remove.
            weight: The penalty weight (`lambda`) of the quadratic penalty.
            multipliers: `(l1, l2)`, trained by gradient ascent, for the Lagrangian.
        """
        gap = self.kept_fraction(keep) - (1.0 - target)
        if multipliers is None:
            return weight * gap**2
        return multipliers[0] * gap + multipliers[1] * gap**2


def sparsity_report(mm, kept: KeptUnits | None = None) -> dict:
    """Realised kept/removed units, parameters and MACs of a `MaskModel`, per group and in total.

    `total` holds the original backbone's parameters and MACs, what pruning would leave
    (`*_remaining`), the removed fractions and the layers that would be passed through. MACs are
    for the layout's reference input (`macs_input`).

    Args:
        mm: The `MaskModel`.
        kept: Kept units to report on; default: what its masks keep now.
    """
    kept = kept if kept is not None else mm.kept_units()
    report = mm.costs.report(kept.as_bools(mm.unit_groups))
    total = report["total"]
    total["layers_passed_through"] = [e.layer for e in mm.emptiable_layers if e.is_empty(kept)]
    total["budget"] = mm.mask_config.budget
    total["target_sparsity"] = mm.mask_config.target_sparsity
    report["macs_input"] = mm.layout.describe_reference_input()
    return report


class PenaltyMixin:
    """The budget side of a `MaskModel`: its differentiable penalty and the fraction its hard
    masks remove, both counted by its `Budget`."""

    def _masks_in_order(self) -> list:
        return [self.masks[mask_key(g.name)] for g in self.unit_groups]

    def sparsity_penalty(self) -> torch.Tensor:
        """The differentiable sparsity penalty at the current target (`current_target`)."""
        masks, counted = self._masks_in_order(), self.mask_config.resolved_penalty_on()
        if counted == "mask":
            keep = [m() for m in masks]
        elif counted == "kept":
            keep = [m.kept_with_gradient() for m in masks]
        else:
            keep = [m.keep_probability() for m in masks]
        weight = self.mask_config.penalty_weight
        return self.budget.penalty(keep, self.current_target, weight, self.lagrange_multipliers())

    def realised_sparsity(self) -> float:
        """Fraction of the budget (units, params or MACs) the hard masks remove now, counted as
        pruning will (what the sparsity report says)."""
        with torch.no_grad():
            kept = [m.kept() for m in self._masks_in_order()]
            return float(1.0 - self.budget.realised_kept_fraction(kept))
