"""A latency table with chosen prices: what `keepwhat profile-latency` would write, without the
machine's noise, for tests whose subject is what reads the table (fits, budgets, recipes)."""

import copy

from tiny_models import tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.latency import LatencyTable, feature_names
from hf_keepwhat.latency_profile import sample_variants, variant_features

KINDS = ["conv", "ffn", "heads"]


def priced_table(model=None, **coefficients) -> dict:
    """A torch table for `model` (default: the tiny Whisper) at 1 s: intercept 0.1 ms, every
    other price 0 unless given.

    Args:
        model: The model the table prices (only its shapes are read; it is left unwrapped).
        **coefficients: Prices by feature name (`mmacs_ffn`, `layers`, ...).
    """
    model = tiny_whisper() if model is None else copy.deepcopy(model)
    mm = get_mask_model(model, MaskConfig(max_input_seconds=1, budget="macs"))
    prices = {"intercept": 0.1, **dict.fromkeys(feature_names(KINDS), 0.0), **coefficients}
    table = LatencyTable(
        prices, KINDS, 1.0, 0.0, int(mm.costs.totals["macs"]), "torch", "cpu", 1, 1, 1.0
    )
    full = variant_features(mm, sample_variants(mm, 1)[0])
    table.dense_predicted_ms = table.predict(full)
    return table.to_dict()
