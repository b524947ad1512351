"""Run reports of the recipes: `report.json`, `report.md` and plots, written from measured
figures only."""

from __future__ import annotations

import contextlib
import json
import os

from ..cards import layer_table
from .selection import KEPT_IN_WORDS
from .uncertainty import bits_of, paired_interval, resolution_points, wilson_interval


def _ratio(dense, pruned):
    return None if dense is None or not pruned else dense / pruned


def compare(dense: dict, pruned: dict) -> dict:
    """Dense / pruned ratios of parameters, MACs, median latency and disk size.

    Args:
        dense: The dense model's `params`, `macs`, `latency`, `disk_bytes`.
        pruned: The same figures of the pruned model.
    """
    return {
        "params": _ratio(dense["params"], pruned["params"]),
        "backbone_params": _ratio(dense["backbone_params"], pruned["backbone_params"]),
        "macs": _ratio(dense["macs"], pruned["macs"]),
        "latency": _ratio(dense["latency"]["median_s"], pruned["latency"]["median_s"]),
        "disk": _ratio(dense["disk_bytes"], pruned["disk_bytes"]),
    }


def _fmt(value, pattern="{:.4g}"):
    return "-" if value is None else pattern.format(value)


def _budget_lines(report: dict) -> list[str]:
    """What a budget in the user's terms asked for, and how each pruned model compares."""
    budget = report.get("budget_request")
    if not budget:
        return []
    kind = budget["budget"]
    asked = budget["asked"]
    against = (
        f"`{budget['value']}`'s backbone {kind} ({budget['allowed_cost']:,})"
        if asked.startswith("match_")
        else f"{budget['allowed_cost']:,} backbone {kind}"
    )
    lines = [
        "",
        f"Budget: at most {against}, from the model's {budget['model_cost']:,}: target "
        f"{budget['target_sparsity']:.2%} of {kind} removed (`--{asked}`).",
    ]
    if kind == "latency":
        return lines + _latency_lines(report["runs"], budget["allowed_cost"])
    field = "macs" if kind == "macs" else "backbone_params"
    for run in report["runs"]:
        ratio = run[field] / budget["allowed_cost"]
        verdict = "within the budget" if ratio <= 1 else "over the budget"
        lines.append(
            f"Pruned at target {run['target_sparsity']:.2f}: {run[field]:,} {kind}, "
            f"{ratio:.3f}x the allowed ({verdict})."
        )
    return lines


def _latency_lines(runs: list[dict], allowed_ms: float) -> list[str]:
    """Each pruned model's predicted latency on the table's runtime, and what this run measured
    (torch, batch 1, the test input: another runtime or machine than the table's, maybe)."""
    lines = []
    for run in runs:
        predicted = run["latency_predicted_ms"]
        verdict = "within the budget" if predicted <= allowed_ms else "over the budget"
        lines.append(
            f"Pruned at target {run['target_sparsity']:.2f}: predicted {predicted:.3f} ms on "
            f"{run['latency_runtime']} ({predicted / allowed_ms:.3f}x the allowed, {verdict}); "
            f"measured in this run {run['latency']['median_s'] * 1e3:.3f} ms."
        )
    return lines


def _depth_lines(report: dict) -> list[str]:
    """`--last_layer auto`'s per-layer probes and the layer chosen on validation."""
    depth = report.get("depth")
    if not depth:
        return []
    cross_validated = depth.get("rule") == "cross-validated"
    how = (
        "by a linear probe on each layer's pooled output, on the 5-fold mean over train and "
        "validation (the cut nearest the budget unless another beats it by more than the larger "
        f"standard error; validation alone would keep layers 0-{depth['last_layer_by_validation_alone']})"
        if cross_validated
        else "on validation by a linear probe on each layer's pooled output"
    )
    lines = [
        "",
        f"Depth (`--last_layer auto`): layers 0-{depth['last_layer']} kept, chosen {how}.",
        "",
        "| last layer | MACs dropped | probe train accuracy | probe validation accuracy "
        f"|{' 5-fold accuracy |' if cross_validated else ''}",
        f"|---:|---:|---:|---:|{'---:|' if cross_validated else ''}",
    ]
    for row in sorted(depth["probes"], key=lambda r: r["last_layer"]):
        cv = (
            f" {row['cv_accuracy']:.4f} +- {row['cv_standard_error']:.4f} |"
            if cross_validated
            else ""
        )
        lines.append(
            f"| {row['last_layer']} | {row['macs_removed_fraction']:.1%} "
            f"| {row['train_accuracy']:.4f} | {row['validation_accuracy']:.4f} |{cv}"
        )
    return lines


def _checkpoint_lines(report: dict) -> list[str]:
    """Which checkpoint each phase kept (`--checkpoint`), and why."""
    checkpoint = report.get("checkpoint")
    if not checkpoint:
        return []
    return [
        "",
        f"Checkpoints: each phase kept {KEPT_IN_WORDS[checkpoint['rule']]} ({checkpoint['reason']}).",
    ]


def _best_of_lines(run: dict, metric: str) -> list[str]:
    """`--best_of`: each mask run's seed and best validation metric within the budget, and the
    one kept."""
    if not run.get("best_of"):
        return []
    cells = [
        f"seed {r['seed']}: "
        + (_fmt(r[f"validation_{metric}"]) if r["met_budget"] else "never within the budget")
        + (" (kept)" if r["chosen"] else "")
        for r in run["best_of"]
    ]
    return [
        "",
        f"Target {run['target_sparsity']:.4g}, masks trained {len(cells)} times (`--best_of`), "
        f"validation {metric} of each: {'; '.join(cells)}.",
    ]


def accuracy_intervals(report: dict) -> dict:
    """For a single-label report (one where each clip's correctness was kept): the 95% Wilson
    interval of every accuracy and the paired bootstrap interval of each pruned model minus the
    dense one, by split: `{"dense": {split: [low, high]}, "runs": [{"accuracy": {...},
    "minus_dense": {...}}]}`; {} when the clips were not kept.

    Args:
        report: The report dict.
    """
    dense = report["dense"].get("correct")
    if not dense:
        return {}
    sizes = {"validation": report["validation_examples"], "test": report["test_examples"]}

    def wilson(bits: dict) -> dict:
        out = {}
        for split, total in sizes.items():
            out[split] = list(wilson_interval(int(bits_of(bits[split], total).sum()), total))
        return out

    runs = []
    for run in report["runs"]:
        if not run.get("correct"):
            runs.append({})
            continue
        gap = {
            split: list(
                paired_interval(bits_of(run["correct"][split], n), bits_of(dense[split], n))
            )
            for split, n in sizes.items()
        }
        row = {"accuracy": wilson(run["correct"]), "minus_dense": gap}
        competitor = (report.get("competitor") or {}).get("correct")
        if competitor:
            row["minus_competitor"] = {
                split: list(
                    paired_interval(
                        bits_of(run["correct"][split], n), bits_of(competitor[split], n)
                    )
                )
                for split, n in sizes.items()
            }
        runs.append(row)
    return {"dense": wilson(dense), "runs": runs}


def resolution_warning(validation_examples: int) -> str | None:
    """One sentence when validation is too small to choose between close settings (its 95%
    interval is wider than +-5 points at 50% accuracy), else None.

    Args:
        validation_examples: The validation split's size.
    """
    points = resolution_points(validation_examples)
    if points <= 5:
        return None
    return (
        f"Validation has {validation_examples} clips: accuracies within about +-{points:.0f} "
        "points of each other are not told apart (95%), so the depth and checkpoints chosen on it "
        "may be chance; more labelled clips, or --validation_size, narrow it."
    )


def _interval_cell(value, interval) -> str:
    if value is None:
        return "-"
    if not interval:
        return f"{value:.4g}"
    return f"{value:.4g} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _gap_text(run: dict, other: dict, interval: dict, metric: str) -> str:
    parts = []
    for split, key in (("validation", "validation_metrics"), ("test", "metrics")):
        gap = run[key][metric] - other[key][metric]
        low, high = interval[split]
        parts.append(f"{split} {100 * gap:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
    return "; ".join(parts)


def gap_lines(report: dict, intervals: dict) -> list[str]:
    """Each pruned model minus the dense one (and minus the fine-tuned competitor), with the
    paired interval, on both splits (a blank line first).

    Args:
        report: The report dict.
        intervals: Its `accuracy_intervals`.
    """
    lines = []
    metric = report["metric"]
    competitor = report.get("competitor")
    if competitor:
        lines.append(
            f"Competitor (`--match_*_of`): `{competitor['model']}`, every weight fine-tuned "
            f"({competitor['steps']} steps): validation {metric} "
            f"{competitor['validation_metrics'][metric]:.4g}, test {competitor['metrics'][metric]:.4g}, "
            f"{competitor['macs']:,} MACs."
        )
    for run, interval in zip(report["runs"], intervals.get("runs", []), strict=False):
        if not interval:
            continue
        lines.append(
            f"Pruned at target {run['target_sparsity']:.4g} minus dense, in {metric} points "
            f"(95% paired bootstrap over the clips): "
            f"{_gap_text(run, report['dense'], interval['minus_dense'], metric)}."
        )
        if "minus_competitor" in interval:
            lines.append(
                f"Pruned at target {run['target_sparsity']:.4g} minus `{competitor['model']}` "
                f"fine-tuned: {_gap_text(run, competitor, interval['minus_competitor'], metric)}."
            )
    return [""] + lines if lines else []


def markdown(report: dict) -> str:
    """The report as Markdown: one row for the dense model, one per target sparsity, with the
    task metric on validation (where choices are made) and on test (reported only).

    Args:
        report: The report dict written to `report.json`.
    """
    metric = report["metric"]
    dense = report["dense"]
    intervals = report.get("intervals") or {}
    run_intervals = intervals.get("runs") or [{} for _ in report["runs"]]
    warning = resolution_warning(report.get("validation_examples", 0))
    lines = [
        f"# hf_keepwhat report: {report['task']} with `{report['model']}`",
        "",
        f"Dataset: {report['dataset']}. Validation examples: "
        f"{report.get('validation_examples', '-')}; test examples: {report['test_examples']}. "
        f"Figures measured on {report['environment']['machine']} with "
        f"{report['environment']['torch_threads']} threads; latency is batch 1 on "
        f"{report['latency_input']}, median of {dense['latency']['repeats']} runs after warm-up.",
        *([] if warning is None else ["", f"**Warning.** {warning}"]),
        *_checkpoint_lines(report),
        *_budget_lines(report),
        *_depth_lines(report),
        "",
        f"| model | target | validation {metric} | test {metric} | backbone params removed "
        "| MACs removed | params | MACs | latency (ms) | disk (MB) | speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| dense ({report['dense_kind']}) | - "
        f"| {_interval_cell(dense.get('validation_metrics', {}).get(metric), intervals.get('dense', {}).get('validation'))} "
        f"| {_interval_cell(dense['metrics'].get(metric), intervals.get('dense', {}).get('test'))} | 0 | 0 "
        f"| {dense['params']:,} | {dense['macs']:,} | {dense['latency']['median_s'] * 1e3:.2f} "
        f"| {dense['disk_bytes'] / 1e6:.2f} | 1.00 |",
    ]
    for run, interval in zip(report["runs"], run_intervals, strict=True):
        accuracy = interval.get("accuracy", {})
        lines.append(
            f"| pruned | {run['target_sparsity']:.4g} "
            f"| {_interval_cell(run.get('validation_metrics', {}).get(metric), accuracy.get('validation'))} "
            f"| {_interval_cell(run['metrics'].get(metric), accuracy.get('test'))} "
            f"| {run['removed']['params_removed_fraction']:.1%} "
            f"| {run['removed']['macs_removed_fraction']:.1%} | {run['params']:,} | {run['macs']:,} "
            f"| {run['latency']['median_s'] * 1e3:.2f} | {run['disk_bytes'] / 1e6:.2f} "
            f"| {_fmt(run['ratios']['latency'], '{:.2f}')} |"
        )
    if intervals:
        lines += ["", f"Brackets: 95% Wilson interval of the {metric} over the clips."]
    lines += gap_lines(report, intervals)
    for run in report["runs"]:
        lines += _best_of_lines(run, metric)
    for run in report["runs"]:
        lines += ["", f"## Kept units at target {run['target_sparsity']:.4g}", ""]
        lines.append(layer_table(run["groups"]))
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def saved_figure(path: str, figsize: tuple[float, float]):
    """Yields `(fig, ax)` of a new matplotlib figure, then lays it out, writes it to `path`
    (120 dpi) and closes it.

    matplotlib is imported here, with the non-interactive Agg backend, so that importing this
    module needs neither matplotlib nor a display.

    Args:
        path: The PNG file to write.
        figsize: Width and height in inches.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_kept_units(groups: list[dict], path: str, title: str) -> None:
    """Heatmap of the fraction of units kept, one row per kind and one column per layer.

    Args:
        groups: The `groups` rows of a sparsity report.
        path: The PNG file to write.
        title: The plot's title.
    """
    layers, kinds = [], []
    for row in groups:
        layer = row["name"].rpartition(".")[0]
        if layer not in layers:
            layers.append(layer)
        if row["kind"] not in kinds:
            kinds.append(row["kind"])
    grid = [[float("nan")] * len(layers) for _ in kinds]
    for row in groups:
        layer = layers.index(row["name"].rpartition(".")[0])
        grid[kinds.index(row["kind"])][layer] = row["kept_units"] / row["num_units"]
    figsize = (max(4.0, 0.6 * len(layers) + 2), 1.0 + 0.6 * len(kinds))
    with saved_figure(path, figsize) as (fig, ax):
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(
            range(len(layers)), [layer.rsplit(".", 1)[-1] for layer in layers], fontsize=8
        )
        ax.set_yticks(range(len(kinds)), kinds)
        ax.set_xlabel("layer")
        ax.set_title(title, fontsize=9)
        for k, kind_row in enumerate(grid):
            for j, value in enumerate(kind_row):
                if value == value:  # not NaN
                    ax.text(j, k, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(image, ax=ax, label="fraction kept")


def plot_metric_vs_sparsity(report: dict, path: str) -> None:
    """The task metric against the realised removed fraction of backbone parameters.

    Args:
        report: The report dict.
        path: The PNG file to write.
    """
    metric = report["metric"]
    runs = sorted(report["runs"], key=lambda r: r["removed"]["params_removed_fraction"])
    xs = [r["removed"]["params_removed_fraction"] for r in runs]
    ys = [r["metrics"].get(metric) for r in runs]
    with saved_figure(path, (5, 3.5)) as (_, ax):
        ax.plot(xs, ys, "o-", label="masked + pruned")
        dense_metric = report["dense"]["metrics"].get(metric)
        if dense_metric is not None:
            ax.axhline(
                dense_metric, color="gray", linestyle="--", label=f"dense ({report['dense_kind']})"
            )
        ax.set_xlabel("removed fraction of backbone parameters")
        ax.set_ylabel(metric)
        ax.set_title(f"{report['task']}: {report['model']}", fontsize=9)
        ax.legend()


def write_report(report: dict, output_dir: str) -> None:
    """Writes `report.json`, `report.md` and the plots into `output_dir`.

    Args:
        report: The report dict.
        output_dir: The run's output folder.
    """
    os.makedirs(os.path.join(output_dir, "plots"), exist_ok=True)
    with open(os.path.join(output_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    with open(os.path.join(output_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))
    for run in report["runs"]:
        name = f"kept_units_target{run['target_sparsity']:.2f}.png"
        title = f"kept units, target {run['target_sparsity']:.2f}"
        plot_kept_units(run["groups"], os.path.join(output_dir, "plots", name), title)
    if len(report["runs"]) > 1:
        plot_metric_vs_sparsity(report, os.path.join(output_dir, "plots", "metric_vs_sparsity.png"))
