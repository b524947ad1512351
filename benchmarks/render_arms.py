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
    "base_at_tiny_macs": "ours, Whisper base at tiny.en's MACs (`--match_macs_of`, the default)",
    "masks_train_backbone_average": "ours: masks over trainable weights, 50% of MACs, `--checkpoint average`",
    "base_at_tiny_macs_average": "ours, Whisper base at tiny.en's MACs, `--checkpoint average`",
    "base_at_tiny_macs_backbone_lr_2e-5": "ours, Whisper base at tiny.en's MACs, `--backbone_learning_rate 2e-5` (the last checkpoint)",
    "masks_train_backbone_head_first_100": "ours: masks over trainable weights, 50% of MACs, `--head_first_steps 100` (the last checkpoint)",
    "base_at_tiny_macs_head_first_100": "ours, Whisper base at tiny.en's MACs, `--head_first_steps 100` (the last checkpoint)",
    "masks_from_finetuned_dense_depth_auto": "ours: as the row above, with `--last_layer auto` (its probes read features fitted to these clips)",
    "masks_train_backbone_rerun": "ours: the default, as it runs today (masks over trainable weights, the last checkpoint below 100 validation clips), 50% of MACs",
    "masks_from_finetuned_dense": "ours: the default's fine-tuned `dense/` as the model of a second run (`--no_train_baseline`, the first run's depth as `--last_layer`): masks over its weights, 50% of MACs",
    "masks_train_backbone_best_of_3": "ours: the default with `--best_of 3` (the restart best on validation), 50% of MACs",
}
#: Re-runs of an arm with one setting changed, by their name's suffix (`<arm>_average` is `<arm>`
#: run again with `--checkpoint average`): what a table calls the re-run's kept checkpoint.
RERUNS = {
    "_average": "average",
    "_backbone_lr_2e-5": "backbone lr 2e-5",
    "_head_first_100": "head first 100",
}
REFERENCE = "finetune"
#: Arms read against the default as it runs today, on the same seeds: arm -> that default's arm.
AGAINST_DEFAULT = {
    "masks_from_finetuned_dense": "masks_train_backbone_rerun",
    "masks_from_finetuned_dense_depth_auto": "masks_train_backbone_rerun",
    "masks_train_backbone_best_of_3": "masks_train_backbone_rerun",
}
#: Arms whose run starts from the default's run of the same seed (its `dense/`): their training
#: time is both runs'.
AFTER_DEFAULT = {"masks_from_finetuned_dense", "masks_from_finetuned_dense_depth_auto"}


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
    shown = [a for a in arms if a not in AGAINST_DEFAULT and a not in AGAINST_DEFAULT.values()]
    for arm in sorted(shown, key=lambda a: list(ARMS).index(a) if a in ARMS else len(ARMS)):
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


def _spread(values: list[float]) -> str:
    return f"{100 * (max(values) - min(values)):.1f}"


def choices_table(rows: list[dict], model: str) -> list[str]:
    """What each seed's runs of `model` chose on its small validation: the depth kept by
    cross-validation and by validation alone, and the dense reference each recipe arm trained
    (its best checkpoint on validation): the probe of the frozen arms, the fine-tuned model of
    the trainable ones, with the spread of their test accuracy over the seeds.

    Args:
        rows: `weight_arms.py` rows of one regime (the recipe arms carry the choices).
        model: The model whose runs are shown.
    """
    seeds: dict[int, dict] = {}
    for row in rows:
        if (
            row["model"] == model
            and row.get("dense_probe")
            and not row["arm"].endswith(tuple(RERUNS))
        ):
            kind = row.get("dense_kind") or (
                "fine-tuned" if "train_backbone" in row["arm"] else "linear probe"
            )
            seed = seeds.setdefault(row["seed"], {"row": row})
            seed.setdefault(kind, row["dense_probe"])
            if row.get("depth_by_validation_alone") is not None:
                seed["row"] = row
    if not seeds:
        return []
    kinds = [k for k in ("linear probe", "fine-tuned") if any(k in s for s in seeds.values())]
    cells = []
    for number, seed in sorted(seeds.items()):
        row, alone = seed["row"], seed["row"].get("depth_by_validation_alone")
        cells.append(
            [str(number), str(row["validation_examples"]),
             "-" if row.get("depth") is None else f"0-{row['depth']}",
             "-" if alone is None else f"0-{alone}",
             *(f"{100 * seed[k]['test']:.1f}" if k in seed else "-" for k in kinds)]
        )  # fmt: skip
    header = ["seed", "validation clips", "depth kept (5-fold, budget-aware)",
              "depth by validation alone", *(f"dense {k}: test" for k in kinds)]  # fmt: skip
    spreads = ", ".join(
        f"dense {k} {_spread([s[k]['test'] for s in seeds.values() if k in s])} points"
        for k in kinds
    )
    return [*markdown_table(header, cells), "", f"{model}, test spread over the seeds: {spreads}."]


#: Each phase of a recipe run, as `weight_arms.py --score_last` names it, and its best checkpoint's
#: place in the row.
PHASES = {
    "baseline": ("the dense reference", lambda row: row["dense_probe"] | {"correct": row.get("dense_probe_correct")}),
    "target": ("the masks", lambda row: row),
    "competitor": ("the competitor (`--match_macs_of`'s model fine-tuned)", lambda row: row["competitor"]),
    "finetune": ("", lambda row: row),  # an arm fine-tuned outside the recipe: one phase
}  # fmt: skip


def checkpoint_rules_table(rows: list[dict]) -> list[str]:
    """Issue 39's question on small validation: each phase's checkpoint best on validation
    against its last one (`--checkpoint auto` keeps the last below 100 validation clips), test
    accuracy over the seeds and the paired gap.

    Args:
        rows: `weight_arms.py` rows of one regime; those run with `--score_last` are read.
    """
    cells = []
    for arm, runs in _by_arm([r for r in rows if r.get("last_checkpoint")]).items():
        for phase, (words, best_of) in PHASES.items():
            pairs = [(best_of(r), last) for r in runs for name, last in r["last_checkpoint"].items()
                     if name.startswith(phase)]  # fmt: skip
            if not pairs:
                continue
            clips = {"test_examples": runs[0]["test_examples"]}
            best, last = ([{**p[i], **clips} for p in pairs] for i in (0, 1))
            cells.append(
                [f"{ARMS.get(arm, arm)}{': ' + words if words else ''}", ", ".join(str(r["seed"]) for r in runs),
                 f"{sum(x['best_is_last'] for x in last)} of {len(last)}",
                 f"{100 * statistics.mean(r['test'] for r in best):.1f} ({_spread([r['test'] for r in best])})",
                 f"{100 * statistics.mean(r['test'] for r in last):.1f} ({_spread([r['test'] for r in last])})",
                 _gap(last, best)]
            )  # fmt: skip
    header = ["phase", "seeds", "best is the last", "best on validation: test", "last: test",
              "last - best"]  # fmt: skip
    return markdown_table(header, cells, "lrrrrr") if cells else []


def _phase_record(row: dict, phase: str) -> dict:
    """A phase's test accuracy and clips, from a recipe row (its kept checkpoint)."""
    record = PHASES[phase][1](row)
    return {
        "test": record["test"],
        "correct": record["correct"],
        "test_examples": row["test_examples"],
    }


def rerun_table(rows: list[dict], suffix: str) -> list[str]:
    """An arm re-run with one setting changed (`<arm><suffix>`, a key of `RERUNS`: `--checkpoint
    average`, another learning rate) against the arm's last checkpoint (what `auto` keeps on
    small validation) and its best on validation, phase by phase, on the seeds both ran: test
    accuracy (mean, seed spread) and the paired gaps of the re-run to each.

    Args:
        rows: `weight_arms.py` rows of one regime: `<arm><suffix>` rows beside `<arm>` rows run
            with `--score_last`.
        suffix: Which re-runs.
    """
    arms, name = _by_arm(rows), RERUNS[suffix]
    cells = []
    for arm in [a for a in arms if a.endswith(suffix)]:
        scored = {r["seed"]: r for r in arms.get(arm.removesuffix(suffix), [])
                  if r.get("last_checkpoint")}  # fmt: skip
        reruns = [r for r in arms[arm] if r["seed"] in scored]
        for phase, (words, _) in PHASES.items():
            best, last, rerun = [], [], []
            for row in reruns:
                other = scored[row["seed"]]
                for phase_name, record in other["last_checkpoint"].items():
                    if phase_name.startswith(phase):
                        best.append(_phase_record(other, phase))
                        last.append({**record, "test_examples": row["test_examples"]})
                        rerun.append(_phase_record(row, phase))
            if not last:
                continue
            cells.append(
                [f"{ARMS.get(arm, arm)}: {words}", ", ".join(str(r["seed"]) for r in reruns),
                 *(_mean_spread([r["test"] for r in side]) for side in (best, last, rerun)),
                 _gap(rerun, last), _gap(rerun, best)]
            )  # fmt: skip
    header = ["phase", "seeds", "best on validation: test", "last: test", f"{name}: test",
              f"{name} - last", f"{name} - best"]  # fmt: skip
    return markdown_table(header, cells, "lrrrrrr") if cells else []


def _same_seeds(runs: list[dict] | None, like: list[dict]) -> list[dict] | None:
    """`runs` on the seeds of `like`, in its order (None when one is missing: no pairing)."""
    by_seed = {r["seed"]: r for r in runs or []}
    if any(r["seed"] not in by_seed for r in like):
        return None
    return [by_seed[r["seed"]] for r in like]


def against_default_table(rows: list[dict]) -> list[str]:
    """The default as it runs today, and the variants run on its seeds (the masks started from
    its fine-tuned dense model; `--best_of 3`): validation and test accuracy (mean, seed spread),
    the paired gaps to the default and to fine-tuning tiny.en, and the training time a user
    spends on each (both runs where one starts from the other).

    Args:
        rows: `weight_arms.py` rows of one regime.
    """
    arms = _by_arm(rows)
    cells = []
    for default in dict.fromkeys(AGAINST_DEFAULT.values()):
        variants = [a for a, d in AGAINST_DEFAULT.items() if d == default and a in arms]
        if default not in arms or not variants:
            continue
        first = {r["seed"]: r for r in arms[default]}
        for arm in [default, *variants]:
            runs = [r for r in arms[arm] if r["seed"] in first]
            minutes = [
                r["train_seconds"]
                + (first[r["seed"]]["train_seconds"] if arm in AFTER_DEFAULT else 0)
                for r in runs
            ]
            cells.append(
                [ARMS.get(arm, arm), ", ".join(str(r["seed"]) for r in runs),
                 _mean_spread([r["validation"] for r in runs]), _mean_spread([r["test"] for r in runs]),
                 "-" if arm == default else _gap(runs, _same_seeds(arms[default], runs)),
                 _gap(runs, _same_seeds(arms.get(REFERENCE), runs)),
                 f"{statistics.median(minutes) / 60:.1f}"]
            )  # fmt: skip
    header = ["arm", "seeds", "validation", "test (out of source)", "test vs the default",
              "test vs fine-tuned tiny.en", "training (min)"]  # fmt: skip
    return markdown_table(header, cells, "lrrrrrr") if cells else []
