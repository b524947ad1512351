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

from ..units import UnitGroup
from .base import (
    Layout,
    channel_group,
    head_group,
    is_per_channel_norm,
    layers_with_units,
    neuron_group,
    task_family,
)

logger = logging.getLogger(__name__)

# Every checkpoint of these families is trained on 16 kHz audio.
SAMPLING_RATE = 16_000
STABLE = "tensor"  # the stable-layer-norm (pre-LN) layers return a tensor


class Wav2Vec2Layout(Layout):
    """Layout of the wav2vec2 family's models (`...ForSequenceClassification`, `...ForCTC`, ...)."""

    families = (
        task_family(
            "wav2vec2", "Wav2Vec2", pass_through={"Wav2Vec2EncoderLayerStableLayerNorm": STABLE}
        ),
        task_family("hubert", "Hubert", pass_through={"HubertEncoderLayerStableLayerNorm": STABLE}),
        task_family("data2vec-audio", "Data2VecAudio"),
        task_family(
            "unispeech", "UniSpeech", pass_through={"UniSpeechEncoderLayerStableLayerNorm": STABLE}
        ),
        task_family(
            "unispeech-sat",
            "UniSpeechSat",
            pass_through={"UniSpeechSatEncoderLayerStableLayerNorm": STABLE},
        ),
        task_family("sew", "SEW"),
    )

    @property
    def encoder_only(self) -> bool:
        """Bound to the transformer encoder alone (e.g. the `Wav2Vec2ConformerEncoder` a
        research model holds): no feature encoder, hidden states in."""
        return not hasattr(self.backbone, "feature_extractor") and hasattr(self.backbone, "layers")

    @property
    def layers_path(self) -> str:
        return self.path("layers" if self.encoder_only else "encoder.layers")

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        samples = int(self.mask_config.macs_input_seconds * SAMPLING_RATE)
        if self.encoder_only:  # the frames the feature encoder would make of that audio
            config = self.model.config
            return {"hidden_states": torch.zeros(1, self.sequence_length, config.hidden_size)}
        return {"input_values": torch.zeros(1, samples)}

    def describe_reference_input(self) -> str:
        return f"{self.mask_config.macs_input_seconds:g} s of 16 kHz audio"

    def stock_config_updates(self) -> dict:
        conv_layers = self.model.get_submodule(self.path("feature_extractor.conv_layers"))
        updates = {"conv_dim": [layer.conv.out_channels for layer in conv_layers]}
        layers = self.model.get_submodule(self.layers_path)
        widths = {w for layer in layers_with_units(layers) for w in self.ffn_widths(layer)}
        if len(widths) == 1:
            updates["intermediate_size"] = widths.pop()
        return updates

    def ffn_widths(self, layer: nn.Module) -> list[int]:
        """Hidden widths of a layer's feed-forward module(s)."""
        return [layer.feed_forward.intermediate_dense.out_features]

    def conv_frames(self) -> dict[str, int]:
        """Output frames of every feature-encoder convolution for the reference input (from the
        config's kernels and strides: an encoder-only layout has no convolution to read)."""
        length = int(self.mask_config.macs_input_seconds * SAMPLING_RATE)
        config = self.model.config
        frames = {}
        for i, (kernel, stride) in enumerate(
            zip(config.conv_kernel, config.conv_stride, strict=True)
        ):
            length = (length - kernel) // stride + 1
            frames[self.path(f"feature_extractor.conv_layers.{i}.conv")] = length
        return frames

    @property
    def sequence_length(self) -> int:
        """Frames the transformer layers run on for the reference input (SEW squeezes them)."""
        frames = list(self.conv_frames().values())[-1]
        return frames // getattr(self.model.config, "squeeze_factor", 1)

    def unit_groups(self) -> list[UnitGroup]:
        groups = [] if self.encoder_only else self.conv_groups()
        seq_len = self.sequence_length
        for i in range(len(self.model.get_submodule(self.layers_path))):
            groups += self.layer_groups(f"{self.layers_path}.{i}", seq_len)
        return groups

    def conv_groups(self) -> list[UnitGroup]:
        """The feature encoder's conv-channel groups (where deleting a channel is exact)."""
        frames = self.conv_frames()
        conv_layers = self.model.get_submodule(self.path("feature_extractor.conv_layers"))
        groups, skipped = [], []
        for i in range(len(conv_layers) - 1):
            norm = getattr(conv_layers[i], "layer_norm", None)
            if not is_per_channel_norm(norm):
                skipped.append(i)
                continue
            layer = self.path(f"feature_extractor.conv_layers.{i}")
            consumer = self.path(f"feature_extractor.conv_layers.{i + 1}.conv")
            groups.append(
                channel_group(
                    self.model,
                    f"{layer}.channels",
                    producer=f"{layer}.conv",
                    consumer=consumer,
                    frames={f"{layer}.conv": frames[f"{layer}.conv"], consumer: frames[consumer]},
                    norms=[f"{layer}.layer_norm"] if norm is not None else [],
                )
            )
        if skipped and "conv" in self.mask_config.unit_kinds:
            logger.warning(
                "Conv channels of feature-encoder layers %s are not masked: a LayerNorm over "
                "channels follows them, so deleting one would change the others.",
                skipped,
            )
        return groups

    def layer_groups(self, layer: str, seq_len: int) -> list[UnitGroup]:
        """The unit groups of one transformer layer (heads, then FFN neurons).

        Args:
            layer: Path of the layer.
            seq_len: Frames the layer runs on for the reference input.
        """
        return [
            head_group(self.model, f"{layer}.heads", f"{layer}.attention", seq_len),
            neuron_group(
                self.model,
                f"{layer}.ffn",
                f"{layer}.feed_forward.intermediate_dense",
                f"{layer}.feed_forward.output_dense",
                seq_len,
            ),
        ]
