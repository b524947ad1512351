"""Property-based: for random small configs and random hard masks, pruning is exact."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_wav2vec2, tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.profiling import count_params

SHAPES = st.fixed_dictionaries(
    {
        "layers": st.integers(1, 3),
        "heads": st.integers(1, 4),
        "head_dim": st.integers(2, 6),
        "ffn": st.integers(1, 24),
        "seed": st.integers(0, 2**16),
    }
)


def _check(mm, inputs, seed):
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        keep = torch.rand(group.num_units, generator=generator) < torch.rand(1, generator=generator)
        mm.set_kept(group.name, torch.nonzero(keep).flatten().tolist())
    mm.eval()
    with torch.no_grad():
        pruned = mm.prune()
        assert (mm(**inputs).logits - pruned(**inputs).logits).abs().max().item() <= 1e-4
    backbone = pruned.get_submodule(mm.layout.backbone_path(pruned))
    assert count_params(backbone) == mm.sparsity_report()["total"]["params_remaining"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES)
def test_whisper_encoder(shape):
    torch.manual_seed(shape["seed"])
    model = tiny_whisper(
        d_model=shape["heads"] * shape["head_dim"] * 2,  # sinusoidal positions need an even width
        encoder_layers=shape["layers"],
        encoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_attention_heads=1,
    )
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    _check(mm, {"input_features": torch.randn(2, 16, 100)}, shape["seed"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES)
def test_wav2vec2(shape):
    torch.manual_seed(shape["seed"])
    hidden = shape["heads"] * shape["head_dim"] * 2  # the positional conv needs groups | hidden
    model = tiny_wav2vec2(
        hidden_size=hidden,
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        num_conv_pos_embedding_groups=2,
    )
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    _check(mm, {"input_values": torch.randn(2, 1600)}, shape["seed"])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.sampled_from(["relative", "rotary"]))
def test_conformer(shape, positions):
    from tiny_models import tiny_conformer

    torch.manual_seed(shape["seed"])
    hidden = shape["heads"] * shape["head_dim"] * 2
    model = tiny_conformer(
        hidden_size=hidden,
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        position_embeddings_type=positions,
    )
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    _check(mm, {"input_values": torch.randn(2, 1600)}, shape["seed"])
