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
    if kind == "latency" and config.latency_table is None:
        raise ValueError(
            "--max_latency_ms needs --latency_table: measure it on your runtime with "
            "`keepwhat profile-latency MODEL --seconds S --out latency.json`."
        )
    probe = dataclasses.replace(config, target_sparsity=0.0, last_layer=None, budget=kind)
    total = get_mask_model(model, probe).sparsity_report()["total"]
    if kind == "latency":
        return float(total["latency_ms_original"])
    return int(total[f"{kind}_original"])


def model_from_config(path: str, build: Callable) -> object:
    """A randomly initialised model of the architecture `path` names: a Hub id, a model folder
    or a `config.json` file (only its shapes are read; no weights are loaded).

    Args:
        path: Where the config is.
        build: `config -> model`, e.g. `AutoModelForAudioClassification.from_config`.
    """
    return build(AutoConfig.from_pretrained(path))


def resolve_budget(requested: tuple[str, object], config: MaskConfig, own_model, build) -> dict:
    """The budget kind and target sparsity that meet a request, with the costs behind them.

    Args:
        requested: `BudgetArguments.requested()`: (argument name, model path or a number).
        config: The run's MaskConfig (window, reference input).
        own_model: A model of the architecture being pruned (random weights are enough).
        build: `config -> model`, to build a model named by `match_*_of` from its config.

    Returns:
        `{"asked": name, "value": ..., "budget": kind, "model_cost": ..., "allowed_cost": ...,
        "target_sparsity": ...}`; the target is rounded up (to 1e-4) so that meeting it keeps the
        cost at most the allowed one.
    """
    name, value = requested
    kind = KINDS[name]
    own = backbone_cost(own_model, config, kind)
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
    target = math.ceil((1 - allowed / own) * 1e4) / 1e4
    return {
        "asked": name,
        "value": value,
        "budget": kind,
        "model_cost": own,
        "allowed_cost": allowed,
        "target_sparsity": target,
    }
