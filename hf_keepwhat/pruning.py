"""Physical removal of masked units: a smaller copy of a `MaskModel`'s model that computes what
the masked model computes.

Every group's slice plan (`slicing.apply_slices`) is applied to a copy; an attention block with
no head left becomes `EmptyAttention`, a pre-LN layer with no unit left a `PassThroughLayer`.
The shape manifest that rebuilds the result is then read back from the modules pruning changed
(as timm's `_prune.py` derives shapes from the weights), so it records what was done, not what
was meant.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math

import torch
from torch import nn

from .runtime import EmptyAttention, describe_module, pass_through_class
from .slicing import apply_slices, owned_slices, replace_tensor, resized_modules
from .sparsity import sparsity_report
from .standalone import to_pruned_model
from .units import EmptiableLayer, KeptUnits, UnitGroup
from .version import __version__

logger = logging.getLogger(__name__)


def rounded_kept_units(mm, multiple: int) -> KeptUnits:
    """Kept units per group, raised with the best-ranked removed units (by mask logit) until the
    kept width (units x unit width, e.g. heads x head_dim) is a multiple of `multiple` channels;
    a group with no unit kept stays empty, and a group can at most be whole.

    Args:
        mm: The `MaskModel`.
        multiple: Channels, e.g. 8 or 64, so that pruned widths suit GPU kernels. Heads of 64
            channels already satisfy 8 or 64, so only neurons and conv channels change.
    """
    if multiple < 1:
        raise ValueError(f"round_to={multiple} must be a positive number of channels.")
    rounded = {}
    for group in mm.unit_groups:
        mask = mm.get_mask(group.name)
        kept = mask.kept()
        step = multiple // math.gcd(multiple, group.unit_width)  # units per aligned block
        wanted = min(group.num_units, math.ceil(int(kept.sum()) / step) * step)
        scores = mask.keep_probability().detach().clone()
        scores[kept] = float("inf")  # the kept units stay
        rounded[group.name] = torch.argsort(scores, descending=True)[:wanted]
    return KeptUnits(rounded)


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def prune_group(model: nn.Module, group: UnitGroup, kept_units: torch.Tensor) -> str | None:
    """Deletes every unit of `group` not in `kept_units` from `model`, in place; returns the
    path of the module replaced by `EmptyAttention`, if the group's block was emptied.

    Args:
        model: The model the group's paths are relative to (without mask hooks).
        group: The unit group.
        kept_units: Sorted unit indices to keep.
    """
    if len(kept_units) == 0 and group.empty_module is not None:
        consumer = model.get_submodule(group.mask_module)
        replacement = EmptyAttention(consumer.weight.shape[0], bias=consumer.bias is not None)
        if consumer.bias is not None:
            replacement.bias.data.copy_(consumer.bias.detach())
        _set_module(model, group.empty_module, replacement)
        return group.empty_module
    # torch has no zero-channel convolution: `min_kept` units stay, silenced by zeroing their
    # consumer columns, so the output is still the masked model's.
    silenced = max(0, group.min_kept - len(kept_units))
    apply_slices(model, group, torch.cat([torch.arange(silenced), kept_units.to(torch.long)]))
    if silenced:  # out of place: the copy being pruned may share unsliced tensors (pruned_copy)
        columns = group.channel_index(torch.arange(silenced))
        for path in group.consumers:
            consumer = model.get_submodule(path)
            weight = consumer.weight.detach().clone()
            weight[:, columns] = 0
            replace_tensor(consumer, "weight", weight)
    return None


def pass_through(model: nn.Module, source: nn.Module, layer: EmptiableLayer, returns: str) -> None:
    """Replaces an emptied layer of `model` by a `PassThroughLayer` adding its output biases.

    Args:
        model: The model being pruned, every unit of the layer's groups already removed.
        source: The unpruned model (same paths), whose consumer biases the layer added.
        layer: The layer.
        returns: The stock layer's return format (`runtime.RETURN_FORMATS`).
    """
    consumers = [source.get_submodule(path) for path in layer.consumers]
    biases = [c.bias.detach() for c in consumers if c.bias is not None]
    stock = type(model.get_submodule(layer.layer))
    replacement = pass_through_class(stock, returns)(consumers[0].weight.shape[0], bool(biases))
    if biases:
        replacement.bias = nn.Parameter(torch.stack(biases).sum(0))
    _set_module(model, layer.layer, replacement)


def build_manifest(
    model: nn.Module,
    groups: list[UnitGroup],
    replaced: list[str],
    prepare: list[str] = (),
    layers: dict[str, int] | None = None,
) -> dict:
    """The shape manifest of a pruned model, read back from the modules pruning changed.

    Args:
        model: The pruned model.
        groups: The unit groups that were pruned.
        replaced: Paths of the modules replaced whole (`EmptyAttention`, pass-throughs).
        prepare: `runtime.PREPARATIONS` to apply before the manifest (a plain module holding a
            WavLM needs its attention rebuilt, as the pruned WavLM classes do themselves).
        layers: `{layers path: count}` where top layers were dropped (`last_layer`).
    """
    inside = tuple(path + "." for path in replaced)
    replaced = [path for path in replaced if not path.startswith(inside)]  # outermost only
    modules = {path: describe_module(model.get_submodule(path)) for path in replaced}
    parameters, attributes = {}, {}
    for group in groups:
        if group.mask_module.startswith(inside):
            continue  # its block or layer is gone
        for path, _, _ in resized_modules(group):
            modules[path] = describe_module(model.get_submodule(path))
        for owned in owned_slices(group):
            if owned.per == "unit":
                tensor = getattr(model.get_submodule(owned.module), owned.tensor)
                parameters[f"{owned.module}.{owned.tensor}"] = list(tensor.shape)
        for path, names in group.attributes.items():
            if path not in replaced:
                module = model.get_submodule(path)
                attributes[path] = {name: getattr(module, name) for name in names}
    manifest = {"modules": modules, "attributes": attributes, "parameters": parameters}
    if prepare:
        manifest["prepare"] = list(prepare)
    if layers:
        manifest["layers"] = dict(layers)
    return manifest


def pruned_copy(mm, kept: KeptUnits) -> tuple[nn.Module, dict]:
    """A deep copy of `mm`'s model with every unit `kept` does not name removed, and its
    shape manifest.

    Args:
        mm: The `MaskModel` (left unchanged).
        kept: The units to keep.
    """
    with mm.hooks_removed():
        pruned = _copy_sharing_tensors(mm.model)
    replaced = []
    for group in mm.unit_groups:
        emptied = prune_group(pruned, group, kept[group.name])
        replaced += [emptied] if emptied else []
    returns = mm.layout.pass_through_returns()
    for layer in mm.emptiable_layers:
        if layer.is_empty(kept):
            stock = type(mm.model.get_submodule(layer.layer)).__name__
            pass_through(pruned, mm.model, layer, returns[stock])
            replaced.append(layer.layer)
    _own_tensors(pruned, mm.model)
    prepare = [f.prepare for f in mm.layout.families if f.prepare]
    layers = None
    if mm.mask_config.last_layer is not None:
        path = mm.layout.layers_path
        layers = {path: len(pruned.get_submodule(path))}
    return pruned, build_manifest(pruned, mm.unit_groups, replaced, prepare, layers)


def _copy_sharing_tensors(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers share storage with the original.

    Pruning replaces every tensor it slices by a new one and `_own_tensors` then copies the
    rest, so the full model is never held twice: a plain deep copy would peak at the original,
    the copy and the slices together (~3x a large model's size).
    """
    memo = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        shared = tensor.detach()
        if isinstance(tensor, nn.Parameter):
            shared = nn.Parameter(shared, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = shared
    return copy.deepcopy(model, memo)


def _storage(tensor: torch.Tensor) -> int:
    return 0 if tensor.is_meta or tensor.numel() == 0 else tensor.untyped_storage().data_ptr()


def _own_tensors(pruned: nn.Module, source: nn.Module) -> None:
    """Gives `pruned` its own copy of every tensor it still shares with `source`, so that
    training or merging into the pruned model never changes the masked one."""
    shared = {_storage(t) for t in itertools.chain(source.parameters(), source.buffers())}
    shared.discard(0)
    for module in pruned.modules():
        for name, tensor in itertools.chain(module._parameters.items(), module._buffers.items()):
            if tensor is not None and _storage(tensor) in shared:
                replace_tensor(module, name, tensor.detach().clone())


#: `MaskModel` attributes that record what was done between mask training and pruning.
AFTER_TRAINING = ("target_trained", "target_met", "head_refit")


def pruning_record(mm, kept: KeptUnits | None = None) -> dict:
    """What pruning does: library, base model, MaskConfig and the sparsity report.

    Args:
        mm: The `MaskModel`.
        kept: The units kept, when not the masks' own (`round_to`).
    """
    config = mm.config
    record = {
        "library": "hf_keepwhat",
        "version": __version__,
        "base_model": getattr(config, "_name_or_path", None) or None,
        "base_model_revision": getattr(config, "_commit_hash", None),
        "mask_config": mm.mask_config.to_dict(),
        "report": sparsity_report(mm, kept),
    }
    for name in AFTER_TRAINING:
        if getattr(mm, name) is not None:
            record[name] = getattr(mm, name)
    return record


@torch.no_grad()
def prune(mm, feature_extractor=None, round_to: int | None = None) -> nn.Module:
    """Returns a physically smaller copy of a `MaskModel`'s model (see `MaskModel.prune`).

    Args:
        mm: The `MaskModel`.
        feature_extractor: Saved with a pruned transformers model.
        round_to: Keep a multiple of this many channels per group (`rounded_kept_units`).
    """
    kept = rounded_kept_units(mm, round_to) if round_to else mm.kept_units()
    if round_to and mm.target_met is not None:
        _warn_if_rounding_missed_target(mm, kept, round_to)
    pruned, manifest = pruned_copy(mm, kept)
    record = pruning_record(mm, kept)
    if not mm.is_transformers_model:
        # A plain module keeps its class; `save_pruned_module` writes the manifest with it.
        pruned.keepwhat_manifest, pruned.keepwhat_record = manifest, record
        return pruned.eval()
    pruned = to_pruned_model(pruned, manifest, record)
    for name, param in pruned.named_parameters():
        param.requires_grad_(mm.original_requires_grad.get(name, True))
    pruned.keepwhat_feature_extractor = _feature_extractor(mm, feature_extractor)
    return pruned


def _warn_if_rounding_missed_target(mm, kept: KeptUnits, round_to: int) -> None:
    """`meet_target` met the target with the masks' own units, the fewest it could switch off;
    rounding widths up adds units back, so the pruned model can cost more than the target."""
    removed = 1.0 - float(mm.budget.realised_kept_fraction(kept.as_bools(mm.unit_groups)))
    target = mm.target_met["target"]
    if removed < target:
        logger.warning(
            "round_to=%d added units back: the pruned model removes %.4f of the %s budget, less "
            "than the target %.4f that meet_target met. Call meet_target(mm, target) with a "
            "higher target before pruning, or prune without round_to.",
            round_to,
            removed,
            mm.mask_config.budget,
            target,
        )


def _feature_extractor(mm, given):
    """The feature extractor to save with the pruned model: `given`, else the base model's own
    when it can be read (local folder or cache), fitted to the masked model (Whisper's window)."""
    if given is None:
        base = getattr(mm.config, "_name_or_path", None)
        if not base:
            return None
        from transformers import AutoFeatureExtractor

        try:
            given = AutoFeatureExtractor.from_pretrained(base)
        except (OSError, ValueError) as e:
            logger.warning(
                "No feature extractor saved with the pruned model: none could be read for %s "
                "(%s). Pass prune(feature_extractor=...).",
                base,
                e,
            )
            return None
    return mm.layout.adapt_feature_extractor(given, mm.mask_config)


class PruningMixin:
    """The pruning side of a `MaskModel`: its report, and the pruned model."""

    def sparsity_report(self, kept: KeptUnits | None = None) -> dict:
        """Realised kept/removed units, parameters and MACs (`sparsity.sparsity_report`).

        Args:
            kept: Kept units to report on instead of the masks'.
        """
        return sparsity_report(self, kept)

    def rounded_kept_units(self, multiple: int) -> KeptUnits:
        """Kept units rounded up to `multiple` channels per group (`rounded_kept_units`).

        Args:
            multiple: Channels, e.g. 8 or 64.
        """
        return rounded_kept_units(self, multiple)

    def prune(self, feature_extractor=None, round_to: int | None = None) -> nn.Module:
        """Returns a physically smaller copy of the wrapped model with every masked unit gone.

        The result is an instance of a subclass of the wrapped model's class (e.g.
        `KeepWhatWhisperForAudioClassification`) in eval mode, with no hooks, that computes what
        this masked model computes; a pre-LN layer with no unit left is a `PassThroughLayer`.
        Its config records the new shapes and what was pruned; `save_pretrained` writes it with
        its feature extractor and a model card. A plain PyTorch model comes back as its own
        class with the manifest in `keepwhat_manifest` (save it with `save_pruned_module`).
        This MaskModel is left unchanged.

        Args:
            feature_extractor: Saved with the pruned model. Default: the base model's own, when
                its folder or the Hub cache has one (adjusted to `max_input_seconds`).
            round_to: Keep a multiple of this many channels per group (`rounded_kept_units`):
                the result then computes what this model computes with those units back on.
        """
        return prune(self, feature_extractor, round_to)
