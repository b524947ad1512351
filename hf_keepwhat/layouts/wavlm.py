"""WavLM: the wav2vec2 structure, with attention that needs rebuilding before heads can go.

WavLM's attention gates a relative position bias per head, computed from the head's slice of the
layer input, and layer 0 computes that bias once for every layer. Its family's preparation swaps
each attention for `KeepWhatWavLMAttention` (same weights, same outputs, module calls, an index of
kept heads), so masks can sit on `out_proj`'s input and a pruned layer still reads the right input
slices and bias slices. Layer 0's bias embedding serves all layers, so it is never pruned.
"""

from __future__ import annotations

from ..units import UnitGroup
from .base import head_group, neuron_group, task_family
from .wav2vec2 import Wav2Vec2Layout

# gru_rel_pos_linear maps each head's input slice to 8 values per frame.
GATE_WIDTH = 8


class WavLMLayout(Wav2Vec2Layout):
    """Layout of `WavLMModel`, `WavLMForSequenceClassification` and `WavLMForCTC`."""

    families = (
        task_family(
            "wavlm",
            "WavLM",
            pass_through={"WavLMEncoderLayerStableLayerNorm": "with_position_bias"},
            prepare="wavlm_attention",
        ),
    )

    def pass_through_layers(self) -> list[str]:
        """Stable-layer-norm layers but layer 0, which computes the bias every layer shares."""
        first = f"{self.layers_path}.0"
        return [path for path in super().pass_through_layers() if path != first]

    def layer_groups(self, layer: str, seq_len: int) -> list[UnitGroup]:
        attention = f"{layer}.attention"
        module = self.model.get_submodule(attention)
        heads = head_group(self.model, f"{layer}.heads", attention, seq_len)
        heads.empty_module = None  # the block runs with no head left: it carries layer 0's bias
        heads.per_unit_tensors = {
            f"{attention}.gru_rel_pos_const": 1,
            f"{attention}.kept_heads": 0,
        }
        # Each head's gate projects its slice of the layer input.
        input_slice = module.embed_dim // module.total_heads
        heads.extra_macs_per_unit += seq_len * input_slice * GATE_WIDTH
        ffn = neuron_group(
            self.model,
            f"{layer}.ffn",
            f"{layer}.feed_forward.intermediate_dense",
            f"{layer}.feed_forward.output_dense",
            seq_len,
        )
        return [heads, ffn]
