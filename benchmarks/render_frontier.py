"""docs/results.md's frontier section and plot, from `frontier_gm.json` (and its latency file): accuracy
against measured encoder MACs for every method and model, and the comparisons the frontier issue
asks for, computed from the runs (nothing typed by hand)."""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict

import numpy as np
from frontier import KEPT_UNITS_PROBE, Point, bits_of, mean_std
from frontier import STRUCTURED as STRUCTURED_METHODS

from hf_keepwhat.tasks import saved_figure

# The grid's settings: `frontier.Point`'s defaults (all but what names a run), read from it so
# that the two cannot drift apart.
GRID = {
    f.name: f.default
    for f in dataclasses.fields(Point)
    if f.name not in ("model", "method", "target", "seed", "last_layer")
}
#: Mask-training settings a diagnostic is also compared on with the grid's value (same seeds),
#: and how the grid's value reads.
PAIRED = {
    "mask_learning_rate": f"mask lr {GRID['mask_learning_rate']:g}",
    "penalty_weight": f"penalty weight {GRID['penalty_weight']:g}",
    "penalty_on": "penalty on hard masks",
    "unit_kinds": "masks on every kind",
    "meet_target_kinds": "meet_target on every kind",
    "mask_type": f"{GRID['mask_type']} masks",
    "mask_init": f"mask init {GRID['mask_init']:g}",
}
#: The grid's masks with nothing done after training (what a finish starts from).
NOTHING_AFTER = {
    k: GRID[k]
    for k in ("refit_head_steps", "meet_target", "meet_target_kinds", "train_to_target_steps")
}
STRUCTURED = (*STRUCTURED_METHODS, "drop_layers")


def _grid(run) -> bool:
    return run["method"] != KEPT_UNITS_PROBE and all(run[k] == v for k, v in GRID.items())


SETTINGS = (
    "steps",
    "head",
    "mask_learning_rate",
    "warmup_fraction",
    "mask_type",
    "mask_init",
    "distill_weight",
    "penalty_weight",
    "penalty_on",
    "unit_kinds",
    "refit_head_steps",
    "meet_target",
    "meet_target_kinds",
    "train_to_target_steps",
    "augment_db",
)


def aggregate(runs, grid: bool = True) -> list[dict]:
    """Runs grouped by (model, layers, method, target, settings), with seed statistics: the
    grid's runs (`grid=True`) or the diagnostics (runs with other settings)."""
    groups = defaultdict(list)
    # Older runs lack the fields added later; they ran at those fields' defaults.
    for r in ({**Point.ADDED_LATER, **run} for run in runs):
        if "error" not in r and _grid(r) == grid:
            key = (r["model"], r["last_layer"], r["method"], r["target"])
            groups[key + tuple(r[s] for s in SETTINGS)].append(r)
    rows = []
    for key, members in groups.items():
        test, test_std = mean_std([r["accuracy"]["test"] for r in members])
        lora = [r["lora"]["accuracy"]["test"] for r in members if "lora" in r]
        unrefit = [
            r["accuracy_before_head_refit"]["test"] for r in members if r["refit_head_steps"]
        ]
        rows.append(
            {
                **dict(
                    zip(("model", "last_layer", "method", "target", *SETTINGS), key, strict=True)
                ),
                "seeds": sorted(r["seed"] for r in members),
                "macs": statistics.mean(r["encoder_macs"] for r in members),
                "removed": statistics.mean(r["macs_removed_fraction"] for r in members),
                "removed_range": (
                    min(r["macs_removed_fraction"] for r in members),
                    max(r["macs_removed_fraction"] for r in members),
                ),
                "validation": statistics.mean(r["accuracy"]["validation"] for r in members),
                "validation_by_seed": {r["seed"]: r["accuracy"]["validation"] for r in members},
                "removed_by_seed": {r["seed"]: r["macs_removed_fraction"] for r in members},
                "test": test,
                "test_std": test_std,
                "test_by_seed": {r["seed"]: r["accuracy"]["test"] for r in members},
                # Which test clips each seed got right (runs recorded before this was kept lack it).
                "correct_by_seed": {
                    r["seed"]: r["correct"]["test"] for r in members if "correct" in r
                },
                "lora": statistics.mean(lora) if lora else None,
                "before_refit": statistics.mean(unrefit) if unrefit else None,
                "removed_late": _late_range(members),
                "keys": [r["key"] for r in members],
            }
        )
    return sorted(rows, key=lambda r: (r["model"], str(r["last_layer"]), r["method"], r["target"],
                                       r["steps"], r["head"], r["mask_learning_rate"]))  # fmt: skip


def _late_range(members):
    """Lowest and highest MACs removed that the masks logged over the last quarter of mask
    training, and the widest swing within one run (runs that logged them; None otherwise): a
    wide swing means the masks had not settled, and where training stopped decided what was
    removed."""
    late = [
        [
            removed
            for step, removed in r["macs_removed_by_step"].items()
            if int(step) > 0.75 * r["steps"]
        ]
        for r in members
        if r.get("macs_removed_by_step")
    ]
    if not late:
        return None
    pooled = [removed for run in late for removed in run]
    return min(pooled), max(pooled), max(max(run) - min(run) for run in late)


def _reached_by(row) -> str:
    """How the target was reached after mask training: rounds of `train_to_target`, then
    `meet_target`'s selection (and the unit kinds it could switch off); "-" when neither ran."""
    steps = []
    if row["train_to_target_steps"]:
        steps.append(f"`train_to_target` ({row['train_to_target_steps']}-step rounds)")
    if row["meet_target"]:
        selection = "least_sure" if row["meet_target"] is True else row["meet_target"]
        kinds = row["meet_target_kinds"]
        steps.append(f"`meet_target` ({selection}{f', {kinds} only' if kinds else ''})")
    return " + ".join(steps) or "-"


def _model_text(row) -> str:
    """The model, and its layers when the run cut it (`last_layer`)."""
    layers = "" if row["last_layer"] is None else f", layers 0-{row['last_layer']}"
    return f"{row['model']}{layers}"


#: The plot's name for a finish (`finished`), by how the target was reached (`_reached_by`).
FINISHED = "mask_macs, target reached by {} + head refit"

COLORS = {
    FINISHED.format("meet_target (least_sure)"): "tab:purple",
    FINISHED.format("meet_target (fit_the_gap)"): "tab:pink",
    FINISHED.format("meet_target (least_sure, heads,ffn only)"): "gold",
    FINISHED.format("meet_target (fit_the_gap, heads,ffn only)"): "black",
    FINISHED.format("train_to_target (250-step rounds)"): "tab:orange",
    "mask_macs": "tab:blue",
    "mask_lagrangian": "tab:cyan",
    "random": "tab:gray",
    "magnitude": "tab:brown",
    "drop_layers": "tab:olive",
    "linear_probe": "tab:red",
    "full_finetune": "tab:green",
}


def plot(rows, path: str) -> None:
    """Test accuracy against encoder MACs (log), one panel per model: a colour per method, solid
    for all layers and dashed with layers cut, LoRA recovery as triangles on a dotted line."""
    models = sorted({r["model"] for r in rows})
    with saved_figure(path, (6 * len(models), 5)) as (figure, _):
        figure.clear()
        axes = figure.subplots(1, len(models), sharey=True, squeeze=False)[0]
        for ax, model in zip(axes, models, strict=True):
            lines = defaultdict(list)
            for r in rows:
                if r["model"] == model:
                    lines[(r["last_layer"], r["method"])].append(r)
            for (last_layer, method), members in sorted(lines.items(), key=lambda kv: str(kv[0])):
                members.sort(key=lambda r: r["macs"])
                xs = [r["macs"] / 1e6 for r in members]
                ys, errors = [r["test"] for r in members], [r["test_std"] or 0.0 for r in members]
                style = "--" if last_layer is not None else "-"
                label = method + ("" if last_layer is None else f", layers 0-{last_layer}")
                ax.errorbar(xs, ys, yerr=errors, fmt="o" + style, capsize=2,
                            color=COLORS.get(method), label=label)  # fmt: skip
                lora = [(r["macs"] / 1e6, r["lora"]) for r in members if r["lora"] is not None]
                if lora:
                    ax.plot(*zip(*lora, strict=True), "^:", color=COLORS.get(method),
                            label=label + " + LoRA")  # fmt: skip
            ax.set_xscale("log")
            ax.set_title(model)
            ax.set_xlabel("encoder MACs for a 1 s clip (millions, log scale)")
            ax.legend(fontsize=6)
        axes[0].set_ylabel("GM instrument family, test accuracy")


def _find(rows, model, method, target=None, last_layer=None):
    return next(
        (
            r
            for r in rows
            if r["model"] == model
            and r["method"] == method
            and r["last_layer"] == last_layer
            and (target is None or abs(r["target"] - target) < 1e-9)
        ),
        None,
    )


def _probe(rows, model, steps: int, head: str, last_layer=None):
    """The dense linear probe of `model` (layers 0..`last_layer`) with this head, trained `steps`
    steps."""
    return next(
        (
            p
            for p in rows
            if (p["model"], p["method"], p["last_layer"]) == (model, "linear_probe", last_layer)
            and (p["steps"], p["head"]) == (steps, head)
        ),
        None,
    )


def _dense_ceiling(probes, model, last_layer, layers: str, reference) -> str:
    """The larger model's own dense probe (same layers, the grid's head) against the reference
    model's, at every step count both were trained: what the larger model brings before any
    pruning, with this head."""
    steps = sorted({p["steps"] for p in probes if p["method"] == "linear_probe"})
    parts = []
    for n in steps:
        own = _probe(probes, model, n, GRID["head"], last_layer)
        theirs = _probe(probes, reference, n, GRID["head"])
        if own and theirs:
            parts.append(
                f"{own['test']:.3f} at {n} steps (seeds {own['seeds']}, "
                f"{100 * (own['test'] - theirs['test']):+.1f} over {reference}'s {theirs['test']:.3f})"
            )
    return f"; the dense {model} ({layers}) probe itself: {', '.join(parts)}" if parts else ""


def _finishes(diagnostics, mask, reference, probes, clips: int) -> str:
    """What the grid's masks at this point give once the target is met or a head is trained
    again on their kept units, the masks frozen (the diagnostics with otherwise the grid's
    settings), against `reference` (with the paired interval over the `clips` test clips where
    both sides kept them) and, when `reference` is a probe, against its probe trained as many
    steps in all."""
    variants = []
    for d in diagnostics:
        grid_like = {**d, **NOTHING_AFTER, "method": "mask_macs"}
        if not (_grid(grid_like) and _same_settings(grid_like, mask)):
            continue
        reached = _reached_by(d)
        if d["method"] == KEPT_UNITS_PROBE:
            what = "a fresh head on their kept units"
        elif d["method"] == "mask_macs" and (d["refit_head_steps"] or reached != "-"):
            met = f", the target reached by {reached}" if reached != "-" else ""
            refit = d["refit_head_steps"]
            then = f", then `refit_head` ({refit} steps)" if refit else ", head not refit"
            what = f"masks trained the same way{met}{then}"
        else:
            continue
        low, high = d["removed_range"]
        text = (
            f"{what} {d['test']:.3f} (seeds {d['seeds']}, {low:.1%}-{high:.1%} removed, "
            f"{100 * (d['test'] - reference['test']):+.1f}{_interval_text(d, reference, clips)}"
        )
        as_long = d["steps"] + d["refit_head_steps"]
        longer = _probe(probes, reference["model"], as_long, d["head"])
        if reference["method"] == "linear_probe" and as_long != reference["steps"] and longer:
            text += (
                f"; {100 * (d['test'] - longer['test']):+.1f} against the probe trained "
                f"{as_long} steps, {longer['test']:.3f}"
            )
        variants.append(text + ")")
    if not variants:
        return ""
    return (
        f"; finished (the target met, or a head refit on the frozen masks): {', '.join(variants)}"
    )


def findings(frontier, rows, diagnostics=()) -> list[str]:
    """The comparisons the issue asks for, each computed from the rows (or said to be missing)."""
    out = []
    diagnostics = list(diagnostics)
    probes = rows + diagnostics
    clips = frontier["examples"]["test"]
    models = sorted({r["model"] for r in rows})
    for model in models:
        probe, mask = _find(rows, model, "linear_probe"), _find(rows, model, "mask_macs", 0.5)
        if probe and mask:
            out.append(
                f"- {model}, 50% of encoder MACs: masks {mask['test']:.3f} (seeds {mask['seeds']}, "
                f"{mask['removed']:.1%} removed) vs dense probe {probe['test']:.3f} (seeds "
                f"{probe['seeds']}): {100 * (mask['test'] - probe['test']):+.1f} points"
                f"{_interval_text(mask, probe, clips)}; with LoRA recovery {mask['lora']:.3f}"
                f"{_finishes(diagnostics, mask, probe, probes, clips)}"
                f"{_cut_first(rows, model, probe, clips)}."
            )
    for model, target in frontier.get("match_targets", {}).items():
        reference = next((m for m in models if m != model), None)
        probe = _find(rows, reference, "linear_probe") if reference else None
        for last_layer in (None, *sorted({r["last_layer"] for r in rows} - {None})):
            mask = _find(rows, model, "mask_macs", target, last_layer)
            if mask is None or probe is None:
                continue
            layers = "all layers" if last_layer is None else f"layers 0-{last_layer}"
            low, high = mask["removed_range"]
            within = "every seed within" if low >= target - 1e-4 else "NOT every seed within"
            out.append(
                f"- {model} ({layers}) pruned towards {reference}'s encoder MACs (target "
                f"{target:.3f} removed; realised {low:.3f}-{high:.3f}: {within} {reference}'s "
                f"MACs): {mask['test']:.3f} vs dense {reference} probe {probe['test']:.3f}, "
                f"{100 * (mask['test'] - probe['test']):+.1f} points"
                f"{_interval_text(mask, probe, clips)} (goal: +3); with LoRA "
                f"{mask['lora']:.3f} ({100 * (mask['lora'] - probe['test']):+.1f})"
                f"{_finishes(diagnostics, mask, probe, probes, clips)}"
                f"{_dense_ceiling(probes, model, last_layer, layers, reference)}."
            )
    beaten = []
    for r in rows:
        if r["method"] != "mask_macs":
            continue
        rivals = [
            b
            for b in rows
            if b["model"] == r["model"]
            and b["last_layer"] == r["last_layer"]
            and b["method"] in ("random", "magnitude")
            and abs(b["target"] - r["target"]) < 1e-9
        ]
        if rivals:
            beaten.append(all(r["test"] >= b["test"] for b in rivals))
    if beaten:
        out.append(
            f"- mask_macs at or above random and magnitude structured pruning at {sum(beaten)} of "
            f"{len(beaten)} (model, layers, target) points measured so far."
        )
    # Dropping top layers removes a fixed share of MACs: compare with the mask target nearest it.
    for drop in (r for r in rows if r["method"] == "drop_layers"):
        masks = [
            r
            for r in rows
            if r["method"] == "mask_macs"
            and r["model"] == drop["model"]
            and r["last_layer"] == drop["last_layer"]
        ]
        if masks:
            mask = min(masks, key=lambda r: abs(r["removed"] - drop["removed"]))
            out.append(
                f"- {drop['model']}: dropping the top {drop['target']:g} layer(s) "
                f"({drop['removed']:.1%} of MACs removed) {drop['test']:.3f}; mask_macs at "
                f"{mask['removed']:.1%} removed {mask['test']:.3f}: "
                f"masks {_against_drop(mask, drop, clips)}"
                f"{_finishes(diagnostics, mask, drop, probes, clips)}"
                f"{_cut_masks_versus(rows, drop, clips)}."
            )
    return out


def _cut_first(rows, model, probe, clips: int) -> str:
    """The paper's recipe at 50% of the MACs against the dense probe of the whole model: the
    model cut to layers 0..K (K chosen on validation), then masks."""
    parts = []
    for last_layer in sorted({r["last_layer"] for r in rows} - {None}):
        mask = _find(rows, model, "mask_macs", 0.5, last_layer)
        if mask:
            parts.append(
                f"; cut to layers 0-{last_layer} first (the paper's recipe): masks "
                f"{mask['test']:.3f} (seeds {mask['seeds']}, {mask['removed']:.1%} removed), "
                f"{100 * (mask['test'] - probe['test']):+.1f} points"
                f"{_interval_text(mask, probe, clips)}; with LoRA recovery {mask['lora']:.3f}"
            )
    return "".join(parts)


def _cut_masks_versus(rows, drop, clips: int) -> str:
    """The paper's recipe against a dropped-layers run: masks on the model cut to layers 0..K
    (K chosen on validation), at the target nearest the dropped layers' MACs (within 10 points).
    Masks on every layer must thin all of them; cut first, they only choose within the layers
    the task uses."""
    cut = [
        r
        for r in rows
        if r["method"] == "mask_macs"
        and r["model"] == drop["model"]
        and r["last_layer"] not in (None, drop["last_layer"])
        and abs(r["removed"] - drop["removed"]) <= 0.1
    ]
    if not cut:
        return ""
    mask = min(cut, key=lambda r: abs(r["removed"] - drop["removed"]))
    return (
        f"; masks on layers 0-{mask['last_layer']} at {mask['removed']:.1%} removed "
        f"{mask['test']:.3f} (seeds {mask['seeds']}): {_against_drop(mask, drop, clips)}"
    )


def _against_drop(mask, drop, clips: int) -> str:
    verdict = "above" if mask["test"] >= drop["test"] else "BELOW"
    gap = f"{100 * (mask['test'] - drop['test']):+.1f} points{_interval_text(mask, drop, clips)}"
    return f"{verdict} the dropped layers ({gap})"


def finished(diagnostics) -> list[dict]:
    """The finishes at each budget: the grid's `mask_macs` settings, then the target reached
    (`train_to_target`, `meet_target`), then `refit_head` (all layers)."""
    return [
        d
        for d in diagnostics
        if d["method"] == "mask_macs"
        and d["last_layer"] is None
        and _reached_by(d) != "-"
        and d["refit_head_steps"]
        and _grid({**d, **NOTHING_AFTER})
    ]


def _reference_model(frontier, rows, d) -> str:
    """The model whose dense probe `d` is judged against: the smaller model's at the
    matched-MACs target, its own otherwise."""
    if abs(d["target"] - frontier.get("match_targets", {}).get(d["model"], -1)) < 1e-9:
        return next((r["model"] for r in rows if r["model"] != d["model"]), d["model"])
    return d["model"]


def _on_seeds(reference, seeds):
    """`reference` restricted to `seeds` when it has every one of them (a paired comparison),
    else as it is."""
    if reference is None or not set(seeds) <= set(reference["test_by_seed"]):
        return reference
    tests = [reference["test_by_seed"][s] for s in seeds]
    return {**reference, "seeds": sorted(seeds), "test": statistics.mean(tests)}


def _versus(row, reference) -> str:
    if reference is None:
        return "-"
    seeds = "" if reference["seeds"] == row["seeds"] else f", seeds {reference['seeds']}"
    return f"{reference['test']:.3f} ({100 * (row['test'] - reference['test']):+.1f}{seeds})"


def finished_table(frontier, rows, diagnostics, latency=None) -> list[str]:
    """Each finished point against the dense probe (its own model's; the smaller model's at the
    matched-MACs target) trained as many steps as the masks and as many in all, the grid's masks
    at the target, and the structured baselines: random and magnitude at the target, and the
    dropped layers nearest in MACs, trained as many steps in all when that run exists."""
    lines = [
        "The finishes at every budget: the grid's masks, the target reached (by training on in "
        "rounds, `--train_to_target_steps`, which adds up to 3 rounds of mask steps; or by "
        "switching units off, `--meet_target` with its selection and the unit kinds it may "
        "switch off), then the head trained again for 2000 steps (`--refit_head_steps 2000`), so "
        "4000 head steps in all besides those rounds. Each cell: test accuracy (points of the "
        "finish above it); the refit alone (the same masks, the head refit, nothing else) and "
        "the grid's masks on the finish's own seeds where they were run. Random and "
        "magnitude pruning trained their heads 2000 steps; the dropped layers (the count nearest "
        "in MACs, within 10 points) as many steps in all as the finish where that run exists "
        "(the cell says).",
        "",
        "| model | target | target reached by | seeds | MACs removed | test | before refit "
        "| refit alone | grid masks | probe of "
        "| probe, 2000 steps | probe, steps in all | random | magnitude "
        "| top layers dropped (n, MACs removed, head steps) | CPU speedup b1 | b8 |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for f in finished(diagnostics):
        reference = _reference_model(frontier, rows, f)
        as_long = f["steps"] + f["refit_head_steps"]
        drops = [
            r for r in rows + diagnostics if r["method"] == "drop_layers"
            and r["model"] == f["model"] and r["last_layer"] is None and r["head"] == f["head"]
        ]  # fmt: skip
        as_long_drops = [r for r in drops if r["steps"] == as_long]  # an equal head, when run
        drop = min(
            as_long_drops or [r for r in drops if r["steps"] == f["steps"]],
            key=lambda r: abs(r["removed"] - f["removed"]),
            default=None,
        )
        if drop is not None and abs(drop["removed"] - f["removed"]) > 0.1:
            drop = None  # too far in MACs to compare
        refit_alone = next(
            (
                d
                for d in diagnostics
                if _same_settings(
                    d, {**f, **NOTHING_AFTER, "refit_head_steps": f["refit_head_steps"]}
                )
            ),
            None,
        )
        drop_cell = (
            "-"
            if drop is None
            else f"{drop['target']:g}, {drop['removed']:.1%}, {drop['steps']} steps: "
        )
        low, high = f["removed_range"]
        lines.append(
            f"| {f['model']} | {f['target']:g} | {_reached_by(f)} | {f['seeds']} "
            f"| {low:.1%}-{high:.1%} "
            f"| {_test_cell(f)} | {f['before_refit']:.3f} "
            f"| {_versus(f, _on_seeds(refit_alone, f['seeds']))} "
            f"| {_versus(f, _on_seeds(_find(rows, f['model'], 'mask_macs', f['target']), f['seeds']))} "
            f"| {reference} "
            f"| {_versus(f, _probe(rows, reference, f['steps'], f['head']))} "
            f"| {_versus(f, _probe(rows + diagnostics, reference, as_long, f['head']))} "
            f"| {_versus(f, _find(rows, f['model'], 'random', f['target']))} "
            f"| {_versus(f, _find(rows, f['model'], 'magnitude', f['target']))} "
            f"| {drop_cell}{_versus(f, drop) if drop else ''} | {_speedups(f, latency)} |"
        )
    return lines + [""]


def _same_settings(a, b) -> bool:
    return all(a[k] == b[k] for k in ("model", "last_layer", *SETTINGS)) and (
        abs(a["target"] - b["target"]) < 1e-9
    )


def _settings_text(d) -> str:
    low, high = d["removed_range"]
    reached = _reached_by(d)
    met = f", target reached by {reached}" if reached != "-" else ""
    return (
        f"{_model_text(d)}, {d['steps']} steps, {d['head']} head, mask lr "
        f"{d['mask_learning_rate']:g}, warm-up {d['warmup_fraction']:.2f}, {_mask_type(d)} "
        f"masks ({_kinds(d)}), distillation weight {d['distill_weight']:g}, penalty "
        f"{_penalty(d)}{met}, head refit "
        f"{d['refit_head_steps']} steps, target {d['target']:g} (realised {low:.3f}-{high:.3f})"
    )


def diagnostic_findings(frontier, rows, diagnostics) -> list[str]:
    """Each diagnostic mask setting against the dense probe trained with the same head and as
    many steps in all (mask training + head refit; its own model's at 50%, the smaller model's at
    the matched-MACs target) and against the grid's masks; each fresh head on masks' kept units
    against those masks' own head."""
    out = []
    for d in diagnostics:
        if d["method"] not in ("mask_macs", KEPT_UNITS_PROBE):
            continue
        reference = _reference_model(frontier, rows, d)
        steps = d["steps"] + d["refit_head_steps"]
        probe = _probe(rows + diagnostics, reference, steps, d["head"])
        if d["method"] == KEPT_UNITS_PROBE:
            line = (
                f"- {_settings_text(d)}: a fresh head on the units these masks kept "
                f"{_test_cell(d)} (seeds {d['seeds']})"
            )
            masks = next(
                (
                    m
                    for m in rows + diagnostics
                    if m["method"] == "mask_macs" and _same_settings(m, d)
                ),
                None,
            )
            if masks is not None:
                line += (
                    f" vs the masks with their own head {masks['test']:.3f} (seeds "
                    f"{masks['seeds']}): {100 * (d['test'] - masks['test']):+.1f} points"
                )
        else:
            line = f"- {_settings_text(d)}: masks {_test_cell(d)} (seeds {d['seeds']})"
            if d["before_refit"] is not None:
                line += f" ({d['before_refit']:.3f} before the head refit)"
        if probe is None:
            line += f"; no {reference} probe with this head and {steps} steps yet"
        else:
            line += (
                f"; {reference} probe with the same head and steps in all ({steps}) "
                f"{probe['test']:.3f} (seeds {probe['seeds']}): "
                f"{100 * (d['test'] - probe['test']):+.1f} points"
            )
        if d["method"] == "mask_macs":
            line += _paired_with_grid(d, diagnostics)
            if d["removed_late"]:
                low, high, swing = d["removed_late"]
                line += (
                    f"; MACs removed over the last quarter of mask training {low:.1%}-{high:.1%}"
                    f" (up to {100 * swing:.1f} points within one run)"
                )
        grid = _find(rows, d["model"], "mask_macs", d["target"], d["last_layer"])
        if grid is not None and d["method"] == "mask_macs":
            line += (
                f"; the grid's masks at this target {grid['test']:.3f} (seeds {grid['seeds']}): "
                f"{100 * (d['test'] - grid['test']):+.1f} points"
            )
        out.append(line + ".")
    return out


def _mask_type(row) -> str:
    init = row["mask_init"]
    return row["mask_type"] + ("" if init == GRID["mask_init"] else f" (init {init:g})")


def _kinds(row) -> str:
    return f"{row['unit_kinds']} only" if row["unit_kinds"] else "every kind"


def _penalty(row) -> str:
    if row["penalty_on"] == "probability":
        counted = "keep probabilities"
    elif row["penalty_on"] == "kept":
        counted = "the masks pruning keeps"
    else:  # "mask": hard-concrete masks are samples while they train (`HardConcreteMask`)
        counted = "sampled masks" if row["mask_type"] == "hard_concrete" else "hard masks"
    return f"{row['penalty_weight']:g} on {counted}"


def _paired_with_grid(d, diagnostics) -> str:
    """`d` against the same run with the grid's values of the `PAIRED` settings, on `d`'s seeds
    (validation, on which a setting is chosen, and test), or "" when `d` has the grid's values
    or that run is missing."""
    changed = {k: GRID[k] for k in PAIRED if d[k] != GRID[k]}
    same = next(
        (
            o
            for o in diagnostics
            if changed and o["method"] == d["method"] and _same_settings(o, {**d, **changed})
        ),
        None,
    )
    if same is None or not set(d["seeds"]) <= set(same["test_by_seed"]):
        return ""
    parts = []
    for split in ("validation", "test"):
        theirs = statistics.mean(same[f"{split}_by_seed"][s] for s in d["seeds"])
        parts.append(f"{split} {theirs:.3f} ({100 * (d[split] - theirs):+.1f})")
    grid_values = ", ".join(PAIRED[k] for k in changed)
    removed = [same["removed_by_seed"][s] for s in d["seeds"]]
    low, high = d["removed_range"]
    return (
        f"; the same with the grid's {grid_values}, same seeds: {', '.join(parts)}, "
        f"{min(removed):.1%}-{max(removed):.1%} removed (here {low:.1%}-{high:.1%})"
    )


def _test_cell(row) -> str:
    """Mean test accuracy, with the seeds' standard deviation when there are several."""
    std = f" ± {row['test_std']:.3f}" if row["test_std"] is not None else ""
    return f"{row['test']:.3f}{std}"


def _lora_cell(row) -> str:
    return f"{row['lora']:.3f}" if row["lora"] is not None else "-"


def _speedups(row, latency) -> str:
    """Dense / pruned CPU latency at batch 1 and 8, the mean over the row's seeds that were
    timed (each seed keeps its own units, so their shapes and speeds differ), or '-' when none
    was.

    Args:
        row: an `aggregate` row (its `keys` name the runs of every seed).
        latency: the `frontier_latency.py` JSON, or None.
    """
    timed = [latency["rows"][k] for k in row["keys"] if latency and k in latency["rows"]]
    if not timed:
        return "- | -"
    return " | ".join(
        f"{statistics.mean(t['latency'][b]['speedup'] for t in timed):.2f}"
        for b in ("batch_1", "batch_8")
    )


def paired_interval(row, reference, clips: int, resamples: int = 10000) -> tuple | None:
    """95% interval of `row`'s test accuracy minus `reference`'s from a paired bootstrap over
    the test clips: each clip's correctness averaged over each side's seeds, the clips resampled
    with replacement (fixed generator, so the docs render the same). It counts the luck of
    which clips were drawn, which the seeds' spread does not; None when a side lacks the clips
    of any of its seeds (runs recorded before they were kept).

    Args:
        row, reference: `aggregate` rows.
        clips: Number of test clips.
        resamples: Bootstrap resamples.
    """
    sides = []
    for r in (row, reference):
        by_seed = r.get("correct_by_seed", {})
        if set(by_seed) != set(r["seeds"]):
            return None
        sides.append(np.mean([bits_of(h, clips) for h in by_seed.values()], axis=0))
    gap = sides[0] - sides[1]
    draws = np.random.default_rng(0).integers(0, clips, size=(resamples, clips))
    low, high = np.percentile(gap[draws].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def _interval_text(row, reference, clips: int) -> str:
    interval = paired_interval(row, reference, clips) if reference else None
    if interval is None:
        return ""
    low, high = (round(100 * x, 1) + 0.0 for x in interval)  # + 0.0: no "-0.0"
    return f", 95% interval over the clips {low:+.1f} to {high:+.1f}"


def _sampling_error(clips: int, accuracy: float = 0.6) -> str:
    """How far one accuracy on these clips can move by which clips happened to be drawn: the
    binomial standard error at `accuracy`. The seeds' spread does not include it (every run is
    scored on the same clips), so a gap of a few points between two methods is within it."""
    error = (accuracy * (1 - accuracy) / clips) ** 0.5
    return (
        f"one test accuracy near {accuracy:g} has a binomial standard error of "
        f"{100 * error:.1f} points over {clips} clips, which the seeds' spread (the same clips "
        "for every run) does not include"
    )


def _latency_machine(latency) -> str:
    env = latency.get("environment", {})
    return f"{env.get('machine', '?')}, {latency.get('threads')} threads, torch {env.get('torch')}"


def grid_table(rows, latency=None) -> list[str]:
    """The grid's Markdown table, a line per (model, layers, method, target), with the CPU
    speedup columns where `latency` is given.

    Args:
        rows: `aggregate`'s grid rows.
        latency: `frontier_latency.py`'s JSON, or None (no speed columns).
    """
    speed = (" CPU speedup b1 | b8 |", "---:|---:|") if latency else ("", "")
    lines = [
        "| model | layers | method | target | seeds | MACs removed | encoder MACs (M) "
        f"| validation | test | test + LoRA |{speed[0]}",
        f"|---|---|---|---:|---|---:|---:|---:|---:|---:|{speed[1]}",
    ]
    for r in rows:
        layers = "all" if r["last_layer"] is None else f"0-{r['last_layer']}"
        lines.append(
            f"| {r['model']} | {layers} | {r['method']} | {r['target']:g} | {r['seeds']} "
            f"| {r['removed']:.1%} | {r['macs'] / 1e6:.1f} | {r['validation']:.3f} "
            f"| {_test_cell(r)} | {_lora_cell(r)} |"
            + (f" {_speedups(r, latency)} |" if latency else "")
        )
    return lines


def frontier_section(frontier, latency=None) -> list[str]:
    """The Markdown section (and the plot next to the JSON).

    Args:
        frontier: `frontier_gm.json`.
        latency: `frontier_gm_latency.json`, or None.
    """
    rows = aggregate(frontier["runs"])
    diagnostics = aggregate(frontier["runs"], grid=False)
    plot(
        rows
        + [
            {**f, "method": FINISHED.format(_reached_by(f).replace("`", "")), "lora": None}
            for f in finished(diagnostics)
        ],
        "benchmarks/results/frontier_gm.png",
    )
    machines = sorted({r["environment"].get("cuda") or "CPU" for r in frontier["runs"]})
    lines = [
        "### Accuracy against encoder MACs on GM instrument families: `benchmarks/frontier.py`",
        "",
        f"{frontier['examples']['test']} test clips (pitches unseen in training), 16 classes; "
        f"{_sampling_error(frontier['examples']['test'])}. "
        f"{frontier['window_s']} s window, batch {frontier['batch_size']}, 2000 steps, head at "
        f"{frontier['learning_rate']:g}, masks at 0.02, full fine-tuning's encoder at "
        f"{frontier['finetune_lr']:g}; LoRA recovery 500 steps at 5e-4 after each mask run. "
        f"Trained on: {', '.join(machines)}. Plot: `benchmarks/results/frontier_gm.png`. The grid "
        "resumes from the JSON (a run already there is not run again). CPU speedup: "
        "dense / pruned latency of the same base, timed in alternation in one run, same 1 s input, "
        "the mean over the seeds timed "
        + (
            f"({_latency_machine(latency)}, `benchmarks/frontier_latency.py`)."
            if latency
            else "(not measured yet)."
        ),
        "",
        *findings(frontier, rows, diagnostics),
        "",
        *(finished_table(frontier, rows, diagnostics, latency) if finished(diagnostics) else []),
        *grid_table(rows, latency),
    ]
    if diagnostics:
        lines += [
            "",
            "Diagnostics: settings other than the grid's, each against the dense probe with the "
            "same head and as many steps in all (choices are made on validation, never on test):",
            "",
            *diagnostic_findings(frontier, rows, diagnostics),
            "",
            "| model | method | target | steps | head | mask lr | warm-up | mask type "
            "| masked kinds | distillation | penalty | target reached by | head refit | seeds "
            "| MACs removed | validation | test | test before refit | + LoRA |",
            "|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in diagnostics:
            lines.append(
                f"| {_model_text(r)} | {r['method']} | {r['target']:g} | {r['steps']} | {r['head']} "
                f"| {r['mask_learning_rate']:g} | {r['warmup_fraction']:.2f} | {_mask_type(r)} "
                f"| {_kinds(r)} | {r['distill_weight']:g} | {_penalty(r)} "
                f"| {_reached_by(r)} "
                f"| {r['refit_head_steps']} | {r['seeds']} "
                f"| {r['removed']:.1%} | {r['validation']:.3f} | {_test_cell(r)} "
                f"| {'-' if r['before_refit'] is None else format(r['before_refit'], '.3f')} "
                f"| {_lora_cell(r)} |"
            )
    return lines + [""]
