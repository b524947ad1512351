"""The latency budget's tables for `docs/results.md` and the README: how well each measured
latency table (`keepwhat profile-latency`, `benchmarks/results/latency_*.json`) predicts pruned
variants it was not fitted on, and how close masks trained with `budget="latency"` land to their
target when timed against the dense model (`frontier_latency.py` on the out-of-source runs).
Called by `render_results.py`."""

from __future__ import annotations

import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def load_tables() -> list[dict]:
    """Every `latency_*.json` table in `benchmarks/results`, by name."""
    tables = []
    for name in sorted(os.listdir(RESULTS)):
        if name.startswith("latency_") and name.endswith(".json"):
            with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
                tables.append({"file": name, **json.load(f)})
    return tables


def _fixed_layer_ms(table: dict) -> float:
    """What emptying one whole layer gives back besides its MACs: its attention block's, its
    FFN's and its own fixed cost."""
    prices = table["coefficients"]
    return prices.get("groups_heads", 0) + prices.get("groups_ffn", 0) + prices.get("layers", 0)


def _fraction_error(table: dict, refit: bool = False) -> float:
    """Median error of the held-out variants' latency as a fraction of the dense model's (what a
    budget's target is), from the stored variants (tables profiled before `profile_latency`
    recorded it have them too); `refit`: with the coefficients fitted again on the stored fitted
    variants, anchored at the dense model as `profile_latency` now fits."""
    from hf_keepwhat.latency import LatencyTable, fit_coefficients, fit_errors

    variants = table["variants"]
    fitted = [i for i, v in enumerate(variants) if v["fitted"]]  # the dense model first
    measured = [v["measured_ms"] for v in variants]
    predicted = [v["predicted_ms"] for v in variants]
    if refit:
        coefficients = fit_coefficients(
            [variants[i]["features"] for i in fitted],
            [measured[i] for i in fitted],
            table["unit_kinds"],
            reference=0,
        )
        model = LatencyTable.from_dict({**table, "coefficients": coefficients})
        predicted = [float(model.predict(v["features"])) for v in variants]
    return fit_errors(predicted, measured, fitted)["median_fraction_relative_error"]


def tables_lines(tables: list[dict]) -> list[str]:
    """One row per table: where it was measured, the dense latency, the held-out error."""
    lines = [
        "| model | runtime | dense measured (ms) | dense predicted (ms) | held-out variants "
        "| median error | largest error | median error of the fraction of dense (refit anchored) "
        "| fixed cost of a layer (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in tables:
        fit = t["fit"]
        lines.append(
            f"| {t['model']} | {t['runtime']}, {t['threads']} threads, batch {t['batch_size']}, "
            f"{t['seconds']:g} s | {t['dense_ms']:.2f} | {t['dense_predicted_ms']:.2f} "
            f"| {fit['held_out']} | {fit['median_relative_error']:.1%} "
            f"| {fit['max_relative_error']:.1%} "
            f"| {_fraction_error(t):.1%} ({_fraction_error(t, refit=True):.1%}) "
            f"| {_fixed_layer_ms(t):.2f} |"
        )
    return lines


def tables_section(tables: list[dict]) -> list[str]:
    """The docs section on the measured latency tables."""
    if not tables:
        return []
    env = tables[0]["environment"]
    versions = sorted({t["environment"].get("onnxruntime") for t in tables} - {None})
    ort = f", ONNX Runtime {', '.join(versions)}" if versions else ""
    return [
        "## Latency tables: `keepwhat profile-latency`",
        "",
        f"Measured on {env['machine']} ({env['cpu_count']} cores), torch {env['torch']}{ort}. "
        "Each table times real pruned variants interleaved (the dense model, then random widths "
        "with attention blocks, FFNs and whole layers removed), fits the latency model on half "
        "of them and reports its error on the other half (`benchmarks/results/latency_*.json`). "
        "A budget asks for a fraction of the dense latency, so the fit weighs the dense model as "
        "much as all other variants together (`fit_coefficients(reference=)`). The ONNX Runtime "
        "tiny.en table was profiled with it, the three others before it (their dense "
        "predictions are off by what the dense columns show); in brackets, each table refit "
        "so from its stored variants.",
        "",
        *tables_lines(tables),
        "",
    ]


def budget_section(sources: dict, measured: dict, name: str) -> list[str]:
    """Every tiny.en setting of the out-of-source grid timed by `frontier_latency.py` on one
    runtime: its measured latency as a fraction of the dense model's (batch 1, each run timed in
    alternation with the dense model) beside its accuracy, how far the latency-budget masks land
    from their target, and the plot of the two.

    Args:
        sources: `frontier_gm_sources.json`.
        measured: A `frontier_latency.py` file of its runs (`frontier_gm_sources_latency*.json`).
        name: That file's name (the plot is named after it).
    """
    from render_sources import SPLITS, _cell, group

    rows, runtime = measured["rows"], measured.get("runtime", "torch")
    plot = os.path.join(RESULTS, name.removesuffix(".json") + ".png")
    lines = [
        f'## Masks trained for a time budget (`budget="latency"`), out of source, timed on {runtime}',
        "",
        "Whisper tiny.en on the out-of-source GM task (docs/research.md); latency masks priced "
        "with `latency_whisper-tiny.en_torch_cpu.json` (`whisper-tiny.en`) or "
        "`latency_whisper-tiny.en_onnxruntime_cpu.json` (`whisper-tiny.en-ort`: the same model). "
        f"Measured latency on {runtime}: batch 1, {measured['threads']} threads, each run timed "
        f"in alternation with the dense model (`{name}`), as a fraction of the dense latency "
        "(mean over the seeds, range in brackets). Accuracy in %, mean (seed spread).",
        "",
        f"![Out-of-source test accuracy against latency on {runtime}](../benchmarks/results/"
        f"{os.path.basename(plot)})",
        "",
        "| setting | seeds | MACs removed | measured latency / dense | target | "
        + " | ".join(f"{s.replace('_', ' ')}" for s in SPLITS[2:])
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    points = []
    for setting, members in group(sources["runs"]).items():
        timed = [r for r in members if r["key"] in rows]
        if not timed or not setting.startswith("whisper-tiny.en"):
            continue
        fractions = [1 / rows[r["key"]]["latency"]["batch_1"]["speedup"] for r in timed]
        points.append((setting, fractions, [r["accuracy"]["test"] for r in timed]))
        target = f"{1 - timed[0]['target']:.2f}" if timed[0]["method"] == "mask_latency" else "-"
        removed = sum(r["macs_removed_fraction"] for r in timed) / len(timed)
        lines.append(
            f"| {setting} | {len(timed)} | {removed:.1%} | {sum(fractions) / len(fractions):.2f} "
            f"({min(fractions):.2f}-{max(fractions):.2f}) | {target} | "
            + " | ".join(_cell(members, s) for s in SPLITS[2:])
            + " |"
        )
    plot_latency_axis(points, runtime, plot)
    return lines + [""]


def plot_latency_axis(points: list[tuple[str, list, list]], runtime: str, path: str) -> None:
    """The frontier on a measured-latency axis: each setting's mean out-of-source test accuracy
    against its mean measured latency (bars: the seeds' range on both axes), by method.

    Args:
        points: (setting, latency fractions of dense, test accuracies), one value per seed.
        runtime: Where the latency was measured.
        path: The PNG to write.
    """
    from hf_keepwhat.tasks import saved_figure

    methods = {"mask_latency": "s", "mask_macs": "o", "drop_layers": "^", "linear_probe": "*"}
    with saved_figure(path, (7, 4.5)) as (_, ax):
        for name, fractions, accuracies in points:
            method = name.split()[1]
            x, y = sum(fractions) / len(fractions), 100 * sum(accuracies) / len(accuracies)
            ax.errorbar(
                x,
                y,
                xerr=[[x - min(fractions)], [max(fractions) - x]],
                yerr=[[y - 100 * min(accuracies)], [100 * max(accuracies) - y]],
                fmt=methods.get(method, "x"),
                capsize=2,
                label=name.removeprefix("whisper-tiny.en").strip(),
            )
        ax.set_xlabel(f"measured latency / dense ({runtime}, batch 1, CPU)")
        ax.set_ylabel("out-of-source test accuracy (%)")
        ax.legend(fontsize=6, loc="lower right")
