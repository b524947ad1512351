"""Whisper encoder: attention heads, `fc1`->`fc2` neurons and `conv1` output channels.

Whisper's encoder always sees its full input window (`2 * max_source_positions` mel frames), so
MACs are counted for that window whatever `MaskConfig.macs_input_seconds` says. The window itself
can be shortened (`MaskConfig.max_input_seconds`): it is only the length of the positional table.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MaskConfig
from ..units import UnitGroup
from .base import Layout, channel_group, head_group, layers_with_units, neuron_group

# 100 log-mel frames per second, halved by conv2's stride: 50 encoder positions per second.
POSITIONS_PER_SECOND = 50


class WhisperLayout(Layout):
    """Layout of every model holding a `WhisperEncoder` (e.g. `WhisperForAudioClassification`)."""

    model_types = ("whisper",)

    def backbone_path(self, model: nn.Module) -> str:
        for path, module in model.named_modules():
            if type(module).__name__ == "WhisperEncoder":
                return path
        raise ValueError(f"{type(model).__name__} has no WhisperEncoder to mask.")

    def layers_path(self, model: nn.Module) -> str:
        return f"{self.backbone_path(model)}.layers".lstrip(".")

    def set_input_window(self, model: nn.Module, seconds: float) -> None:
        """Keeps the first `seconds` of the positional table and sets `max_source_positions`.

        A clip keeps the positional embeddings it had in the full window; attention no longer
        spans the padding up to 30 s, which is what makes the short window cheap.

        Args:
            model: The transformers model.
            seconds: The new window in whole seconds (the feature extractor's `chunk_length` is
                an integer), e.g. 3.
        """
        encoder = model.get_submodule(self.backbone_path(model))
        positions = seconds * POSITIONS_PER_SECOND
        if seconds != int(seconds) or not 0 < positions <= encoder.max_source_positions:
            longest = encoder.max_source_positions / POSITIONS_PER_SECOND
            raise ValueError(
                f"max_input_seconds={seconds} must be a whole number of seconds in "
                f"(0, {longest:g}] for this Whisper model."
            )
        positions = int(positions)
        table = encoder.embed_positions
        shortened = nn.Embedding(positions, table.embedding_dim, device=table.weight.device)
        shortened.weight.data.copy_(table.weight.data[:positions])
        shortened.requires_grad_(table.weight.requires_grad)
        encoder.embed_positions = shortened
        encoder.max_source_positions = positions
        model.config.max_source_positions = positions

    def adapt_feature_extractor(self, feature_extractor, config: MaskConfig):
        """Sets `chunk_length` to the shortened window, so saved models pad clips to it."""
        seconds = config.max_input_seconds
        if seconds is None or getattr(feature_extractor, "chunk_length", None) == seconds:
            return feature_extractor
        data = feature_extractor.to_dict()
        for derived in ("n_samples", "nb_max_frames"):  # recomputed from chunk_length
            data.pop(derived, None)
        data["chunk_length"] = int(seconds)  # its sample counts are derived from it as integers
        return type(feature_extractor).from_dict(data)

    def reference_inputs(self, model: nn.Module, config: MaskConfig) -> dict[str, torch.Tensor]:
        encoder = model.get_submodule(self.backbone_path(model))
        mel_frames = encoder.config.max_source_positions * encoder.conv1.stride[0]
        mel_frames *= encoder.conv2.stride[0]
        return {"input_features": torch.zeros(1, encoder.config.num_mel_bins, mel_frames)}

    def describe_reference_input(self, model: nn.Module, config: MaskConfig) -> str:
        encoder = model.get_submodule(self.backbone_path(model))
        return f"{encoder.config.max_source_positions / POSITIONS_PER_SECOND:g} s input window"

    def stock_config_updates(self, model: nn.Module) -> dict:
        encoder = model.get_submodule(self.backbone_path(model))
        widths = {layer.fc1.out_features for layer in layers_with_units(encoder.layers)}
        return {"encoder_ffn_dim": widths.pop()} if len(widths) == 1 else {}

    def unit_groups(self, model: nn.Module, config: MaskConfig) -> list[UnitGroup]:
        prefix = self.backbone_path(model)
        encoder = model.get_submodule(prefix)
        seq_len = encoder.config.max_source_positions
        mel_frames = self.reference_inputs(model, config)["input_features"].shape[-1]
        groups = [
            channel_group(
                model,
                f"{prefix}.conv1.channels",
                producer=f"{prefix}.conv1",
                consumer=f"{prefix}.conv2",
                frames={
                    f"{prefix}.conv1": mel_frames // encoder.conv1.stride[0],
                    f"{prefix}.conv2": seq_len,
                },
            )
        ]
        for i in range(len(encoder.layers)):
            layer = f"{prefix}.layers.{i}"
            groups.append(head_group(model, f"{layer}.heads", f"{layer}.self_attn", seq_len))
            groups.append(
                neuron_group(model, f"{layer}.ffn", f"{layer}.fc1", f"{layer}.fc2", seq_len)
            )
        return groups
