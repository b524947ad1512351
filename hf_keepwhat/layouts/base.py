"""What every layout shares: the `Layout` interface and builders for the common unit groups.

A layout is the only architecture-specific code: it says where the backbone and its layers are,
what a reference input looks like, and which `UnitGroup`s the model has.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MaskConfig
from ..modeling_pruned import PASS_THROUGH_FORWARDS, PassThroughLayer
from ..units import UnitGroup


class Layout:
    """Architecture knowledge for one family of transformers models.

    Subclasses set `model_types` and implement `backbone_path`, `reference_inputs` and
    `unit_groups`; everything else reads only what these return.
    """

    model_types: tuple[str, ...] = ()

    def prepare(self, model: nn.Module) -> None:
        """Rebuilds, in place, modules that masking and pruning cannot work on as they are
        (none by default; WavLM's attention); the pruned model classes do the same."""

    def backbone_path(self, model: nn.Module) -> str:
        """Path of the backbone (the part whose cost the budget counts) inside `model`: by default
        the child named by `base_model_prefix`, or the model itself when it is the bare model."""
        prefix = getattr(model, "base_model_prefix", "")
        return prefix if prefix and hasattr(model, prefix) else ""

    def layers_path(self, model: nn.Module) -> str:
        """Path of the `nn.ModuleList` of transformer layers inside `model`."""
        raise NotImplementedError

    def reference_inputs(self, model: nn.Module, config: MaskConfig) -> dict[str, torch.Tensor]:
        """Backbone inputs (batch 1) of the length MACs are counted for."""
        raise NotImplementedError

    def describe_reference_input(self, model: nn.Module, config: MaskConfig) -> str:
        """Says in words what input MACs are counted for, e.g. "3 s input window"."""
        raise NotImplementedError

    def stock_config_updates(self, model: nn.Module) -> dict:
        """Stock config fields that would describe `model`'s current (pruned) shapes.

        Used to save a pruned model with a stock config when one can describe it; whether it
        really does is checked by comparing every tensor shape, so proposing is enough.
        """
        return {}

    def unit_groups(self, model: nn.Module, config: MaskConfig) -> list[UnitGroup]:
        """Every prunable unit group of `model`, with the frames each of its modules runs on."""
        raise NotImplementedError

    def pass_through_layers(self, model: nn.Module) -> list[str]:
        """Paths of the layers that become a `PassThroughLayer` once all their units are gone.

        Only pre-LN layers qualify (their classes are the keys of `PASS_THROUGH_FORWARDS`): a
        post-LN layer normalises the residual stream itself, so emptied it is no pass-through.

        Args:
            model: The transformers model.
        """
        path = self.layers_path(model)
        return [
            f"{path}.{i}"
            for i, layer in enumerate(model.get_submodule(path))
            if type(layer).__name__ in PASS_THROUGH_FORWARDS
            # wav2vec2's attention adapter (`adapter_attn_dim`) adds a function of the stream.
            and getattr(layer, "adapter_layer", None) is None
        ]

    def set_input_window(self, model: nn.Module, seconds: float) -> None:
        """Shortens a fixed input window to `seconds` (only models that have one, like Whisper)."""
        raise ValueError(
            f"{type(model).__name__} has no fixed input window; leave MaskConfig.max_input_seconds "
            "unset (it applies to Whisper only)."
        )

    def adapt_feature_extractor(self, feature_extractor, config: MaskConfig):
        """The feature extractor that fits the masked model (only Whisper's window changes it)."""
        return feature_extractor

    def drop_layers_above(self, model: nn.Module, last_layer: int) -> None:
        """Deletes the transformer layers above `last_layer` in place and updates the config.

        Args:
            model: The transformers model.
            last_layer: Index of the last layer to keep.
        """
        layers = model.get_submodule(self.layers_path(model))
        num_layers = len(layers)
        if last_layer >= num_layers:
            raise ValueError(
                f"last_layer={last_layer} but the model has {num_layers} layers "
                f"(indices 0..{num_layers - 1})."
            )
        del layers[last_layer + 1 :]
        model.config.num_hidden_layers = last_layer + 1
        # Classifiers with `use_weighted_layer_sum` hold one weight per hidden state (layers + 1).
        weights = getattr(model, "layer_weights", None)
        if isinstance(weights, nn.Parameter) and weights.numel() == num_layers + 1:
            model.layer_weights = nn.Parameter(weights.data[: last_layer + 2].clone())


def layers_with_units(layers: nn.ModuleList) -> list[nn.Module]:
    """The layers that still hold heads and neurons (not `PassThroughLayer`s).

    Args:
        layers: A model's transformer layers.
    """
    return [layer for layer in layers if not isinstance(layer, PassThroughLayer)]


def head_group(
    model: nn.Module,
    name: str,
    attention: str,
    seq_len: int,
    out: str = "out_proj",
    num_heads_attr: str = "num_heads",
) -> UnitGroup:
    """The heads of one self-attention block with `q_proj`, `k_proj`, `v_proj` and an output
    projection.

    Args:
        model: The transformers model.
        name: The group's name.
        attention: Path of the attention module (it must have `head_dim` and `num_heads_attr`).
        seq_len: Number of frames the block attends over for the reference input.
        out: Name of the output projection inside the attention module.
        num_heads_attr: The attention module's attribute that counts heads.
    """
    module = model.get_submodule(attention)
    projections = ("q_proj", "k_proj", "v_proj", out)
    return UnitGroup(
        name=name,
        kind="heads",
        num_units=getattr(module, num_heads_attr),
        unit_width=module.head_dim,
        mask_module=f"{attention}.{out}",
        mask_dim=-1,
        producers=[f"{attention}.{p}" for p in projections[:3]],
        consumers=[f"{attention}.{out}"],
        attributes={attention: {num_heads_attr: 1}},
        empty_module=attention,
        frames={f"{attention}.{p}": seq_len for p in projections},
        # Scores (Q K^T) and the weighted sum (A V): seq_len * seq_len * head_dim MACs each.
        extra_macs_per_unit=2 * seq_len * seq_len * module.head_dim,
    )


def neuron_group(
    model: nn.Module, name: str, producer: str, consumer: str, seq_len: int
) -> UnitGroup:
    """The hidden neurons of one feed-forward block `consumer(act(producer(x)))`.

    Args:
        model: The transformers model.
        name: The group's name.
        producer: Path of the first projection (`nn.Linear`).
        consumer: Path of the second projection (`nn.Linear`).
        seq_len: Number of frames the block runs on for the reference input.
    """
    return UnitGroup(
        name=name,
        kind="ffn",
        num_units=model.get_submodule(producer).out_features,
        unit_width=1,
        mask_module=consumer,
        mask_dim=-1,
        producers=[producer],
        consumers=[consumer],
        frames={producer: seq_len, consumer: seq_len},
    )


def channel_group(
    model: nn.Module,
    name: str,
    producer: str,
    consumer: str,
    frames: dict[str, int],
    norms: list[str] | None = None,
) -> UnitGroup:
    """The output channels of one `nn.Conv1d` consumed by the next `nn.Conv1d`.

    Args:
        model: The transformers model.
        name: The group's name.
        producer: Path of the convolution whose output channels are the units.
        consumer: Path of the convolution that reads them.
        frames: Output frames of `producer` and of `consumer` for the reference input.
        norms: Per-channel norms between them (GroupNorm with a group per channel, BatchNorm).
    """
    conv = model.get_submodule(producer)
    if model.get_submodule(consumer).groups != 1:
        raise ValueError(f"{consumer} is a grouped convolution; its channels are not separable.")
    return UnitGroup(
        name=name,
        kind="conv",
        num_units=conv.out_channels,
        unit_width=1,
        mask_module=consumer,
        mask_dim=1,
        producers=[producer],
        consumers=[consumer],
        norms=list(norms or []),
        frames=dict(frames),
        min_kept=1,
    )


def is_per_channel_norm(norm: nn.Module | None) -> bool:
    """True when `norm` normalises each channel on its own, so deleting a channel is exact."""
    if norm is None:
        return True
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups == norm.num_channels
    return isinstance(norm, nn.modules.batchnorm._BatchNorm)


def conv_output_length(length: int, conv: nn.Conv1d) -> int:
    """Output frames of a 1-D convolution for an input of `length` frames."""
    padding = conv.padding[0] if isinstance(conv.padding, tuple) else 0
    kernel, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
