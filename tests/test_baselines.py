"""Structured-pruning baselines: the requested budget, the right units."""

import torch
from tiny_models import tiny_wav2vec2, tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.baselines import set_structured_masks, unit_scores


def test_magnitude_masks_hit_the_budget_and_keep_the_largest_units():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    realised = set_structured_masks(mm, 0.4, "l1")
    # One keep fraction for every group, and 4 heads a layer here: the steps are coarse.
    assert 0.3 < realised <= 0.45
    assert set_structured_masks(mm, 0.6, "l1") > realised
    group = next(g for g in mm.unit_groups if g.name == "encoder.layers.1.ffn")
    scores = unit_scores(mm, group, "l1", torch.Generator())
    kept = mm.kept_units()[group.name]
    removed = sorted(set(range(group.num_units)) - set(kept.tolist()))
    assert scores[kept].min() >= scores[removed].max()


def test_random_masks_depend_on_the_seed():
    masks = []
    for seed in (0, 1):
        mm = get_mask_model(tiny_wav2vec2(), MaskConfig(target_sparsity=0.0))
        set_structured_masks(mm, 0.1, "random", seed)
        masks.append(mm.kept_units())
    assert any(not torch.equal(masks[0][k], masks[1][k]) for k in masks[0])
