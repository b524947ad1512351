"""Plain PyTorch models (any `nn.Module`, e.g. CNN14 or CREPE): channel chains found by graph
analysis (`channel_graph.find_chains`) instead of architecture knowledge."""

from __future__ import annotations

import inspect
import logging

import torch
from torch import nn

from ..channel_graph import CONV_TYPES, find_chains
from ..config import MaskConfig
from ..units import UnitGroup
from .base import Layout

logger = logging.getLogger(__name__)


def as_keyword_inputs(model: nn.Module, example_inputs) -> dict[str, torch.Tensor]:
    """`example_inputs` as keyword arguments of `model.forward`.

    Args:
        model: The module.
        example_inputs: A dict of keyword arguments, a tensor (the first argument) or a tuple of
            positional arguments.
    """
    if isinstance(example_inputs, dict):
        return dict(example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(
            "example_inputs must be a dict of forward keyword arguments, a tensor or a tuple of "
            f"tensors, not {type(example_inputs).__name__}."
        )
    names = [
        p.name
        for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(example_inputs) > len(names):
        raise TypeError(
            f"{len(example_inputs)} example inputs, but {type(model).__name__}.forward takes "
            f"{len(names)} positional arguments {names}."
        )
    return dict(zip(names, example_inputs, strict=False))


class ModuleLayout(Layout):
    """Layout of a plain `nn.Module`: every exactly prunable channel chain, found on
    `example_inputs` (which also define the input MACs are counted for).

    Args:
        model: The module.
        mask_config: The `MaskConfig`.
        example_inputs: Inputs of one forward pass (see `as_keyword_inputs`).
    """

    def __init__(self, model: nn.Module, mask_config: MaskConfig | None, example_inputs):
        super().__init__(model, mask_config)
        self.example_inputs = as_keyword_inputs(model, example_inputs)
        self.chains, self.refused = find_chains(model, self.example_inputs)
        for producer, reason in self.refused.items():
            logger.info("Channels of %s are not prunable: %s.", producer, reason)

    @property
    def backbone_path(self) -> str:
        return ""

    @property
    def layers_path(self) -> str:
        raise ValueError(
            f"{type(self.model).__name__} is a plain PyTorch model: it has no transformer "
            "layers, so MaskConfig.last_layer does not apply. Leave it unset."
        )

    def pass_through_layers(self) -> list[str]:
        """None: only conv channels are pruned, never a whole layer."""
        return []

    def check_supported(self) -> None:
        """Every module: its pruned form is its own class with a manifest."""

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        return self.example_inputs

    def describe_reference_input(self) -> str:
        shapes = ", ".join(
            f"{name} {list(value.shape)}"
            for name, value in self.example_inputs.items()
            if isinstance(value, torch.Tensor)
        )
        return f"the example inputs ({shapes})"

    def unit_groups(self) -> list[UnitGroup]:
        model, groups = self.model, []
        for chain in self.chains:
            producer = model.get_submodule(chain.producer)
            consumer = model.get_submodule(chain.consumer)
            convolutional = any(
                isinstance(model.get_submodule(p), CONV_TYPES)
                for p in [chain.producer, chain.consumer, *chain.depthwise]
            )
            is_conv = isinstance(producer, CONV_TYPES)
            groups.append(
                UnitGroup(
                    name=f"{chain.producer}.{'channels' if is_conv else 'neurons'}",
                    kind="conv" if is_conv else "ffn",
                    num_units=producer.out_channels if is_conv else producer.out_features,
                    unit_width=1,
                    mask_module=chain.consumer,
                    mask_dim=1 if isinstance(consumer, CONV_TYPES) else -1,
                    producers=[chain.producer],
                    consumers=[chain.consumer],
                    norms=list(chain.norms),
                    depthwise=list(chain.depthwise),
                    frames=dict(chain.frames),
                    # torch has no zero-channel convolution: one silenced channel stays.
                    min_kept=1 if convolutional else 0,
                )
            )
        return groups
