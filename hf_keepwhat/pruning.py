"""Physical removal of masked units, driven only by `UnitGroup`s.

Producers lose output rows (and bias entries), per-channel norms lose their channel parameters,
consumers lose input columns; an attention block with no head left becomes `EmptyAttention`,
and a pre-LN layer with no unit left a `PassThroughLayer`. With the mask placed at the
consumer's input, this computes exactly what the masked model did.
"""

from __future__ import annotations

import torch
from torch import nn

from .modeling_pruned import EmptyAttention, pass_through_class
from .units import PassThrough, UnitGroup


def _select(param: torch.Tensor | None, dim: int, index: torch.Tensor) -> nn.Parameter | None:
    if param is None:
        return None
    kept = param.detach().index_select(dim, index.to(param.device)).clone()
    return nn.Parameter(kept, requires_grad=param.requires_grad)


def _shrink_producer(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _select(module.weight, 0, index)
    if getattr(module, "bias", None) is not None:
        module.bias = _select(module.bias, 0, index)
    if isinstance(module, nn.Linear):
        module.out_features = len(index)
    else:
        module.out_channels = len(index)


def _shrink_norm(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _select(module.weight, 0, index)
    module.bias = _select(module.bias, 0, index)
    if isinstance(module, nn.GroupNorm):
        module.num_groups = module.num_channels = len(index)
    else:  # BatchNorm: running statistics are buffers, one entry per channel
        module.running_mean = module.running_mean[index.to(module.running_mean.device)].clone()
        module.running_var = module.running_var[index.to(module.running_var.device)].clone()
        module.num_features = len(index)


def _shrink_depthwise(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _select(module.weight, 0, index)
    if module.bias is not None:
        module.bias = _select(module.bias, 0, index)
    module.in_channels = module.out_channels = module.groups = len(index)


def _shrink_consumer(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _select(module.weight, 1, index)
    if isinstance(module, nn.Linear):
        module.in_features = len(index)
    else:
        module.in_channels = len(index)


def prune_group(model: nn.Module, group: UnitGroup, kept_units: torch.Tensor) -> None:
    """Deletes every unit of `group` not in `kept_units` from `model`, in place.

    Args:
        model: The model the group's paths are relative to (without mask hooks).
        group: The unit group.
        kept_units: Sorted 1-D tensor of the unit indices to keep.
    """
    if len(kept_units) == 0 and group.empty_module is not None:
        consumer = model.get_submodule(group.mask_module)
        replacement = EmptyAttention(consumer.weight.shape[0], bias=consumer.bias is not None)
        if consumer.bias is not None:
            replacement.bias.data.copy_(consumer.bias.detach())
        parent, _, child = group.empty_module.rpartition(".")
        setattr(model.get_submodule(parent), child, replacement)
        return
    silenced = torch.arange(max(0, group.min_kept - len(kept_units)))
    kept_units = torch.cat([silenced, kept_units.to(torch.long)]) if len(silenced) else kept_units
    index = group.channel_index(kept_units.to(torch.long))
    for path in group.producers:
        _shrink_producer(model.get_submodule(path), index)
    for path in group.glu_producers:  # both GLU halves of every kept unit
        _shrink_producer(model.get_submodule(path), torch.cat([index, index + group.num_units]))
    for path in group.depthwise:
        _shrink_depthwise(model.get_submodule(path), index)
    for path, dim in group.per_unit_tensors.items():
        module_path, _, name = path.rpartition(".")
        module = model.get_submodule(module_path)
        if name in module._buffers:
            buffer = module._buffers[name]
            units = kept_units.to(device=buffer.device, dtype=torch.long)
            module._buffers[name] = buffer.index_select(dim, units).clone()
        else:
            setattr(module, name, _select(getattr(module, name), dim, kept_units.to(torch.long)))
    for path in group.norms:
        _shrink_norm(model.get_submodule(path), index)
    for path in group.consumers:
        consumer = model.get_submodule(path)
        _shrink_consumer(consumer, index)
        if len(silenced):  # kept only because a layer cannot be empty: contributes nothing
            consumer.weight.data[:, group.channel_index(torch.arange(len(silenced)))] = 0
    for path, attributes in group.attributes.items():
        module = model.get_submodule(path)
        for attr, per_unit in attributes.items():
            setattr(module, attr, per_unit * len(kept_units))


def replace_with_pass_through(model: nn.Module, source: nn.Module, layer: PassThrough) -> None:
    """Replaces an emptied layer of `model` by a `PassThroughLayer` adding its output biases.

    Args:
        model: The model being pruned, every unit of the layer's groups already removed.
        source: The unpruned model (same paths), whose consumer biases the layer added.
        layer: The layer.
    """
    consumers = [source.get_submodule(path) for path in layer.consumers]
    biases = [c.bias.detach() for c in consumers if c.bias is not None]
    stock = model.get_submodule(layer.layer)
    replacement = pass_through_class(type(stock))(consumers[0].weight.shape[0], bool(biases))
    if biases:
        replacement.bias = nn.Parameter(torch.stack(biases).sum(0))
    parent, _, child = layer.layer.rpartition(".")
    setattr(model.get_submodule(parent), child, replacement)
