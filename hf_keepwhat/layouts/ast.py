"""Audio Spectrogram Transformer (AST): attention heads and MLP neurons.

AST has no convolution whose channels could go (its patch embedding feeds the residual stream),
so `conv` units do not apply; it sees a fixed number of patches, like Whisper's fixed window.
"""

from __future__ import annotations

import logging

import torch

from ..units import UnitGroup
from .base import Family, Layout, head_group, layers_with_units, neuron_group

logger = logging.getLogger(__name__)


class ASTLayout(Layout):
    """Layout of `ASTModel` and `ASTForAudioClassification`."""

    families = (
        Family(
            "audio-spectrogram-transformer",
            "ASTConfig",
            {
                "ASTModel": "AutoModel",
                "ASTForAudioClassification": "AutoModelForAudioClassification",
            },
            pass_through={"ASTLayer": "tensor"},
        ),
    )

    @property
    def layers_path(self) -> str:
        return self.path("layers")

    @property
    def sequence_length(self) -> int:
        """Patches + CLS + distillation token."""
        return self.backbone.embeddings.position_embeddings.shape[1]

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        c = self.model.config
        return {"input_values": torch.zeros(1, c.max_length, c.num_mel_bins)}

    def describe_reference_input(self) -> str:
        return f"{self.model.config.max_length} spectrogram frames"

    def stock_config_updates(self) -> dict:
        layers = self.model.get_submodule(self.layers_path)
        widths = {layer.mlp.fc1.out_features for layer in layers_with_units(layers)}
        return {"intermediate_size": widths.pop()} if len(widths) == 1 else {}

    def unit_groups(self) -> list[UnitGroup]:
        kinds = self.mask_config.unit_kinds
        if "conv" in kinds and kinds != ["conv"]:
            logger.warning("AST has no prunable conv channels: conv units are ignored for it.")
        seq_len, model = self.sequence_length, self.model
        groups = []
        for i in range(len(model.get_submodule(self.layers_path))):
            layer = f"{self.layers_path}.{i}"
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
