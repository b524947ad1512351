"""Which depth a task needs: per-layer linear probes on cached pooled features, chosen on
validation (the paper drops the layers above the representation a task uses; the frontier found
that cutting first, then masking, is what competes at 50% of MACs and more).

For each candidate last layer K the backbone cut to layers 0..K runs once over the train and
validation splits (`get_mask_model(..., last_layer=K)`, so the features are exactly what the cut
model computes, final norm included); its time-averaged output feeds a logistic regression
(scikit-learn) fitted on train and scored on validation. The choice is the best validation
accuracy, the shallowest layer among ties.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
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


def _probe_accuracy(train: tuple, scored: dict[str, tuple], seed: int) -> dict[str, float]:
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(*train)
    return {"train": float(probe.score(*train))} | {
        name: float(probe.score(*data)) for name, data in scored.items()
    }


def layer_probes(
    model, config: MaskConfig, train, validation, collator, seed: int = 0, others=None
) -> list:
    """A linear probe per candidate last layer: `[{"last_layer", "macs_removed_fraction",
    "train_accuracy", "validation_accuracy"}]` (and `"accuracy"` on every split of `others`),
    deepest first.

    Args:
        model: The dense model with its task head (single-label classification); restored as it
            was after each cut (`MaskModel.unload`).
        config: The run's MaskConfig (window, budget); its `last_layer` is ignored.
        train, validation: Featurized splits with single labels.
        collator: Batches examples for the model.
        seed: The probes' seed.
        others: More featurized splits to score each probe on, by name (reported, not chosen on).
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
            fitted = _probe_accuracy(
                pooled_features(backbone, train, collator),
                {name: pooled_features(backbone, data, collator) for name, data in scored.items()},
                seed,
            )
            removed = mm.sparsity_report()["total"]["macs_removed_fraction"]
        finally:
            mm.unload()
        last = layers - 1 if candidate is None else candidate
        row = {
            "last_layer": last,
            "macs_removed_fraction": removed,
            "train_accuracy": fitted["train"],
            "validation_accuracy": fitted["validation"],
        }
        if others:
            row["accuracy"] = {name: fitted[name] for name in others}
        rows.append(row)
        logger.info(
            "depth: layers 0-%d (%.1f%% of MACs dropped): probe validation accuracy %.4f",
            last,
            100 * removed,
            fitted["validation"],
        )
        candidate = last - 1
    return rows


def select_last_layer(rows: list[dict]) -> int:
    """The last layer to keep: the best probe validation accuracy, the shallowest among ties.

    Args:
        rows: `layer_probes`' table.
    """
    best = max(r["validation_accuracy"] for r in rows)
    return min(r["last_layer"] for r in rows if r["validation_accuracy"] == best)
