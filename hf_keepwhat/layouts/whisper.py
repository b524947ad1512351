"""Whisper encoder: attention heads, `fc1`->`fc2` neurons and `conv1` output channels.

Whisper's encoder always sees its full input window (`2 * max_source_positions` mel frames), so
MACs are counted for that window whatever `MaskConfig.macs_input_seconds` says.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import MaskConfig
from ..units import UnitGroup
from .base import Layout, channel_group, head_group, neuron_group


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

    def reference_inputs(self, model: nn.Module, config: MaskConfig) -> dict[str, torch.Tensor]:
        encoder = model.get_submodule(self.backbone_path(model))
        mel_frames = encoder.config.max_source_positions * encoder.conv1.stride[0]
        mel_frames *= encoder.conv2.stride[0]
        return {"input_features": torch.zeros(1, encoder.config.num_mel_bins, mel_frames)}

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
                frames={f"{prefix}.conv1": mel_frames // encoder.conv1.stride[0], f"{prefix}.conv2": seq_len},
            )
        ]
        for i in range(len(encoder.layers)):
            layer = f"{prefix}.layers.{i}"
            groups.append(head_group(model, f"{layer}.heads", f"{layer}.self_attn", seq_len))
            groups.append(
                neuron_group(model, f"{layer}.ffn", f"{layer}.fc1", f"{layer}.fc2", seq_len)
            )
        return groups
