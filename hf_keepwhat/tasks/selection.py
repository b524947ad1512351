"""The best checkpoint on validation among those that meet the budget.

Trainer's `load_best_model_at_end` keeps the checkpoint with the best `metric_for_best_model`.
This callback writes that metric, `eval_{metric}_within_budget`: the validation metric where the
masks remove at least the target (less a tolerance), and the worst possible value elsewhere, so
that a checkpoint taken while the target still warms up, or one that drifted off it, is never
chosen. Trainer then saves, resumes and restores the choice itself.
"""

from __future__ import annotations

import math

from transformers import TrainerCallback


def within_budget_name(metric: str) -> str:
    """The name `metric_for_best_model` takes for `metric` (without Trainer's `eval_` prefix)."""
    return f"{metric}_within_budget"


class BudgetMetricCallback(TrainerCallback):
    """Adds `eval_{metric}_within_budget` and `eval_removed_fraction` to every evaluation.

    Args:
        mm: The MaskModel being trained.
        metric: The task's metric (e.g. "accuracy"), as `compute_metrics` names it.
        tolerance: A checkpoint meets the budget when it removes at least `target - tolerance`.
        greater_is_better: Whether a higher metric is better (False for WER).
    """

    def __init__(self, mm, metric: str, tolerance: float, greater_is_better: bool = True):
        self.mm = mm
        self.metric = metric
        self.tolerance = tolerance
        self.worst = -math.inf if greater_is_better else math.inf

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics is None:
            return
        config = self.mm.mask_config
        removed = self.mm.sparsity_report()["total"][f"{config.budget}_removed_fraction"]
        meets = removed >= config.target_sparsity - self.tolerance
        value = metrics.get(f"eval_{self.metric}")
        metrics["eval_removed_fraction"] = removed
        metrics[f"eval_{within_budget_name(self.metric)}"] = value if meets else self.worst
