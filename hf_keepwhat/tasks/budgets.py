"""Budgets in the user's terms: "as cheap as model X" or "at most N MACs / parameters /
milliseconds", turned into the `budget` and `target_sparsity` a `MaskConfig` takes.

The question a user brings is "I can afford the MACs of model X: do I take X, or a bigger model
pruned to X?". The target is computed here, never by hand (0.6112 for Whisper base at tiny.en's
encoder MACs with a 1 s window), and recorded with the costs it came from, so the report can say
which model the result competes with and by how much.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from transformers import AutoConfig

from ..config import MaskConfig
from ..model import get_mask_model

#: BudgetArguments field -> the MaskConfig budget it counts.
KINDS = {
    "match_macs_of": "macs",
    "max_macs": "macs",
    "match_params_of": "params",
    "max_params": "params",
    "max_latency_ms": "latency",
}


def backbone_cost(model, config: MaskConfig, kind: str) -> float:
    """The backbone's `kind` ("macs", "params", or "latency": the milliseconds `config`'s latency
    table predicts) as hf_keepwhat counts it, at `config`'s input window and reference input, with
    every layer (no `last_layer` cut).

    Args:
        model: A model `get_mask_model` supports (its weights do not matter: only shapes).
        config: The run's MaskConfig (its window sets the MACs).
        kind: "macs", "params" or "latency".
    """
    return _costs(model, config, kind)[0]


def fastest_cost(model, config: MaskConfig, kind: str) -> float:
    """The lowest `kind` that masks of `config`'s unit kinds can reach on the whole backbone (no
    `last_layer` cut): every masked unit pruned, what no mask removes still counted (embeddings,
    the units each group must keep and, for latency, the runtime's fixed cost).

    Args:
        model: A model `get_mask_model` supports (its weights do not matter: only shapes).
        config: The run's MaskConfig (unit kinds, window, latency table).
        kind: "macs", "params" or "latency".
    """
    return _costs(model, config, kind)[1]


def _costs(model, config: MaskConfig, kind: str) -> tuple[float, float]:
    if kind == "latency" and config.latency_table is None:
        raise ValueError(
            "--max_latency_ms needs --latency_table: measure it on your runtime with "
            "`keepwhat profile-latency MODEL --seconds S --out latency.json`."
        )
    probe = dataclasses.replace(config, target_sparsity=0.0, last_layer=None, budget=kind)
    mm = get_mask_model(model, probe)
    total = mm.sparsity_report()["total"]
    own = (
        float(total["latency_ms_original"]) if kind == "latency" else int(total[f"{kind}_original"])
    )
    return own, own * (1 - mm.budget.max_removed_fraction())


def model_from_config(path: str, build: Callable) -> object:
    """A randomly initialised model of the architecture `path` names: a Hub id, a model folder
    or a `config.json` file (only its shapes are read; no weights are loaded).

    Args:
        path: Where the config is.
        build: `config -> model`, e.g. `AutoModelForAudioClassification.from_config`.
    """
    return build(AutoConfig.from_pretrained(path))


def resolve_budget(
    requested: tuple[str, object], config: MaskConfig, own_model, build, may_cut: bool = False
) -> dict:
    """The budget kind and target sparsity that meet a request, with the costs behind them.

    Args:
        requested: `BudgetArguments.requested()`: (argument name, model path or a number).
        config: The run's MaskConfig (window, reference input).
        own_model: A model of the architecture being pruned (random weights are enough).
        build: `config -> model`, to build a model named by `match_*_of` from its config.
        may_cut: Whether the run may drop top layers (`--last_layer` an index or "auto"), which
            can reach below what masks alone reach.

    Returns:
        `{"asked": name, "value": ..., "budget": kind, "model_cost": ..., "allowed_cost": ...,
        "target_sparsity": ..., "fastest_cost": ...}`; the target is rounded up (to 1e-4) so
        that meeting it keeps the cost at most the allowed one. An allowed cost below
        `fastest_cost` is refused unless the run may cut layers.
    """
    name, value = requested
    kind = KINDS[name]
    own, fastest = _costs(own_model, config, kind)
    if name.startswith("match_"):
        allowed = backbone_cost(model_from_config(str(value), build), config, kind)
    else:
        allowed = float(value) if kind == "latency" else int(value)
    if allowed <= 0:
        raise ValueError(f"--{name} {value}: the allowed {kind} must be positive.")
    if allowed >= own:
        raise ValueError(
            f"--{name} {value}: {allowed:,} {kind} is not below the model's own {own:,.6g}: "
            "nothing needs removing. Use the model as it is, or ask for less."
        )
    if allowed < fastest and not may_cut:
        raise ValueError(
            f"--{name} {value}: {allowed:,.6g} {kind} is below the {fastest:,.6g} that pruning "
            f"every unit of kinds {config.unit_kinds} leaves (what no mask removes: embeddings, "
            "the units each group keeps, a runtime's fixed cost). Ask for at least that, mask "
            "more unit kinds, or drop the top layers with --last_layer."
        )
    target = math.ceil((1 - allowed / own) * 1e4) / 1e4
    return {
        "asked": name,
        "value": value,
        "budget": kind,
        "model_cost": own,
        "allowed_cost": allowed,
        "target_sparsity": target,
        "fastest_cost": fastest,
    }
