"""CLAP's audio encoder (HTS-AT, Swin): window-attention heads with their relative-position bias
columns, and MLP neurons; exact pruning, accounting and both load routes."""

import pytest
import torch
from test_artifacts import _job, _run_route
from transformers import AutoModel, ClapAudioConfig, ClapAudioModel

from hf_keepwhat import EmptyAttention, MaskConfig, get_mask_model
from hf_keepwhat.profiling import count_macs, count_params


def tiny_clap_audio() -> ClapAudioModel:
    """Two Swin stages (2 and 4 heads, window 4) on a 64 x 16 spectrogram, no fusion."""
    config = ClapAudioConfig(
        window_size=4,
        num_mel_bins=16,
        spec_size=32,
        patch_size=4,
        patch_stride=[4, 4],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        depths=[2, 2],
        num_attention_heads=[2, 4],
        mlp_ratio=2.0,
        enable_fusion=False,
    )
    model = ClapAudioModel(config).eval()
    with torch.no_grad():  # zero-initialised tables would hide a wrong column slice
        for name, param in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                param.normal_()
    return model


def _masked(seed):
    mm = get_mask_model(tiny_clap_audio(), MaskConfig(target_sparsity=0.0))
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        count = int(torch.randint(1, group.num_units + 1, (1,), generator=generator))
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[:count])
    mm.set_kept("audio_encoder.layers.0.blocks.1.heads", [])
    mm.set_kept("audio_encoder.layers.1.blocks.0.mlp", [])
    return mm.eval()


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_clap_equals_masked_at_predicted_cost(seed):
    mm = _masked(seed)
    inputs = {"input_features": torch.randn(2, 1, 64, 16)}
    with torch.no_grad():
        masked = mm(**inputs).pooler_output
        pruned = mm.prune()
        out = pruned(**inputs).pooler_output
    assert isinstance(pruned, ClapAudioModel)
    assert (masked - out).abs().max().item() <= 1e-4
    assert sum(isinstance(m, EmptyAttention) for m in pruned.modules()) == 1

    report = mm.sparsity_report()["total"]
    reference = mm.reference_inputs
    assert count_params(pruned.audio_encoder) == report["params_remaining"]
    assert count_macs(pruned.audio_encoder, reference) == report["macs_remaining"]
    assert report["params_remaining"] < report["params_original"]


def test_clap_groups_and_the_ignored_conv_kind(caplog):
    mm = get_mask_model(tiny_clap_audio(), MaskConfig(target_sparsity=0.0))
    assert "no prunable conv channels" in caplog.text
    heads = [g for g in mm.unit_groups if g.kind == "heads"]
    assert [g.num_units for g in heads] == [2, 2, 4, 4]
    assert all(
        list(g.per_unit_tensors)
        == [g.producers[0].replace("query", "relative_position_bias_table")]
        for g in heads
    )
    with pytest.raises(ValueError, match="last_layer does not apply"):
        get_mask_model(tiny_clap_audio(), MaskConfig(last_layer=0))


@pytest.mark.slow
def test_pruned_clap_loads_by_both_routes(tmp_path):
    pruned = _masked(0).prune()
    inputs = {"input_features": torch.randn(1, 1, 64, 16)}
    job, expected = _job(tmp_path, "clap", pruned, inputs, "AutoModel", lambda m, i: m(**i)[0])
    loaded = AutoModel.from_pretrained(tmp_path / "clap")
    assert type(loaded) is type(pruned)
    for route, module in (
        ("keepwhat", "hf_keepwhat.standalone"),
        ("remote", "transformers_modules"),
    ):
        (result,) = _run_route(route, [job], tmp_path)
        assert result["class"].startswith(module), result["class"]
        assert (result["output"] - expected).abs().max().item() <= 1e-6
