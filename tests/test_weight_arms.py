"""The Torch-Pruning arm of benchmarks/weight_arms.py: whole heads and FFN neurons to a MACs
budget, d_model and the conv stem kept, and the finding that its Whisper does not load back."""

import pytest
import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_whisper

from benchmarks.weight_arms import _loads_back, torch_pruned
from hf_keepwhat.profiling import count_macs

# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow


def test_torch_pruning_meets_the_macs_budget_with_whole_heads_and_loads_back_refused(tmp_path):
    model = tiny_whisper()
    data = _synthetic_dataset(8)
    batch = {
        "input_features": torch.tensor(data["input_features"]),
        "labels": torch.tensor(data["labels"]),
    }
    features = {"input_features": batch["input_features"][:1]}

    def macs_of(m):
        return count_macs(m.encoder, features)

    dense = macs_of(model)
    pruned, ratio = torch_pruned(model, "taylor", int(0.6 * dense), batch, macs_of)
    assert 0 < ratio < 1 and macs_of(pruned) <= 0.6 * dense
    for layer in pruned.encoder.layers:
        attention = layer.self_attn
        assert attention.q_proj.out_features == attention.num_heads * attention.head_dim
        assert attention.out_proj.out_features == 32 and layer.fc2.out_features == 32  # d_model
    assert pruned.encoder.conv2.out_channels == 32
    assert pruned(**features).logits.shape == (1, 3)
    assert _loads_back(pruned, str(tmp_path)).startswith("no: ")
