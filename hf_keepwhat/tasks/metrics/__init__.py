"""evaluate metric modules shipped with the package.

`evaluate.load("accuracy")` fetches the metric's script from the Hub, which fails offline; these
modules are loaded from the package folder instead, with the same `evaluate` interface.
"""

from __future__ import annotations

import os

import evaluate

METRICS_DIR = os.path.dirname(__file__)
AVAILABLE = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "mean_average_precision",
    "roc_auc",
    "wer",
    "cer",
)


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Loads one of the shipped metrics with `evaluate.load`, offline.

    Args:
        name: One of `AVAILABLE`.
    """
    if name not in AVAILABLE:
        raise ValueError(f"Unknown metric {name!r}; hf_keepwhat ships {AVAILABLE}.")
    return evaluate.load(os.path.join(METRICS_DIR, name))
