"""The weight-training table (benchmarks/weight_arms.py): each arm's accuracy in and out of
source with its seed spread and a paired interval against fine-tuning the small model, beside
its MACs, latency, training time and peak memory."""

from __future__ import annotations

import statistics

import numpy as np
from render_table import markdown_table

from hf_keepwhat.tasks.uncertainty import bits_of, paired_interval

ARMS = {
    "finetune": "tiny.en, every weight fine-tuned (transformers' example)",
    "finetune_layers0-1": "tiny.en cut to layers 0-1, then every weight fine-tuned",
    "tp_taylor_finetune": "Torch-Pruning, Taylor, to 50% of MACs, then fine-tuned",
    "tp_magnitude_finetune": "Torch-Pruning, magnitude, to 50% of MACs, then fine-tuned",
    "tp_taylor_head": "Torch-Pruning, Taylor, to 50% of MACs, head on the frozen result",
    "masks_frozen": "ours: masks on the frozen backbone (the paper's; `--train_backbone false`), 50% of MACs",
    "masks_then_finetune": "ours: frozen masks, then every kept weight fine-tuned, 50% of MACs",
    "masks_train_backbone": "ours: masks over trainable weights (the default), 50% of MACs",
}
REFERENCE = "finetune"


def _by_arm(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["arm"], []).append(row)
    return {arm: sorted(runs, key=lambda r: r["seed"]) for arm, runs in out.items()}


def _mean_spread(values: list[float]) -> str:
    spread = f" ({100 * (max(values) - min(values)):.1f})" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.1f}{spread}"


def _test_bits(runs: list[dict]) -> np.ndarray | None:
    if not all(r.get("correct") for r in runs):
        return None
    return np.stack([bits_of(r["correct"]["test"], r["test_examples"]) for r in runs])


def _gap(runs: list[dict], reference: list[dict] | None) -> str:
    """Mean test accuracy minus the reference arm's, with the 95% bootstrap interval over the
    test clips (the same clips for every arm and seed) and the seeds."""
    if reference is None or runs is reference:
        return "-"
    mine, theirs = _test_bits(runs), _test_bits(reference)
    gap = statistics.mean(r["test"] for r in runs) - statistics.mean(r["test"] for r in reference)
    if mine is None or theirs is None:
        return f"{100 * gap:+.1f}"
    low, high = paired_interval(mine, theirs)
    return f"{100 * gap:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def arms_table(rows: list[dict]) -> list[str]:
    """One line an arm: seeds, validation and test accuracy (mean, seed spread), the gap to
    fine-tuning the small model, MACs as a fraction of the dense model's, batch-1 latency,
    training time and peak RSS.

    Args:
        rows: `weight_arms.py` rows of one regime.
    """
    arms = _by_arm(rows)
    reference = arms.get(REFERENCE)
    cells = []
    for arm in sorted(arms, key=lambda a: list(ARMS).index(a) if a in ARMS else len(ARMS)):
        runs = arms[arm]
        depths = {r["depth"] for r in runs if r.get("depth") is not None}
        cells.append(
            [
                ARMS.get(arm, arm),
                ", ".join(str(r["seed"]) for r in runs),
                _mean_spread([r["validation"] for r in runs]),
                _mean_spread([r["test"] for r in runs]),
                _gap(runs, reference),
                f"{statistics.mean(r['macs_fraction_of_dense'] for r in runs):.2f}",
                # Medians: a run timed while the machine was loaded moves a mean by itself.
                f"{statistics.median(r['latency_ms'] for r in runs):.1f}",
                f"{statistics.median(r['train_seconds'] for r in runs) / 60:.1f}",
                f"{max(r['peak_rss_bytes'] for r in runs) / 2**30:.1f}",
                ", ".join(f"0-{d}" for d in sorted(depths)) or "-",
            ]
        )
    header = [
        "arm", "seeds", "validation", "test (out of source)", "test vs fine-tuned tiny.en",
        "MACs / dense", "latency (ms)", "training (min)", "peak RSS (GiB)", "depth kept",
    ]  # fmt: skip
    return markdown_table(header, cells)


OURS = {
    "masks_frozen": "frozen masks",
    "masks_then_finetune": "frozen masks then fine-tuned",
    "masks_train_backbone": "masks over trainable weights",
}


def ours_on_validation(rows: list[dict]) -> str:
    """Our modes compared as the recipe's default was chosen, on validation: each one's mean
    validation accuracy over the seeds every one of them ran.

    Args:
        rows: `weight_arms.py` rows of one regime.
    """
    ours = {arm: runs for arm, runs in _by_arm(rows).items() if arm in OURS}
    if len(ours) < 2:
        return ""
    seeds = set.intersection(*({r["seed"] for r in runs} for runs in ours.values()))
    means = {
        arm: statistics.mean(r["validation"] for r in runs if r["seed"] in seeds)
        for arm, runs in ours.items()
    }
    ranked = sorted(means, key=means.get, reverse=True)
    return (
        f"Ours on validation (seeds {', '.join(map(str, sorted(seeds)))}, which every mode of "
        "ours ran): " + ", ".join(f"{OURS[a]} {100 * means[a]:.1f}" for a in ranked) + "."
    )


def choices_table(rows: list[dict]) -> list[str]:
    """What each seed's run chose on its small validation: the depth kept by cross-validation
    and by validation alone, and the dense probe (its best checkpoint on validation), with the
    spread of the probe's test accuracy over the seeds.

    Args:
        rows: `weight_arms.py` rows of one regime (the recipe arms carry the choices).
    """
    by_seed = {}
    for row in rows:  # a recipe row of each seed, one recording both depths where there is one
        known = by_seed.get(row["seed"], {}).get("depth_by_validation_alone") is not None
        # With --train_backbone the dense reference is fine-tuned, not a probe.
        probe = row.get("dense_kind", "fine-tuned" if "train_backbone" in row["arm"] else "")
        if row.get("dense_probe") and not known and probe != "fine-tuned":
            by_seed[row["seed"]] = row
    if not by_seed:
        return []
    cells = []
    for seed, row in sorted(by_seed.items()):
        alone = row.get("depth_by_validation_alone")
        cells.append(
            [
                str(seed),
                str(row["validation_examples"]),
                "-" if row.get("depth") is None else f"0-{row['depth']}",
                "-" if alone is None else f"0-{alone}",
                f"{100 * row['dense_probe']['validation']:.1f}",
                f"{100 * row['dense_probe']['test']:.1f}",
            ]
        )
    probe = [r["dense_probe"]["test"] for r in by_seed.values()]
    header = ["seed", "validation clips", "depth kept (5-fold, budget-aware)",
              "depth by validation alone", "dense probe validation", "dense probe test"]  # fmt: skip
    return [
        *markdown_table(header, cells),
        "",
        f"The dense probe's test accuracy spans {100 * (max(probe) - min(probe)):.1f} points over "
        f"{len(probe)} seeds (its checkpoint chosen on each seed's validation).",
    ]
