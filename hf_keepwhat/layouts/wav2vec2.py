"""Wav2Vec2, HuBERT, Data2VecAudio, UniSpeech(-SAT) and SEW: one module structure, one layout.

Units: attention heads, feed-forward neurons, and feature-encoder conv channels wherever deleting
a channel is exact: a channel followed by nothing or by a per-channel GroupNorm. A LayerNorm over
channels couples them (feat_extract_norm="layer", every Data2VecAudio conv layer), and the last
conv layer feeds the feature projection's LayerNorm, so those channels are never masked.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import MaskConfig
from ..units import UnitGroup
from .base import (
    Layout,
    channel_group,
    conv_output_length,
    head_group,
    is_per_channel_norm,
    layers_with_units,
    neuron_group,
)

logger = logging.getLogger(__name__)

# Every checkpoint of these families is trained on 16 kHz audio.
SAMPLING_RATE = 16_000


class Wav2Vec2Layout(Layout):
    """Layout of the wav2vec2 family's models (`...ForSequenceClassification`, `...ForCTC`, ...)."""

    model_types = ("wav2vec2", "hubert", "data2vec-audio", "unispeech", "unispeech-sat", "sew")

    def _path(self, model: nn.Module, suffix: str) -> str:
        return f"{self.backbone_path(model)}.{suffix}".lstrip(".")

    def layers_path(self, model: nn.Module) -> str:
        return self._path(model, "encoder.layers")

    def reference_inputs(self, model: nn.Module, config: MaskConfig) -> dict[str, torch.Tensor]:
        return {"input_values": torch.zeros(1, int(config.macs_input_seconds * SAMPLING_RATE))}

    def describe_reference_input(self, model: nn.Module, config: MaskConfig) -> str:
        return f"{config.macs_input_seconds:g} s of 16 kHz audio"

    def stock_config_updates(self, model: nn.Module) -> dict:
        conv_layers = model.get_submodule(self._path(model, "feature_extractor.conv_layers"))
        updates = {"conv_dim": [layer.conv.out_channels for layer in conv_layers]}
        layers = model.get_submodule(self.layers_path(model))
        widths = {w for layer in layers_with_units(layers) for w in self.ffn_widths(layer)}
        if len(widths) == 1:
            updates["intermediate_size"] = widths.pop()
        return updates

    def ffn_widths(self, layer: nn.Module) -> list[int]:
        """Hidden widths of a layer's feed-forward module(s)."""
        return [layer.feed_forward.intermediate_dense.out_features]

    def unit_groups(self, model: nn.Module, config: MaskConfig) -> list[UnitGroup]:
        length = self.reference_inputs(model, config)["input_values"].shape[-1]
        conv_layers = model.get_submodule(self._path(model, "feature_extractor.conv_layers"))
        frames = {}
        for i, layer in enumerate(conv_layers):
            length = conv_output_length(length, layer.conv)
            frames[self._path(model, f"feature_extractor.conv_layers.{i}.conv")] = length
        # SEW squeezes the sequence (average pooling) before its transformer layers.
        seq_len = length // getattr(model.config, "squeeze_factor", 1)

        groups = []
        skipped = []
        for i in range(len(conv_layers) - 1):
            norm = getattr(conv_layers[i], "layer_norm", None)
            if not is_per_channel_norm(norm):
                skipped.append(i)
                continue
            layer = self._path(model, f"feature_extractor.conv_layers.{i}")
            consumer = self._path(model, f"feature_extractor.conv_layers.{i + 1}.conv")
            groups.append(
                channel_group(
                    model,
                    f"{layer}.channels",
                    producer=f"{layer}.conv",
                    consumer=consumer,
                    frames={f"{layer}.conv": frames[f"{layer}.conv"], consumer: frames[consumer]},
                    norms=[f"{layer}.layer_norm"] if norm is not None else [],
                )
            )
        if skipped and "conv" in config.unit_kinds:
            logger.warning(
                "Conv channels of feature-encoder layers %s are not masked: a LayerNorm over "
                "channels follows them, so deleting one would change the others.",
                skipped,
            )

        layers = model.get_submodule(self.layers_path(model))
        for i in range(len(layers)):
            groups += self.layer_groups(model, f"{self.layers_path(model)}.{i}", seq_len)
        return groups

    def layer_groups(self, model: nn.Module, layer: str, seq_len: int) -> list[UnitGroup]:
        """The unit groups of one transformer layer (heads, then FFN neurons).

        Args:
            model: The transformers model.
            layer: Path of the layer.
            seq_len: Frames the layer runs on for the reference input.
        """
        return [
            head_group(model, f"{layer}.heads", f"{layer}.attention", seq_len),
            neuron_group(
                model,
                f"{layer}.ffn",
                f"{layer}.feed_forward.intermediate_dense",
                f"{layer}.feed_forward.output_dense",
                seq_len,
            ),
        ]
