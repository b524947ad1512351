"""`UnitGroup`: the single description of a set of units that live and die together, and
`KeptUnits`: which units of each group a mask (or a choice) keeps.

Masking (where the mask multiplies), cost accounting, the sparsity budget and physical pruning
all read the same `UnitGroup` (through `slicing.owned_slices` for its tensors), so they cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class UnitGroup:
    """A set of prunable units of one kind in one place, e.g. "the 6 heads of encoder layer 3".

    All module names are paths relative to the wrapped transformers model
    (as in `model.get_submodule(path)`).

    Args:
        name: Unique, human-readable name, e.g. `"encoder.layers.3.heads"`.
        kind: `"heads"`, `"ffn"` or `"conv"`.
        num_units: Number of units in the group.
        unit_width: Channels one unit spans on the masked dimension (head_dim for heads, 1 for
            neurons and channels).
        mask_module: The consumer module whose input is multiplied by the mask (forward pre-hook).
        mask_dim: Dimension of that input that carries the units (`-1` for `nn.Linear`,
            `1` for `nn.Conv1d`).
        producers: Modules whose output rows (weight dim 0, bias entries) belong to the units.
        norms: Per-channel normalisation modules after the producers (GroupNorm with one group per
            channel, BatchNorm); their per-channel parameters belong to the units.
        consumers: Modules whose input columns (weight dim 1) belong to the units.
        glu_producers: Producers followed by a GLU over channels: unit `u` owns output rows `u`
            and `u + num_units` (the two halves the GLU multiplies).
        depthwise: Depthwise convolutions (one group per channel) between producer and
            consumer: their channel `u` belongs to unit `u`.
        per_unit_tensors: Parameters or buffers (`"module.path.name"`) with one slice per unit,
            mapped to the dimension that holds the units: a conformer's per-head `pos_bias_u`
            (0), a Swin block's relative-position bias table (-1, a column per head).
        attributes: `{"module.path": {"attr": value_per_unit}}`, module attributes that count
            kept units (e.g. WhisperAttention's `num_heads`) and must be rewritten on pruning.
        empty_module: Module replaced by one returning `mask_module`'s bias when no unit is kept
            (an attention block with zero heads); `None` keeps zero-width layers instead.
        min_kept: Units pruning keeps physically even when the mask removes them all (torch has
            no zero-channel convolution); they are silenced by zeroing their consumer columns,
            so the output is still the masked model's.
        frames: Output frames of each producer and consumer for the reference input (MACs of a
            layer = frames * weight elements).
        extra_macs_per_unit: MACs a unit costs outside its producers and consumers (a head's
            attention scores and weighted sum).
    """

    name: str
    kind: str
    num_units: int
    unit_width: int
    mask_module: str
    mask_dim: int
    producers: list[str]
    consumers: list[str]
    norms: list[str] = field(default_factory=list)
    glu_producers: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    per_unit_tensors: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, dict[str, int]] = field(default_factory=dict)
    empty_module: str | None = None
    min_kept: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    extra_macs_per_unit: int = 0

    def describe(self) -> dict:
        """Returns the group's public summary: name, kind, units and unit width."""
        return {
            "name": self.name,
            "kind": self.kind,
            "num_units": self.num_units,
            "unit_width": self.unit_width,
        }

    def channel_index(self, kept_units: torch.Tensor) -> torch.Tensor:
        """Expands unit indices to the channel indices they span on the masked dimension.

        Args:
            kept_units: 1-D tensor of unit indices.
        """
        offsets = torch.arange(self.unit_width, device=kept_units.device)
        return (kept_units[:, None] * self.unit_width + offsets[None, :]).reshape(-1)


class KeptUnits(Mapping):
    """Which units of each group are kept: group name -> sorted 1-D index tensor (on the CPU).

    Args:
        indices: Kept unit indices per group name.
    """

    def __init__(self, indices: Mapping[str, torch.Tensor]):
        self._indices = {
            name: torch.sort(torch.as_tensor(index, dtype=torch.long).cpu().flatten()).values
            for name, index in indices.items()
        }

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._indices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def as_bools(self, groups: Sequence[UnitGroup]) -> list[torch.Tensor]:
        """One boolean keep-mask per group, in the order of `groups`."""
        out = []
        for group in groups:
            keep = torch.zeros(group.num_units, dtype=torch.bool)
            keep[self[group.name]] = True
            out.append(keep)
        return out

    def is_empty(self, name: str) -> bool:
        """Whether group `name` keeps no unit."""
        return len(self[name]) == 0


@dataclass
class EmptiableLayer:
    """A pre-LN layer that becomes `x + bias` (a `PassThroughLayer`) once every unit of its
    groups is removed: its layer norms then feed nothing, and what it adds to the residual
    stream is the sum of its groups' consumer biases.

    Args:
        layer: Path of the layer.
        groups: Names of the unit groups holding every head and neuron of the layer.
        consumers: The groups' consumers (attention output and FFN output projections), whose
            biases the emptied layer still adds.
    """

    layer: str
    groups: list[str]
    consumers: list[str]

    def is_empty(self, kept: KeptUnits) -> bool:
        """Whether `kept` removes every unit of this layer."""
        return all(kept.is_empty(name) for name in self.groups)


def find_emptiable_layers(
    layers: list[str], all_groups: list[UnitGroup], masked: list[UnitGroup]
) -> list[EmptiableLayer]:
    """The layers of `layers` whose every unit group is masked, as `EmptiableLayer`s.

    Args:
        layers: Paths of the layers that can become pass-throughs (`Layout.pass_through_layers`).
        all_groups: Every unit group of the model (of all kinds).
        masked: The unit groups being masked; a layer with an unmasked group can never be empty.
    """
    masked_names = {g.name for g in masked}
    found = []
    for layer in layers:
        inside = [g for g in all_groups if g.mask_module.startswith(layer + ".")]
        if inside and all(g.name in masked_names and g.min_kept == 0 for g in inside):
            consumers = [path for g in inside for path in g.consumers]
            found.append(EmptiableLayer(layer, [g.name for g in inside], consumers))
    return found
