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


def tables_lines(tables: list[dict]) -> list[str]:
    """One row per table: where it was measured, the dense latency, the held-out error."""
    lines = [
        "| model | runtime | dense measured (ms) | dense predicted (ms) | held-out variants "
        "| median error | largest error | fixed cost of a layer (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in tables:
        fit = t["fit"]
        lines.append(
            f"| {t['model']} | {t['runtime']}, {t['threads']} threads, batch {t['batch_size']}, "
            f"{t['seconds']:g} s | {t['dense_ms']:.2f} | {t['dense_predicted_ms']:.2f} "
            f"| {fit['held_out']} | {fit['median_relative_error']:.1%} "
            f"| {fit['max_relative_error']:.1%} | {_fixed_layer_ms(t):.2f} |"
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
        "of them and reports its error on the other half (`benchmarks/results/latency_*.json`).",
        "",
        *tables_lines(tables),
        "",
    ]


def budget_section(sources: dict, measured: dict) -> list[str]:
    """Every tiny.en setting of the out-of-source grid timed by `frontier_latency.py`: its
    measured latency as a fraction of the dense model's (batch 1, each run timed in alternation
    with the dense model) beside its accuracy, and how far the latency-budget masks land from
    their target.

    Args:
        sources: `frontier_gm_sources.json`.
        measured: `frontier_gm_sources_latency.json`.
    """
    from render_sources import SPLITS, _cell, group

    rows = measured["rows"]
    lines = [
        '## Masks trained for a time budget (`budget="latency"`), out of source',
        "",
        "Whisper tiny.en on the out-of-source GM task (docs/research.md), masks priced with "
        "`latency_whisper-tiny.en_torch_cpu.json`. Measured latency: batch 1, "
        f"{measured['threads']} threads, each run timed in alternation with the dense model "
        "(`frontier_gm_sources_latency.json`), as a fraction of the dense latency (mean over "
        "the seeds, range in brackets). Accuracy in %, mean (seed spread).",
        "",
        "| setting | seeds | MACs removed | measured latency / dense | target | "
        + " | ".join(f"{s.replace('_', ' ')}" for s in SPLITS[2:])
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, members in group(sources["runs"]).items():
        timed = [r for r in members if r["key"] in rows]
        if not timed or not name.startswith("whisper-tiny.en"):
            continue
        fractions = [1 / rows[r["key"]]["latency"]["batch_1"]["speedup"] for r in timed]
        target = f"{1 - timed[0]['target']:.2f}" if timed[0]["method"] == "mask_latency" else "-"
        removed = sum(r["macs_removed_fraction"] for r in timed) / len(timed)
        lines.append(
            f"| {name} | {len(timed)} | {removed:.1%} | {sum(fractions) / len(fractions):.2f} "
            f"({min(fractions):.2f}-{max(fractions):.2f}) | {target} | "
            + " | ".join(_cell(members, s) for s in SPLITS[2:])
            + " |"
        )
    return lines + [""]
