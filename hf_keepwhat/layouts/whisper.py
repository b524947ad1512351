"""Whisper encoder: attention heads, `fc1`->`fc2` neurons and `conv1` output channels.

Whisper's encoder always sees its full input window (`2 * max_source_positions` mel frames), so
MACs are counted for that window whatever `MaskConfig.macs_input_seconds` says. The window itself
can be shortened (`MaskConfig.max_input_seconds`): it is only the length of the positional table.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from transformers import WhisperFeatureExtractor

from ..config import MaskConfig
from ..runtime import KeepWhatWhisperFeatureExtractor
from ..units import UnitGroup
from .base import Family, Layout, channel_group, head_group, layers_with_units, neuron_group

# 100 log-mel frames per second, halved by conv2's stride: 50 encoder positions per second.
POSITIONS_PER_SECOND = 50


class WhisperLayout(Layout):
    """Layout of every model holding a `WhisperEncoder` (e.g. `WhisperForAudioClassification`)."""

    families = (
        Family(
            "whisper",
            "WhisperConfig",
            {"WhisperForAudioClassification": "AutoModelForAudioClassification"},
            pass_through={"WhisperEncoderLayer": "tensor"},
            feature_extractor=KeepWhatWhisperFeatureExtractor.__name__,
        ),
    )
    shortens_input_window = True

    @functools.cached_property
    def backbone_path(self) -> str:
        for path, module in self.model.named_modules():
            if type(module).__name__ == "WhisperEncoder":
                return path
        raise ValueError(f"{type(self.model).__name__} has no WhisperEncoder to mask.")

    @property
    def layers_path(self) -> str:
        return self.path("layers")

    @property
    def sequence_length(self) -> int:
        """Encoder positions of the input window."""
        return self.backbone.config.max_source_positions

    def set_input_window(self, seconds: float):
        """Keeps the first `seconds` of the positional table and sets `max_source_positions`.

        A clip keeps the positional embeddings it had in the full window; attention no longer
        spans the padding up to 30 s, which is what makes the short window cheap.

        Args:
            seconds: The new window in seconds, a multiple of 0.02 s (one encoder position),
                e.g. 3 or 0.5.

        Returns:
            What undoes it.
        """
        encoder = self.backbone
        positions = round(seconds * POSITIONS_PER_SECOND)
        whole = abs(positions - seconds * POSITIONS_PER_SECOND) < 1e-6
        if not whole or not 0 < positions <= encoder.max_source_positions:
            longest = encoder.max_source_positions / POSITIONS_PER_SECOND
            raise ValueError(
                f"max_input_seconds={seconds} must be a multiple of {1 / POSITIONS_PER_SECOND:g} s "
                f"(one encoder position) in (0, {longest:g}] for this Whisper model, e.g. 1 or 0.5."
            )
        full = encoder.max_source_positions
        table = encoder.embed_positions
        shortened = nn.Embedding(
            positions, table.embedding_dim, device=table.weight.device, dtype=table.weight.dtype
        )
        shortened.weight.data.copy_(table.weight.data[:positions])
        shortened.requires_grad_(table.weight.requires_grad)
        encoder.embed_positions = shortened
        encoder.max_source_positions = self.model.config.max_source_positions = positions

        def undo():
            encoder.embed_positions = table
            encoder.max_source_positions = self.model.config.max_source_positions = full

        return undo

    @classmethod
    def adapt_feature_extractor(cls, feature_extractor, mask_config: MaskConfig):
        """Sets `chunk_length` to the shortened window, so saved models pad clips to it; a
        fractional window needs `KeepWhatWhisperFeatureExtractor` (the stock class cannot)."""
        seconds = mask_config.max_input_seconds
        if seconds is None or getattr(feature_extractor, "chunk_length", None) == seconds:
            return feature_extractor
        data = feature_extractor.to_dict()
        for derived in ("n_samples", "nb_max_frames", "feature_extractor_type"):  # re-derived
            data.pop(derived, None)
        if seconds != int(seconds):
            return KeepWhatWhisperFeatureExtractor.from_dict({**data, "chunk_length": seconds})
        data["chunk_length"] = int(seconds)
        own = type(feature_extractor)  # a user's subclass stays; ours is needed for fractions only
        stock = WhisperFeatureExtractor if own is KeepWhatWhisperFeatureExtractor else own
        return stock.from_dict(data)

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        encoder = self.backbone
        mel_frames = self.sequence_length * encoder.conv1.stride[0] * encoder.conv2.stride[0]
        return {"input_features": torch.zeros(1, encoder.config.num_mel_bins, mel_frames)}

    def describe_reference_input(self) -> str:
        return f"{self.sequence_length / POSITIONS_PER_SECOND:g} s input window"

    def stock_config_updates(self) -> dict:
        widths = {layer.fc1.out_features for layer in layers_with_units(self.backbone.layers)}
        return {"encoder_ffn_dim": widths.pop()} if len(widths) == 1 else {}

    def unit_groups(self) -> list[UnitGroup]:
        encoder, seq_len = self.backbone, self.sequence_length
        mel_frames = self.reference_inputs()["input_features"].shape[-1]
        groups = [
            channel_group(
                self.model,
                self.path("conv1.channels"),
                producer=self.path("conv1"),
                consumer=self.path("conv2"),
                frames={
                    self.path("conv1"): mel_frames // encoder.conv1.stride[0],
                    self.path("conv2"): seq_len,
                },
            )
        ]
        for i in range(len(encoder.layers)):
            layer = self.path(f"layers.{i}")
            groups.append(head_group(self.model, f"{layer}.heads", f"{layer}.self_attn", seq_len))
            groups.append(
                neuron_group(self.model, f"{layer}.ffn", f"{layer}.fc1", f"{layer}.fc2", seq_len)
            )
        return groups
