"""Invariants 1 and 3: the pruned model computes what the masked one did, at the predicted cost."""

import pytest
import torch
from tiny_models import FAMILIES

from hf_keepwhat import EmptyAttention, MaskConfig, PassThroughLayer, get_mask_model
from hf_keepwhat.profiling import count_macs, count_params

# Families whose layers normalise before attention and FFN: an emptied layer is a pass-through.
PRE_LN = {"whisper", "ast", "wav2vec2-layer-norm"}


def _random_masks(mm, generator):
    """Random hard masks, with one layer's heads, another layer's FFN and every head and neuron
    of the last layer removed."""
    for group in mm.unit_groups:
        n = group.num_units
        keep = torch.randperm(n, generator=generator)[
            : int(torch.randint(1, n + 1, (1,), generator=generator))
        ]
        mm.set_kept(group.name, keep.tolist())
    heads = [g.name for g in mm.unit_groups if g.kind == "heads"]
    ffns = [g.name for g in mm.unit_groups if g.kind == "ffn"]
    mm.set_kept(heads[0], [])
    mm.set_kept(ffns[1], [])
    last = mm.model.get_submodule(mm.layout.layers_path)
    last = f"{mm.layout.layers_path}.{len(last) - 1}."
    for group in mm.unit_groups:
        if group.kind in ("heads", "ffn") and group.mask_module.startswith(last):
            mm.set_kept(group.name, [])


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_equals_masked(family, seed):
    build, input_name, shape = FAMILIES[family]
    mm = get_mask_model(build(), MaskConfig(budget="params", target_sparsity=0.0))
    _random_masks(mm, torch.Generator().manual_seed(seed))
    mm.eval()
    inputs = {input_name: torch.randn(*shape)}
    with torch.no_grad():
        masked = mm(**inputs).logits
        pruned_model = mm.prune()
        pruned = pruned_model(**inputs).logits
    assert isinstance(pruned_model, type(mm.model))
    assert (masked - pruned).abs().max().item() <= 1e-4

    empty = [m for m in pruned_model.modules() if isinstance(m, EmptyAttention)]
    passed_through = [m for m in pruned_model.modules() if isinstance(m, PassThroughLayer)]
    if family == "wavlm":  # its attention keeps running with no head: it carries layer 0's bias
        assert not empty and pruned_model.wavlm.encoder.layers[0].attention.num_heads == 0
    elif family in PRE_LN:  # the emptied last layer is a pass-through, EmptyAttention and all
        assert len(empty) == 1 and len(passed_through) == 1
    else:  # post-LN: the emptied last layer still normalises, so it stays, attention emptied
        assert len(empty) == 2 and not passed_through

    # Invariant 3: realised parameters and MACs are what the accounting predicted, exactly.
    report = mm.sparsity_report()["total"]
    backbone = pruned_model.get_submodule(mm.layout.backbone_path)
    reference = mm.reference_inputs
    assert count_params(backbone) == report["params_remaining"]
    assert count_macs(backbone, reference) == report["macs_remaining"]
    assert report["params_remaining"] < report["params_original"]


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_per_group_report_adds_up(family):
    build, _, _ = FAMILIES[family]
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
    _random_masks(mm, torch.Generator().manual_seed(3))
    report = mm.sparsity_report()
    for key in ("params", "macs"):
        removed = sum(row[f"removed_{key}"] for row in report["groups"])
        total = report["total"]
        assert total[f"{key}_original"] - removed == total[f"{key}_remaining"]


def test_conv_groups_only_where_removal_is_exact():
    build, _, _ = FAMILIES["wav2vec2"]
    names = [
        g.name
        for g in get_mask_model(build(), MaskConfig(target_sparsity=0.0)).unit_groups
        if g.kind == "conv"
    ]
    # Layer 0 (GroupNorm per channel) and layer 1 (no norm); never the last layer, whose channels
    # feed the feature projection's LayerNorm.
    assert names == [
        "wav2vec2.feature_extractor.conv_layers.0.channels",
        "wav2vec2.feature_extractor.conv_layers.1.channels",
    ]
    for family in ("wav2vec2-layer-norm", "data2vec-audio"):
        groups = get_mask_model(FAMILIES[family][0](), MaskConfig(target_sparsity=0.0)).unit_groups
        assert not [g for g in groups if g.kind == "conv"]


def test_whisper_attention_head_count_is_rewritten():
    build, input_name, shape = FAMILIES["whisper"]
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.1.heads", [0, 3])
    pruned = mm.prune()
    attention = pruned.encoder.layers[1].self_attn
    assert attention.num_heads == 2
    assert attention.q_proj.out_features == 2 * attention.head_dim
    assert attention.out_proj.in_features == 2 * attention.head_dim


def test_prune_leaves_the_mask_model_usable():
    build, input_name, shape = FAMILIES["whisper"]
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.ffn", [1, 2])
    inputs = {input_name: torch.randn(*shape)}
    with torch.no_grad():
        before = mm(**inputs).logits
        pruned = mm.prune()
        # The pruned model owns its tensors (pruning shares them only while it runs, to hold a
        # large model once): changing every one of them leaves the masked model as it was.
        for tensor in [*pruned.parameters(), *pruned.buffers()]:
            tensor.add_(1) if tensor.is_floating_point() else tensor.zero_()
        after = mm(**inputs).logits
    assert torch.equal(before, after)


@pytest.mark.parametrize("family", ["whisper", "wav2vec2"])
def test_conv_layer_with_every_channel_masked(family):
    """torch has no zero-channel convolution: one channel stays, silenced, and it is counted."""
    build, input_name, shape = FAMILIES[family]
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
    for group in mm.unit_groups:
        if group.kind == "conv":
            mm.set_kept(group.name, [])
    mm.eval()
    inputs = {input_name: torch.randn(*shape)}
    with torch.no_grad():
        pruned = mm.prune()
        assert (mm(**inputs).logits - pruned(**inputs).logits).abs().max().item() <= 1e-4
    backbone = pruned.get_submodule(mm.layout.backbone_path)
    assert count_params(backbone) == mm.sparsity_report()["total"]["params_remaining"]


def test_round_to_keeps_multiples_chosen_by_logit():
    build, input_name, shape = FAMILIES["whisper"]
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0))
    with torch.no_grad():
        for mask in mm.masks.values():
            mask.logits.copy_(torch.linspace(-1, 1, mask.num_units)[torch.randperm(mask.num_units)])
    mm.set_kept("encoder.layers.1.heads", [])
    rounded = mm.rounded_kept_units(8)
    for group in mm.unit_groups:
        count = len(rounded[group.name])
        kept = mm.kept_units()[group.name]
        width = count * group.unit_width
        assert count == 0 if len(kept) == 0 else width % 8 == 0 or count == group.num_units
        if group.kind == "heads":  # head_dim channels each: already aligned, nothing added
            assert torch.equal(rounded[group.name], kept)
        assert set(kept.tolist()) <= set(rounded[group.name].tolist())
        logits = mm.get_mask(group.name).logits
        extra = sorted(set(rounded[group.name].tolist()) - set(kept.tolist()))
        left = sorted(set(range(group.num_units)) - set(rounded[group.name].tolist()))
        if extra and left:
            assert logits[extra].min() >= logits[left].max()

    pruned = mm.prune(round_to=8)
    for name, units in rounded.items():  # the reference: the masks switched to the rounded sets
        mm.set_kept(name, units.tolist())
    mm.eval()
    inputs = {input_name: torch.randn(*shape)}
    with torch.no_grad():
        assert (mm(**inputs).logits - pruned(**inputs).logits).abs().max().item() <= 1e-4
    backbone = pruned.get_submodule(mm.layout.backbone_path)
    assert count_params(backbone) == pruned.keepwhat_record["report"]["total"]["params_remaining"]
    assert pruned.encoder.layers[0].fc1.out_features % 8 == 0
