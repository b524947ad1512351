"""A layout applied at a submodule path: a supported transformers model or encoder inside any
module (a research model wrapping a `Wav2Vec2ConformerEncoder`, a classifier of your own around a
`WhisperEncoder` or `Wav2Vec2Model`, CLAP's audio tower inside `ClapModel`).

The inner layout, bound to the submodule, finds the units; this one prefixes every path with the
submodule's path, so masking, costs (counted for the inner model's reference input), pruning and
the manifest work on the outer model unchanged.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import MaskConfig
from ..units import UnitGroup
from .base import Family, Layout


def _join(prefix: str, path: str) -> str:
    return ".".join(part for part in (prefix, path) if part)


def prefixed(group: UnitGroup, prefix: str) -> UnitGroup:
    """`group` with every module path made relative to the outer model."""

    def paths(values):
        return [_join(prefix, p) for p in values]

    def keyed(mapping):
        return {_join(prefix, k): v for k, v in mapping.items()}

    return dataclasses.replace(
        group,
        name=_join(prefix, group.name),
        mask_module=_join(prefix, group.mask_module),
        producers=paths(group.producers),
        consumers=paths(group.consumers),
        norms=paths(group.norms),
        glu_producers=paths(group.glu_producers),
        depthwise=paths(group.depthwise),
        per_unit_tensors=keyed(group.per_unit_tensors),
        attributes=keyed(group.attributes),
        empty_module=_join(prefix, group.empty_module) if group.empty_module else None,
        frames=keyed(group.frames),
    )


class ScopedLayout(Layout):
    """The layout of the model inside `model` at `prefix`, as a layout of `model`.

    Args:
        model: The outer module.
        mask_config: The `MaskConfig`.
        inner: The layout bound to the submodule.
        prefix: The submodule's path in `model`.
    """

    def __init__(
        self, model: nn.Module, mask_config: MaskConfig | None, inner: Layout, prefix: str
    ):
        super().__init__(model, mask_config)
        self.inner, self.prefix = inner, prefix

    @property
    def families(self) -> tuple[Family, ...]:
        return self.inner.families

    def pass_through_returns(self) -> dict[str, str]:
        return self.inner.pass_through_returns()

    def prepare(self):
        return self.inner.prepare()

    def check_supported(self) -> None:
        """Any module may hold a supported model: it is pruned as a plain module."""

    @property
    def backbone_path(self) -> str:
        return _join(self.prefix, self.inner.backbone_path)

    @property
    def layers_path(self) -> str:
        return _join(self.prefix, self.inner.layers_path)

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        return self.inner.reference_inputs()

    def describe_reference_input(self) -> str:
        return self.inner.describe_reference_input()

    def unit_groups(self) -> list[UnitGroup]:
        return [prefixed(group, self.prefix) for group in self.inner.unit_groups()]

    def pass_through_layers(self) -> list[str]:
        return [_join(self.prefix, path) for path in self.inner.pass_through_layers()]

    def set_input_window(self, seconds: float):
        return self.inner.set_input_window(seconds)

    def adapt_feature_extractor(self, feature_extractor, mask_config: MaskConfig):
        return self.inner.adapt_feature_extractor(feature_extractor, mask_config)

    def drop_layers_above(self, last_layer: int):
        return self.inner.drop_layers_above(last_layer)
