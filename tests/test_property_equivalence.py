"""Property-based: for random small configs and random hard masks, pruning is exact."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_wav2vec2, tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.profiling import count_macs, count_params

SHAPES = st.fixed_dictionaries(
    {
        "layers": st.integers(1, 3),
        "heads": st.integers(1, 4),
        "head_dim": st.integers(2, 6),
        "ffn": st.integers(1, 24),
        "seed": st.integers(0, 2**16),
        # Bit i set: every head and neuron of layer i removed (a whole-layer removal).
        "emptied_layers": st.integers(0, 7),
    }
)


def _set_random_masks(mm, seed, emptied_layers=0):
    """Random hard masks: each group keeps each unit with its own random probability; the
    layers whose bit is set in `emptied_layers` lose every head and neuron."""
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        keep = torch.rand(group.num_units, generator=generator) < torch.rand(1, generator=generator)
        mm.set_kept(group.name, torch.nonzero(keep).flatten().tolist())
    if emptied_layers:
        layers = mm.layout.layers_path
        for group in mm.unit_groups:
            index = group.mask_module.removeprefix(layers + ".").partition(".")[0]
            if group.kind in ("heads", "ffn") and emptied_layers >> int(index) & 1:
                mm.set_kept(group.name, [])
    mm.eval()


def _check(mm, inputs, shape):
    with torch.no_grad():  # non-zero biases: a pass-through must add the right ones
        for name, param in mm.model.named_parameters():
            if name.endswith("bias"):
                param.normal_()
    _set_random_masks(mm, shape["seed"], shape["emptied_layers"])
    with torch.no_grad():
        pruned = mm.prune()
        assert (mm(**inputs).logits - pruned(**inputs).logits).abs().max().item() <= 1e-4
    report = mm.sparsity_report()["total"]
    backbone = pruned.get_submodule(mm.layout.backbone_path)
    assert count_params(backbone) == report["params_remaining"]
    reference = mm.reference_inputs
    assert count_macs(backbone, reference) == report["macs_remaining"]


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
    _check(mm, {"input_features": torch.randn(2, 16, 100)}, shape)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPES, st.booleans())
def test_wav2vec2(shape, stable_layer_norm):
    torch.manual_seed(shape["seed"])
    hidden = shape["heads"] * shape["head_dim"] * 2  # the positional conv needs groups | hidden
    model = tiny_wav2vec2(
        hidden_size=hidden,
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=stable_layer_norm,  # pre-LN layers: emptied, they pass through
    )
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    _check(mm, {"input_values": torch.randn(2, 1600)}, shape)


@pytest.mark.slow
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
    _check(mm, {"input_values": torch.randn(2, 1600)}, shape)


class _RandomCNN(torch.nn.Module):
    """A chain of conv blocks whose norm, activation, pooling and depthwise stage vary."""

    def __init__(self, widths, norms, depthwise, pools):
        super().__init__()
        nn = torch.nn
        self.blocks = nn.ModuleList()
        channels = 1
        for width, norm, separable, pool in zip(widths, norms, depthwise, pools, strict=True):
            layers = [nn.Conv1d(channels, width, 3, padding=1)]
            if norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif norm == "group":
                layers.append(nn.GroupNorm(width, width))
            layers.append(nn.GELU())
            if separable:
                layers.append(nn.Conv1d(width, width, 5, padding=2, groups=width))
            if pool:
                layers.append(nn.MaxPool1d(2))
            self.blocks.append(nn.Sequential(*layers))
            channels = width
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=-1))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 3).flatmap(
        lambda n: st.fixed_dictionaries(
            {
                "widths": st.lists(st.integers(1, 9), min_size=n, max_size=n),
                "norms": st.lists(
                    st.sampled_from(["batch", "group", None]), min_size=n, max_size=n
                ),
                "depthwise": st.lists(st.booleans(), min_size=n, max_size=n),
                "pools": st.lists(st.booleans(), min_size=n, max_size=n),
                "seed": st.integers(0, 2**16),
            }
        )
    )
)
def test_plain_cnn(shape):
    torch.manual_seed(shape["seed"])
    seed = shape.pop("seed")
    model = _RandomCNN(**shape)
    for module in model.modules():  # non-trivial norm statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    inputs = {"x": torch.randn(2, 1, 16)}
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0), example_inputs=inputs)
    # Every block's channels (the last one's into the head); a "depthwise" conv of width 1 has
    # groups=1, so it is an ordinary conv with chains of its own.
    ordinary = sum(d and w == 1 for w, d in zip(shape["widths"], shape["depthwise"], strict=True))
    assert len(mm.unit_groups) == len(shape["widths"]) + ordinary
    _set_random_masks(mm, seed)
    with torch.no_grad():
        pruned = mm.prune()
        assert (mm(**inputs) - pruned(**inputs)).abs().max().item() <= 1e-4
    report = mm.sparsity_report()["total"]
    assert count_params(pruned) == report["params_remaining"]
    assert count_macs(pruned, inputs) == report["macs_remaining"]
