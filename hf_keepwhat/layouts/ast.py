"""Audio Spectrogram Transformer (AST): attention heads and MLP neurons.

AST has no convolution whose channels could go (its patch embedding feeds the residual stream),
so `conv` units do not apply; it sees a fixed number of patches, like Whisper's fixed window.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import MaskConfig
from ..units import UnitGroup
from .base import Layout, head_group, layers_with_units, neuron_group

logger = logging.getLogger(__name__)


class ASTLayout(Layout):
    """Layout of `ASTModel` and `ASTForAudioClassification`."""

    model_types = ("audio-spectrogram-transformer",)

    def layers_path(self, model: nn.Module) -> str:
        return f"{self.backbone_path(model)}.layers".lstrip(".")

    def reference_inputs(self, model: nn.Module, config: MaskConfig) -> dict[str, torch.Tensor]:
        c = model.config
        return {"input_values": torch.zeros(1, c.max_length, c.num_mel_bins)}

    def describe_reference_input(self, model: nn.Module, config: MaskConfig) -> str:
        return f"{model.config.max_length} spectrogram frames"

    def stock_config_updates(self, model: nn.Module) -> dict:
        layers = model.get_submodule(self.layers_path(model))
        widths = {layer.mlp.fc1.out_features for layer in layers_with_units(layers)}
        return {"intermediate_size": widths.pop()} if len(widths) == 1 else {}

    def unit_groups(self, model: nn.Module, config: MaskConfig) -> list[UnitGroup]:
        if "conv" in config.unit_kinds and config.unit_kinds != ["conv"]:
            logger.warning("AST has no prunable conv channels: conv units are ignored for it.")
        embeddings = model.get_submodule(self.backbone_path(model) or "").embeddings
        seq_len = embeddings.position_embeddings.shape[1]  # patches + CLS + distillation token
        groups = []
        layers = self.layers_path(model)
        for i in range(len(model.get_submodule(layers))):
            layer = f"{layers}.{i}"
            groups.append(
                head_group(
                    model,
                    f"{layer}.heads",
                    f"{layer}.attention",
                    seq_len,
                    out="o_proj",
                    num_heads_attr="num_attention_heads",
                )
            )
            groups.append(
                neuron_group(model, f"{layer}.mlp", f"{layer}.mlp.fc1", f"{layer}.mlp.fc2", seq_len)
            )
        return groups
