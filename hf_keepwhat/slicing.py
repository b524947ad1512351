"""The slice plan of a `UnitGroup`: which tensor of which module holds its units on which
dimension. It is the only reading of a group's producers, consumers, norms, GLU halves,
depthwise convolutions and per-unit tensors: the cost model counts these slices, pruning applies
them, and the manifest is read back from the modules they changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .runtime import resize_module
from .units import UnitGroup

NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class OwnedSlice:
    """One tensor slice a group's units own.

    Args:
        module: Path of the module holding the tensor.
        tensor: The tensor's attribute name (`weight`, `bias`, `running_mean`, `pos_bias_u`...).
        dim: The dimension that holds the units.
        per: How units map to indices on `dim`: `"channel"` (`unit_width` channels a unit),
            `"glu"` (a GLU producer: the channels of both halves), `"unit"` (one index a unit).
        consumer: Whether the slice is on the reading side (input columns): a tensor sliced by
            two groups is the producer of one and the consumer of the other.
        resizes: Whether slicing it changes the module's recorded shape (`runtime.resize_module`).
    """

    module: str
    tensor: str
    dim: int
    per: str = "channel"
    consumer: bool = False
    resizes: bool = False


def owned_slices(group: UnitGroup) -> list[OwnedSlice]:
    """Every tensor slice the units of `group` own (tensors a module lacks, such as a missing
    bias, are skipped by the readers).

    Args:
        group: The unit group.
    """
    slices = []
    for per, paths in (
        ("channel", group.producers),
        ("glu", group.glu_producers),
        ("channel", group.depthwise),
    ):
        for path in paths:
            slices.append(OwnedSlice(path, "weight", 0, per, resizes=True))
            slices.append(OwnedSlice(path, "bias", 0, per))
    for path in group.norms:  # resized once, whichever of these tensors it has
        slices += [OwnedSlice(path, name, 0) for name in NORM_TENSORS]
    for path, dim in group.per_unit_tensors.items():
        module, _, name = path.rpartition(".")
        slices.append(OwnedSlice(module, name, dim, "unit"))
    for path in group.consumers:
        slices.append(OwnedSlice(path, "weight", 1, consumer=True, resizes=True))
    return slices


def resized_modules(group: UnitGroup) -> list[tuple[str, int, str]]:
    """`(module, dim, per)` of every module whose recorded shape pruning `group` changes."""
    shaped = [(s.module, s.dim, s.per) for s in owned_slices(group) if s.resizes]
    return shaped + [(path, 0, "channel") for path in group.norms]


def slice_indices(group: UnitGroup, kept_units: torch.Tensor) -> dict[str, torch.Tensor]:
    """The indices to keep for each `OwnedSlice.per`, given the kept unit indices."""
    kept_units = kept_units.to(torch.long)
    channels = group.channel_index(kept_units)
    halves = torch.cat([channels, channels + group.num_units * group.unit_width])
    return {"channel": channels, "glu": halves, "unit": kept_units}


def replace_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Sets parameter or buffer `name` of `module` to a new tensor `value` (a parameter keeps
    its `requires_grad`); the old tensor is left as it was.

    Args:
        module: The module.
        name: The parameter or buffer name.
        value: The new tensor.
    """
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = value


def apply_slices(model: nn.Module, group: UnitGroup, kept_units: torch.Tensor) -> None:
    """Keeps only `kept_units` of `group` in every tensor it owns, and updates the shapes and
    attributes the modules record. Units kept only because a module cannot be empty
    (`min_kept`) come first in `kept_units` and are silenced by their caller.

    Args:
        model: The model the group's paths are relative to.
        group: The unit group.
        kept_units: Unit indices to keep.
    """
    indices = slice_indices(group, kept_units)
    for owned in owned_slices(group):
        module = model.get_submodule(owned.module)
        tensor = getattr(module, owned.tensor, None)
        if isinstance(tensor, torch.Tensor):
            index = indices[owned.per].to(tensor.device)
            replace_tensor(module, owned.tensor, tensor.detach().index_select(owned.dim, index))
    for path, dim, per in resized_modules(group):
        resize_module(model.get_submodule(path), dim, len(indices[per]))
    for path, attributes in group.attributes.items():
        module = model.get_submodule(path)
        for name, per_unit in attributes.items():
            setattr(module, name, per_unit * len(kept_units))
