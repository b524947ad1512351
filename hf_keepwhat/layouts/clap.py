"""CLAP's audio encoder (HTS-AT, a Swin transformer): window-attention heads and MLP neurons.

A head owns its rows of `query`/`key`/`value`, its columns of the output projection
(`attention.output.dense`, outside the self-attention module) and its column of the
relative-position bias table. Swin attends within windows, and how many windows each stage sees
depends on padding, shifting and patch merging; rather than re-deriving that, the frames of every
projection and the window shape of every attention are recorded from one forward pass on the
reference input (the input MACs are counted for).
"""

from __future__ import annotations

import functools
import logging
import math

import torch
from torch import nn

from ..units import UnitGroup
from .base import Family, Layout, neuron_group
from .scoped import ScopedLayout

logger = logging.getLogger(__name__)


@torch.no_grad()
def _record_shapes(model: nn.Module, backbone: nn.Module, inputs: dict) -> dict[str, tuple]:
    """Input shapes of every `nn.Linear` and window-attention module of `backbone` during one
    forward pass, by path in `model`."""
    shapes, handles = {}, []
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "ClapAudioSelfAttention":

            def hook(module, args, path=path):
                shapes[path] = tuple(args[0].shape)

            handles.append(module.register_forward_pre_hook(hook))
    was_training = backbone.training
    backbone.eval()
    try:
        backbone(**inputs)
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    return shapes


class ClapAudioLayout(Layout):
    """Layout of `ClapAudioModel` (e.g. `ClapModel.from_pretrained(...).audio_model`, the audio
    tower of `laion/clap-htsat-*`), whose output a task head of your own reads."""

    families = (
        Family(
            "clap_audio_model",
            "ClapAudioConfig",
            # transformers has no Auto class for the projection model: the pruned one loads
            # with AutoModel and trust_remote_code, or its own class.
            {"ClapAudioModel": "AutoModel", "ClapAudioModelWithProjection": "AutoModel"},
            pass_through={"ClapAudioLayer": "swin_tuple"},
        ),
    )

    @functools.cached_property
    def backbone_path(self) -> str:
        for path, module in self.model.named_modules():  # ClapAudioModel(WithProjection)
            if type(module).__name__ == "ClapAudioEncoder":
                return path
        raise ValueError(f"{type(self.model).__name__} has no ClapAudioEncoder to mask.")

    @property
    def layers_path(self) -> str:
        raise ValueError(
            "CLAP's audio encoder is a stack of Swin stages with patch merging between them; "
            "MaskConfig.last_layer does not apply to it. Leave it unset."
        )

    def pass_through_layers(self) -> list[str]:
        """Every Swin block (all are pre-LN); patch merging between stages is not a block."""
        return [
            self.path(f"layers.{s}.blocks.{b}")
            for s, stage in enumerate(self.backbone.layers)
            for b in range(len(stage.blocks))
        ]

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        # The encoder resizes every spectrogram to this fixed size, so MACs do not depend on length.
        c = self.model.config
        frames = c.spec_size * (c.spec_size // c.num_mel_bins)
        return {"input_features": torch.zeros(1, 1, frames, c.num_mel_bins)}

    def describe_reference_input(self) -> str:
        shape = self.reference_inputs()["input_features"].shape
        return f"a {shape[2]} x {shape[3]} spectrogram (the encoder's fixed input size)"

    def unit_groups(self) -> list[UnitGroup]:
        kinds = self.mask_config.unit_kinds
        if "conv" in kinds and kinds != ["conv"]:
            logger.warning(
                "CLAP's audio encoder has no prunable conv channels: conv units ignored."
            )
        model, encoder = self.model, self.backbone_path
        inputs = {
            k: v.to(next(model.parameters()).device) for k, v in self.reference_inputs().items()
        }
        shapes = _record_shapes(model, self.backbone, inputs)

        def frames(path: str) -> int:
            return math.prod(shapes[path][:-1])

        groups = []
        for s, stage in enumerate(model.get_submodule(f"{encoder}.layers")):
            for b in range(len(stage.blocks)):
                block = f"{encoder}.layers.{s}.blocks.{b}"
                attention = f"{block}.attention.self"
                module = model.get_submodule(attention)
                windows, tokens, _ = shapes[attention]
                projections = [f"{attention}.{p}" for p in ("query", "key", "value")]
                out = f"{block}.attention.output.dense"
                groups.append(
                    UnitGroup(
                        name=f"{block}.heads",
                        kind="heads",
                        num_units=module.num_attention_heads,
                        unit_width=module.attention_head_size,
                        mask_module=out,
                        mask_dim=-1,
                        producers=projections,
                        consumers=[out],
                        per_unit_tensors={f"{attention}.relative_position_bias_table": -1},
                        attributes={
                            attention: {
                                "num_attention_heads": 1,
                                "all_head_size": module.attention_head_size,
                            }
                        },
                        empty_module=f"{block}.attention",
                        frames={p: frames(p) for p in [*projections, out]},
                        # Scores and weighted sum inside every window.
                        extra_macs_per_unit=2
                        * windows
                        * tokens
                        * tokens
                        * module.attention_head_size,
                    )
                )
                fc1, fc2 = f"{block}.intermediate.dense", f"{block}.output.dense"
                groups.append(neuron_group(model, f"{block}.mlp", fc1, fc2, frames(fc1)))
        return groups


class ClapLayout(ScopedLayout):
    """`ClapModel`: its audio tower (the text tower is left as it is)."""

    families = (
        Family(
            "clap",
            "ClapConfig",
            {"ClapModel": "AutoModel"},
            pass_through={"ClapAudioLayer": "swin_tuple"},
        ),
    )

    def __init__(self, model: nn.Module, mask_config=None):
        inner = ClapAudioLayout(model.audio_model, mask_config)
        super().__init__(model, mask_config, inner, "audio_model")

    @classmethod
    def adapt_feature_extractor(cls, feature_extractor, mask_config):
        return feature_extractor
