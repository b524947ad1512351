"""docs/results.md's GPU section, from `benchmarks/results/gpu_speed.json` (`benchmarks/gpu.sh`)."""

from __future__ import annotations

import statistics


def _device(result) -> str:
    env = result["environment"]
    return f"{env.get('cuda', 'no GPU')}, torch {env['torch']}, transformers {env['transformers']}"


def _training_lines(rows) -> list[str]:
    lines = [
        "| model | input (s) | batch | step (ms): masks / full FT / probe | masks vs full FT: "
        "time, peak memory |",
        "|---|---:|---:|---:|---:|",
    ]
    by_model: dict[str, dict] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["mode"]] = r
    for model, modes in by_model.items():
        masked, full, probe = (modes[m] for m in ("masked", "full_finetune", "linear_probe"))
        lines.append(
            f"| {model} | {masked['window_s']} | {masked['batch_size']} | "
            f"{masked['step_s'] * 1e3:.1f} / {full['step_s'] * 1e3:.1f} / "
            f"{probe['step_s'] * 1e3:.1f} | {masked['step_s'] / full['step_s']:.2f}, "
            f"{masked['peak_memory_mb'] / full['peak_memory_mb']:.2f} |"
        )
    return lines


def _latency_lines(rows) -> list[str]:
    exact = [r for r in rows if r["round_to"] == 1]
    batches = sorted({r["batch_size"] for r in exact})
    lines = [
        "| model | input (s) | dtype | "
        + " | ".join(f"batch {b}: dense ms, speedup 50% / 75%" for b in batches)
        + " |",
        "|---|---:|---|" + "---:|" * len(batches),
    ]
    settings = dict.fromkeys((r["model"], r["window_s"], r["dtype"]) for r in exact)
    for model, window, dtype in settings:
        cells = []
        for batch in batches:
            got = {
                r["macs_target"]: r
                for r in exact
                if (r["model"], r["window_s"], r["dtype"], r["batch_size"])
                == (model, window, dtype, batch)
            }
            if 0.0 not in got:
                cells.append("not measured")
                continue
            speedups = " / ".join(
                f"{got[t]['speedup']:.2f}" if t in got else "-" for t in (0.5, 0.75)
            )
            cells.append(f"{got[0.0]['latency_s'] * 1e3:.2f}, {speedups}")
        lines.append(f"| {model} | {window} | {dtype} | " + " | ".join(cells) + " |")
    return lines


def gpu_section(result) -> list[str]:
    """Training cost and dense-vs-pruned latency on one GPU (random weights of real shapes)."""

    def setting(r):
        return r["model"], r["window_s"], r["dtype"], r["batch_size"], r["macs_target"]

    exact = {setting(r): r["latency_s"] for r in result["latency"] if r["round_to"] == 1}
    # latency of the exact widths over the rounded ones: above 1, rounding made it faster
    spread = [exact[setting(r)] / r["latency_s"] for r in result["latency"] if r["round_to"] != 1]
    lines = [
        "### On a GPU: `benchmarks/gpu.sh`",
        "",
        f"{_device(result)}. Whisper encoders of the released shapes with random weights (speed "
        "depends on shapes only), units removed by magnitude, the same share of every group; "
        "every pruned model against its dense model in the same run. No checkpointing.",
        "",
        *_training_lines(result["training"]),
        "",
        "Latency, median of 20 runs after 5 warm-ups; speedup = dense time / pruned time, at 50% "
        "and 75% of encoder MACs removed (MAC ratios 2 and 3.8 to 4).",
        "",
        *_latency_lines(result["latency"]),
        "",
    ]
    if spread:
        lines += [
            f"Widths rounded to multiples of 8 or 64 (`prune(round_to=...)`, 50% rows): exact "
            f"widths' latency / rounded widths' latency {min(spread):.2f} to {max(spread):.2f} "
            f"(median {statistics.median(spread):.2f}) over {len(spread)} rows.",
            "",
        ]
    if "stopped" in result:
        lines += [f"Not complete: {result['stopped']}", ""]
    return lines
