"""Wav2Vec2-Conformer (the block MusicFM is built of): heads with relative or rotary position
embeddings, both feed-forward modules, the convolution module's depthwise channels, and the
feature encoder's conv channels as in wav2vec2.

A head owns its rows of `linear_q/k/v`, its columns of `linear_out`, and with relative positions
its rows of `linear_pos` and of the per-head `pos_bias_u/v`. With rotary positions the rotation
reshapes the layer *input* into the original number of heads, so `num_heads` must stay as it was:
q/k/v infer the head count from their width. A conv-module channel `c` owns rows `c` and `c + C`
of `pointwise_conv1` (the GLU halves), channel `c` of the depthwise conv and of the batch norm, and
column `c` of `pointwise_conv2`.
"""

from __future__ import annotations

from torch import nn

from ..units import UnitGroup
from .base import neuron_group, task_family
from .wav2vec2 import Wav2Vec2Layout


class ConformerLayout(Wav2Vec2Layout):
    """Layout of the `Wav2Vec2Conformer...` models."""

    # Every conformer layer ends in its own LayerNorm: none is a pass-through.
    families = (
        task_family("wav2vec2-conformer", "Wav2Vec2Conformer", config="Wav2Vec2ConformerConfig"),
    )

    def ffn_widths(self, layer: nn.Module) -> list[int]:
        return [
            layer.ffn1.intermediate_dense.out_features,
            layer.ffn2.intermediate_dense.out_features,
        ]

    def layer_groups(self, layer: str, seq_len: int) -> list[UnitGroup]:
        attention = f"{layer}.self_attn"
        module = self.model.get_submodule(attention)
        head_dim = module.head_size
        projections = ["linear_q", "linear_k", "linear_v"]
        frames = {f"{attention}.{p}": seq_len for p in (*projections, "linear_out")}
        # Scores and weighted sum: 2 T^2 d MACs a head.
        extra = 2 * seq_len * seq_len * head_dim
        per_unit_tensors = {}
        if module.position_embeddings_type == "relative":
            projections.append("linear_pos")
            positions = 2 * seq_len - 1  # relative offsets -(T-1)..T-1, computed for batch 1
            frames[f"{attention}.linear_pos"] = positions
            extra += seq_len * positions * head_dim  # query x projected positions
            per_unit_tensors = {f"{attention}.pos_bias_u": 0, f"{attention}.pos_bias_v": 0}
        heads = UnitGroup(
            name=f"{layer}.heads",
            kind="heads",
            num_units=module.num_heads,
            unit_width=head_dim,
            mask_module=f"{attention}.linear_out",
            mask_dim=-1,
            producers=[f"{attention}.{p}" for p in projections],
            consumers=[f"{attention}.linear_out"],
            per_unit_tensors=per_unit_tensors,
            empty_module=attention,
            frames=frames,
            extra_macs_per_unit=extra,
        )
        conv = f"{layer}.conv_module"
        channels = self.model.get_submodule(f"{conv}.depthwise_conv").out_channels
        conv_channels = UnitGroup(
            name=f"{layer}.conv_module.channels",
            kind="conv",
            num_units=channels,
            unit_width=1,
            mask_module=f"{conv}.pointwise_conv2",
            mask_dim=1,
            producers=[],
            glu_producers=[f"{conv}.pointwise_conv1"],
            depthwise=[f"{conv}.depthwise_conv"],
            norms=[f"{conv}.batch_norm"],
            consumers=[f"{conv}.pointwise_conv2"],
            frames={
                f"{conv}.{m}": seq_len
                for m in ("pointwise_conv1", "depthwise_conv", "pointwise_conv2")
            },
            min_kept=1,
        )
        ffns = [
            neuron_group(
                self.model,
                f"{layer}.{name}",
                f"{layer}.{name}.intermediate_dense",
                f"{layer}.{name}.output_dense",
                seq_len,
            )
            for name in ("ffn1", "ffn2")
        ]
        return [ffns[0], heads, conv_channels, ffns[1]]
