"""Whole-layer removal: a pre-LN layer with no head and no neuron left becomes `x + bias`.

For every family with pre-LN layers: the emptied layers become `PassThroughLayer`s that are still
instances of the stock layer class (so `output_hidden_states` records them), the pruned model
computes what the masked one did, parameters and MACs are what the accounting predicted, and the
saved model loads by both routes. Post-LN layers are never passed through.
"""

import pytest
import torch
from conftest import real_asset
from test_artifacts import _job, _run_route
from test_clap import tiny_clap_audio
from tiny_models import (
    tiny_ast,
    tiny_conformer,
    tiny_hubert,
    tiny_unispeech,
    tiny_unispeech_sat,
    tiny_wav2vec2,
    tiny_wavlm,
    tiny_whisper,
)
from transformers import AutoModel, AutoModelForAudioClassification, WhisperForAudioClassification

from hf_keepwhat import (
    GatedStraightThroughMask,
    MaskConfig,
    MaskModel,
    PassThroughLayer,
    get_mask_model,
)
from hf_keepwhat.profiling import count_macs, count_params

STABLE = dict(do_stable_layer_norm=True, feat_extract_norm="layer")
WAVEFORM = ("input_values", (2, 1600))
AUTO_CLASSES = {
    "AutoModel": AutoModel,
    "AutoModelForAudioClassification": AutoModelForAudioClassification,
}

# name -> (builder, main input name, input shape, Auto class)
PRE_LN = {
    "whisper": (tiny_whisper, "input_features", (2, 16, 100), "AutoModelForAudioClassification"),
    "ast": (tiny_ast, "input_values", (2, 64, 16), "AutoModelForAudioClassification"),
    "clap": (tiny_clap_audio, "input_features", (2, 1, 64, 16), "AutoModel"),
    **{
        name: (lambda build=build: build(**STABLE), *WAVEFORM, "AutoModelForAudioClassification")
        for name, build in {
            "wav2vec2": tiny_wav2vec2,
            "hubert": tiny_hubert,
            "unispeech": tiny_unispeech,
            "unispeech-sat": tiny_unispeech_sat,
            "wavlm": tiny_wavlm,
        }.items()
    },
}


def _masked_with_two_layers_emptied(build, seed=0):
    """Random masks, and every unit of the first two layers that can be passed through gone."""
    model = build()
    with torch.no_grad():  # zero-initialised biases would make any pass-through bias right
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_()
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        count = int(torch.randint(1, group.num_units + 1, (1,), generator=generator))
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[:count])
    emptied = mm.emptiable_layers[:2]
    for layer in emptied:
        for name in layer.groups:
            mm.set_kept(name, [])
    return mm.eval(), [layer.layer for layer in emptied]


@pytest.mark.parametrize("family", sorted(PRE_LN))
def test_emptied_pre_ln_layers_pass_through_exactly(family):
    build, input_name, shape, _ = PRE_LN[family]
    mm, emptied = _masked_with_two_layers_emptied(build)
    assert len(emptied) == 2
    inputs = {input_name: torch.randn(*shape)}
    with torch.no_grad():
        masked = mm(**inputs, output_hidden_states=True)
        pruned = mm.prune()
        out = pruned(**inputs, output_hidden_states=True)
    assert (masked[0] - out[0]).abs().max().item() <= 1e-4
    # Hidden states are recorded by hooks on the stock layer class: the pass-through is one.
    assert len(out.hidden_states) == len(masked.hidden_states)
    for expected, got in zip(masked.hidden_states, out.hidden_states, strict=True):
        assert (expected - got).abs().max().item() <= 1e-4
    stock_layer = type(mm.model.get_submodule(emptied[0]))
    for path in emptied:
        layer = pruned.get_submodule(path)
        assert isinstance(layer, PassThroughLayer) and isinstance(layer, stock_layer)
        assert [name for name, _ in layer.named_parameters()] == ["bias"]

    report = mm.sparsity_report()["total"]
    assert report["layers_passed_through"] == emptied
    backbone = pruned.get_submodule(mm.layout.backbone_path)
    reference = mm.reference_inputs
    assert count_params(backbone) == report["params_remaining"]
    assert count_macs(backbone, reference) == report["macs_remaining"]


def test_pass_through_cost_counts_only_when_the_whole_layer_is_empty():
    build, *_ = PRE_LN["whisper"]
    mm = get_mask_model(build(), MaskConfig(budget="params", target_sparsity=0.0))
    hidden = mm.model.config.d_model
    mm.set_kept("encoder.layers.1.heads", [])
    heads_only = mm.sparsity_report()["total"]["params_remaining"]
    mm.set_kept("encoder.layers.1.ffn", [])
    both = mm.sparsity_report()["total"]
    fc1, fc2 = mm.model.encoder.layers[1].fc1, mm.model.encoder.layers[1].fc2
    # FFN weights and fc1's bias go with the neurons; the two layer norms and the two output
    # biases go with the layer, which keeps one bias of its own.
    ffn = fc1.weight.numel() + fc1.bias.numel() + fc2.weight.numel()
    assert heads_only - both["params_remaining"] == ffn + 4 * hidden + 2 * hidden - hidden
    assert both["layers_passed_through"] == ["encoder.layers.1"]
    assert mm.realised_sparsity() == pytest.approx(both["params_removed_fraction"])


def test_only_pre_ln_layers_are_passed_through():
    cases = {
        "wav2vec2 (post-LN)": (tiny_wav2vec2, []),
        "conformer (a layer norm ends every layer)": (tiny_conformer, []),
        # Layer 0 computes the relative position bias every later layer reads.
        "wavlm stable": (lambda: tiny_wavlm(**STABLE), [1, 2]),
        "whisper": (tiny_whisper, [0, 1, 2]),
    }
    for case, (build, expected) in cases.items():
        mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
        layers = [int(p.layer.rpartition(".")[2]) for p in mm.emptiable_layers]
        assert layers == expected, case
    # A layer whose FFN is not masked can never be empty.
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0, unit_kinds=["heads"]))
    assert mm.emptiable_layers == []


@pytest.mark.slow
def test_passed_through_models_load_by_both_routes(tmp_path):
    jobs, expected = [], []
    for family in ("whisper", "clap", "wavlm"):
        build, input_name, shape, auto = PRE_LN[family]
        pruned = _masked_with_two_layers_emptied(build)[0].prune()
        inputs = {input_name: torch.randn(1, *shape[1:])}
        job, output = _job(tmp_path, family, pruned, inputs, auto, lambda m, i: m(**i)[0])
        jobs.append(job)
        expected.append(output)
        loaded = AUTO_CLASSES[auto].from_pretrained(tmp_path / family)
        assert type(loaded) is type(pruned)
        card = (tmp_path / family / "README.md").read_text()
        passed_through = pruned.keepwhat_record["report"]["total"]["layers_passed_through"]
        for path in passed_through:
            assert type(loaded.get_submodule(path)) is type(pruned.get_submodule(path))
            assert f"`{path}`" in card.split("are pass-throughs")[1]
    for route, module in (
        ("keepwhat", "hf_keepwhat.standalone"),
        ("remote", "transformers_modules"),
    ):
        results = _run_route(route, jobs, tmp_path)
        for result, output in zip(results, expected, strict=True):
            assert result["class"].startswith(module), result["class"]
            assert (result["output"] - output).abs().max().item() <= 1e-6


def test_real_whisper_layer_passes_through_exactly():
    """Real weights: trained layer norms and output biases, none of them zero."""
    path = real_asset("KEEPWHAT_WHISPER_TINY")
    model = WhisperForAudioClassification.from_pretrained(path, num_labels=3).eval()
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0, max_input_seconds=3))
    generator = torch.Generator().manual_seed(0)
    for group in mm.unit_groups:
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[::2])
    for name in mm.emptiable_layers[2].groups:
        mm.set_kept(name, [])
    inputs = {"input_features": torch.randn(2, 80, 300)}
    with torch.no_grad():
        pruned = mm.prune()
        diff = (mm(**inputs).logits - pruned(**inputs).logits).abs().max().item()
    assert diff <= 1e-4
    assert isinstance(pruned.encoder.layers[2], PassThroughLayer)
    report = mm.sparsity_report()["total"]
    assert count_params(pruned.encoder) == report["params_remaining"]


def test_gates_remove_a_whole_layer_and_learn_from_loss_and_budget(tmp_path):
    """`mask_type="straight_through_gated"`: turning a layer's two gates off (its unit logits
    untouched) passes the layer through, exactly, with the accounting and the adapter following;
    the gates receive the gradient their units carry, from the task loss and the budget alike."""
    torch.manual_seed(0)
    build, input_name, shape, _ = PRE_LN["whisper"]
    config = MaskConfig(budget="macs", target_sparsity=0.5, mask_type="straight_through_gated")
    mm = get_mask_model(build(), config)
    inputs = {input_name: torch.randn(*shape), "labels": torch.tensor([0, 1])}
    mm(**inputs).loss.backward()
    for mask in mm.masks.values():  # every unit and gate on: the gate's is its units' sum
        assert mask.gate.grad.abs().item() > 0
        torch.testing.assert_close(mask.gate.grad, mask.logits.grad.sum().reshape(1))

    layer = mm.emptiable_layers[1]
    before = mm.realised_sparsity()
    with torch.no_grad():
        for name in layer.groups:
            mm.get_mask(name).gate.fill_(-1.0)
    assert all(mm.get_mask(name).logits.min() > 0 for name in layer.groups)
    report = mm.sparsity_report()["total"]
    assert report["layers_passed_through"] == [layer.layer]
    assert mm.realised_sparsity() > before
    mm.eval()
    with torch.no_grad():
        masked = mm(**{input_name: inputs[input_name]}).logits
        pruned = mm.prune()
        assert (masked - pruned(**{input_name: inputs[input_name]}).logits).abs().max() <= 1e-4
    assert isinstance(pruned.get_submodule(layer.layer), PassThroughLayer)
    assert count_macs(pruned.encoder, mm.reference_inputs) == report["macs_remaining"]

    mm.save_pretrained(tmp_path)
    torch.manual_seed(0)  # the same base weights, so the adapter's fingerprint matches
    restored = MaskModel.from_pretrained(build(), tmp_path)
    assert type(restored.get_mask(layer.groups[0])) is GatedStraightThroughMask
    assert restored.sparsity_report()["total"]["layers_passed_through"] == [layer.layer]
