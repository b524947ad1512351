"""Which depth a task needs: per-layer linear probes on cached pooled features, chosen on
validation (the paper drops the layers above the representation a task uses; the frontier found
that cutting first, then masking, is what competes at 50% of MACs and more).

For each candidate last layer K the backbone cut to layers 0..K runs once over the train and
validation splits (`get_mask_model(..., last_layer=K)`, so the features are exactly what the cut
model computes, final norm included); its time-averaged output feeds a logistic regression
(scikit-learn) fitted on train and scored on validation, and cross-validated over train and
validation together. The recipe chooses on the folds' mean (`select_depth_cross_validated`,
which knows the budget): a carved validation of a few dozen clips chose three depths on three
seeds.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..config import MaskConfig
from ..model import get_mask_model

logger = logging.getLogger("hf_keepwhat.recipe")


@torch.no_grad()
def pooled_features(backbone, dataset, collator, batch_size: int = 32) -> tuple:
    """The backbone's time-averaged last hidden state of every example, and the labels.

    Examples are batched only when the collator pads nothing (Whisper's fixed window); otherwise
    one at a time, so that no padding frame enters an average.

    Args:
        backbone: The (cut) backbone module.
        dataset: Featurized examples with `labels`.
        collator: The recipe's collator.
        batch_size: Examples per forward pass where no padding is needed.
    """
    first = collator([dict(dataset[0])])
    size = 1 if "attention_mask" in first else batch_size
    features, labels = [], []
    for start in range(0, len(dataset), size):
        batch = collator([dict(dataset[i]) for i in range(start, min(start + size, len(dataset)))])
        labels.append(batch.pop("labels").numpy())
        batch.pop("attention_mask", None)
        output = backbone(**batch)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        features.append(hidden.float().mean(dim=1).numpy())
    return np.concatenate(features), np.concatenate(labels)


def _probe(seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))


def _probe_accuracy(train: tuple, scored: dict[str, tuple], seed: int) -> dict[str, float]:
    probe = _probe(seed).fit(*train)
    return {"train": float(probe.score(*train))} | {
        name: float(probe.score(*data)) for name, data in scored.items()
    }


def cross_validated_accuracy(pooled: tuple, folds: int, seed: int) -> tuple[float, float]:
    """A probe's accuracy by stratified k-fold cross-validation over `pooled` (features, labels):
    the folds' mean and its standard error (the folds' standard deviation / sqrt(k)). Every
    labelled clip scores once, instead of a carved validation of a few dozen deciding alone.

    Args:
        pooled: Features and labels (train and validation together).
        folds: k; lowered to the smallest class's size when a class has fewer clips.
        seed: The folds' and probes' seed.
    """
    features, labels = pooled
    counts = np.bincount(labels)
    folds = max(2, min(folds, int(counts[counts > 0].min())))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(_probe(seed), features, labels, cv=splitter)
    return float(scores.mean()), float(scores.std(ddof=1) / np.sqrt(folds))


def layer_probes(
    model, config: MaskConfig, train, validation, collator, seed: int = 0, others=None, folds=5
) -> list:
    """A linear probe per candidate last layer: `[{"last_layer", "macs_removed_fraction",
    "train_accuracy", "validation_accuracy", "cv_accuracy", "cv_standard_error"}]` (and
    `"accuracy"` on every split of `others`), deepest first. `cv_*`: `folds`-fold
    cross-validation over train and validation together (`cross_validated_accuracy`).

    Args:
        model: The dense model with its task head (single-label classification); restored as it
            was after each cut (`MaskModel.unload`).
        config: The run's MaskConfig (window, budget); its `last_layer` is ignored.
        train, validation: Featurized splits with single labels.
        collator: Batches examples for the model.
        seed: The probes' seed.
        others: More featurized splits to score each probe on, by name (reported, not chosen on).
        folds: k of the cross-validation.
    """
    rows = []
    layers = None
    candidate = None
    while candidate is None or candidate >= 0:
        probe_config = dataclasses.replace(
            config, target_sparsity=0.0, budget="macs", last_layer=candidate
        )
        mm = get_mask_model(model, probe_config).eval()
        if layers is None:
            layers = len(mm.model.get_submodule(mm.layout.layers_path))
        backbone = mm.layout.backbone
        try:
            scored = {"validation": validation, **(others or {})}
            pooled = {
                name: pooled_features(backbone, data, collator) for name, data in scored.items()
            }
            fitted_on = pooled_features(backbone, train, collator)
            fitted = _probe_accuracy(fitted_on, pooled, seed)
            both = tuple(
                np.concatenate([a, b]) for a, b in zip(fitted_on, pooled["validation"], strict=True)
            )
            cv_mean, cv_error = cross_validated_accuracy(both, folds, seed)
            removed = mm.sparsity_report()["total"]["macs_removed_fraction"]
        finally:
            mm.unload()
        last = layers - 1 if candidate is None else candidate
        row = {
            "last_layer": last,
            "macs_removed_fraction": removed,
            "train_accuracy": fitted["train"],
            "validation_accuracy": fitted["validation"],
            "cv_accuracy": cv_mean,
            "cv_standard_error": cv_error,
        }
        if others:
            row["accuracy"] = {name: fitted[name] for name in others}
        rows.append(row)
        logger.info(
            "depth: layers 0-%d (%.1f%% of MACs dropped): probe validation accuracy %.4f, "
            "%d-fold accuracy %.4f +- %.4f",
            last,
            100 * removed,
            fitted["validation"],
            folds,
            cv_mean,
            cv_error,
        )
        candidate = last - 1
    return rows


def select_last_layer(rows: list[dict]) -> int:
    """The last layer to keep by the carved validation alone: the best probe validation
    accuracy, the shallowest among ties (the rule before cross-validation; the frontier's).

    Args:
        rows: `layer_probes`' table.
    """
    best = max(r["validation_accuracy"] for r in rows)
    return min(r["last_layer"] for r in rows if r["validation_accuracy"] == best)


def select_depth_cross_validated(rows: list[dict], removable: float = 1.0) -> int:
    """The last layer to keep, on the folds' mean accuracy, knowing the budget: the cut nearest
    the budget (the most MACs dropped within `removable`), unless another cut beats its mean by
    more than the larger of their two standard errors (then the best of those). Moving off the
    budget's cut in either direction needs evidence: on a few hundred clips, the cuts around it
    differ by less than their folds' noise, and choosing on the bare mean kept a different depth
    on each seed (docs/research.md, the small regime's "Choices made on each seed's validation").

    Args:
        rows: `layer_probes`' table (with `cv_accuracy` and `cv_standard_error`).
        removable: The fraction of MACs the budget removes (1.0: no budget on MACs).
    """
    within = [r for r in rows if r["macs_removed_fraction"] <= removable + 1e-9] or [
        min(rows, key=lambda r: r["macs_removed_fraction"])
    ]
    anchor = max(within, key=lambda r: r["macs_removed_fraction"])
    clearly_better = [
        r
        for r in rows
        if r["cv_accuracy"] - anchor["cv_accuracy"]
        > max(r["cv_standard_error"], anchor["cv_standard_error"])
    ]
    best = max(clearly_better, key=lambda r: r["cv_accuracy"], default=anchor)
    return best["last_layer"]
