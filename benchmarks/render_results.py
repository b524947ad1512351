"""Writes `docs/results.md` and the README's results at a glance from the benchmark JSON files
(nothing typed by hand).

python benchmarks/render_results.py
"""

from __future__ import annotations

import json
import os

from render_arms import (
    AFTER_DEFAULT,
    against_default_table,
    arms_table,
    checkpoint_rules_table,
    choices_table,
    ours_on_validation,
    rerun_table,
)
from render_frontier import frontier_section
from render_gpu import gpu_section
from render_latency import budget_section, load_tables, tables_lines, tables_section
from render_sources import multisource_lines, sources_section
from render_table import markdown_table

from hf_keepwhat.tasks.reports import gap_lines
from hf_keepwhat.tasks.selection import LAST_CHECKPOINT_BELOW

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
START, END = "<!-- glance:start -->", "<!-- glance:end -->"  # the README's rendered block


def _load(name):
    path = os.path.join(RESULTS, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _machine(result) -> str:
    env = result.get("environment", {})
    threads = env.get("torch_threads") or result.get("threads")
    described = f"{env.get('machine', result.get('machine', '?'))}, {threads} threads"
    return described + (f", torch {env['torch']}" if "torch" in env else "")


def report_section(report: dict, file_name: str, title: str, splits: str) -> list[str]:
    """A recipe's report (`report.json`): the dense probe against each pruned model, validation
    and test, and what a budget in the user's terms asked for.

    Args:
        report: The report.
        file_name: Its file under `benchmarks/results/`.
        title: The section's heading.
        splits: Where its validation and test clips come from, in words.
    """
    dense = report["dense"]
    metric = report["metric"]
    intervals = report.get("intervals") or {}
    of_runs = intervals.get("runs") or [{} for _ in report["runs"]]

    def cell(value, interval):
        shown = f"{value:.3f}"
        return shown if not interval else f"{shown} [{interval[0]:.3f}, {interval[1]:.3f}]"

    def row(name, r, interval):
        return (
            f"| {name} "
            f"| {cell(r.get('validation_metrics', {}).get(metric, float('nan')), interval.get('validation'))} "
            f"| {cell(r['metrics'][metric], interval.get('test'))} | {r['backbone_params']:,} "
            f"| {r['macs']:,} | {r['latency']['median_s'] * 1e3:.1f} | {r['disk_bytes'] / 1e6:.1f} |"
        )

    lines = [
        f"### {title}",
        "",
        f"From `benchmarks/results/{file_name}` (`{report['model']}`, {_machine(report)}); "
        f"{report.get('validation_examples', '-')} validation clips ({splits}), "
        f"{report['test_examples']} test clips; latency is batch 1, one test clip, median of "
        "repeated runs.",
        "",
        f"| model | validation {metric} | test {metric} | encoder params | MACs | latency (ms) "
        "| disk (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row(f"dense, {report['dense_kind']}", dense, intervals.get("dense", {})),
        *(
            row(f"pruned, target {r['target_sparsity']:.4g}", r, i.get("accuracy", {}))
            for r, i in zip(report["runs"], of_runs, strict=True)
        ),
        "",
    ]
    if intervals:
        lines += [f"Brackets: 95% Wilson interval of the {metric} over the clips.", ""]
        lines += [line for line in gap_lines(report, intervals) if line]
        lines.append("")
    for r in report["runs"]:
        lines.append(
            f"Target {r['target_sparsity']:.4g}: removed {r['removed']['params_removed_fraction']:.1%} "
            f"of encoder parameters, {r['removed']['macs_removed_fraction']:.1%} of MACs; latency "
            f"ratio dense/pruned {r['ratios']['latency']:.2f}, MAC ratio {r['ratios']['macs']:.2f}."
        )
    budget = report.get("budget_request")
    if budget:
        lines.append(
            f"Budget `--{budget['asked']} {budget['value']}`: at most {budget['allowed_cost']:,} "
            f"{budget['budget']} of the model's {budget['model_cost']:,} (target "
            f"{budget['target_sparsity']:.2%}); the pruned model has "
            + ", ".join(
                f"{r['macs' if budget['budget'] == 'macs' else 'backbone_params'] / budget['allowed_cost']:.3f}x"
                for r in report["runs"]
            )
            + " the allowed."
        )
    return lines + [""]


def demo_section(demo) -> list[str]:
    """`make demo`'s report."""
    return report_section(
        demo,
        "demo_fsdd_report.json",
        "Spoken digits (FSDD) with Whisper tiny.en: `make demo`",
        "carved from train",
    )


def recipe_gm_section(report) -> list[str]:
    """The main job's run on GM instruments with no tuning flag (issue 33's acceptance)."""
    return report_section(
        report,
        "recipe_gm_base_at_tiny.json",
        "The main job with no tuning flag: Whisper base pruned to tiny.en's MACs on GM "
        "instruments (`recipes/classify.py --match_macs_of`)",
        "the layout's validation pitches",
    )


def speed_section(speed) -> list[str]:
    lines = [
        "### Inference speed: `benchmarks/speed.py`",
        "",
        f"Device {speed['device']} ({_machine(speed)}); {speed['pruning']}. "
        "Plot: `benchmarks/results/speed_cpu.png`.",
        "",
        "| model | batch | input (s) | params removed | MAC ratio | speedup | speedup / MAC ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in speed["rows"]:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['input_seconds']:g} | {r['params_removed_fraction']:.1%} "
            f"| {r['mac_ratio']:.2f} | {r['speedup']:.2f} | {r['speedup_over_mac_ratio']:.2f} |"
        )
    return lines + [""]


def cost_section(costs) -> list[str]:
    lines = ["### Training cost: `benchmarks/train_cost.py`", ""]
    for cost in costs:
        lines += [
            f"{cost.get('model', 'Whisper tiny.en')}, batch {cost['batch_size']}, "
            f"{cost['input_window_s']:g} s window, {cost['device']} ({_machine(cost)}). "
            "Peak memory is the process's peak RSS (torch and the weights included); "
            '"training peak" is what training adds above the loaded model.',
            "",
            "| mode | trainable params | step time (s) | peak RSS (MB) | training peak (MB) "
            "| step time / full FT | training peak / full FT |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, r in cost["results"].items():
            ratio = cost["ratios"].get(f"{mode}_vs_full_finetune", {})
            above = r.get("training_peak_above_loaded_bytes")
            lines.append(
                f"| {mode} | {r['trainable_params']:,} | {r['step_wall_s_median']:.3f} "
                f"| {r['peak_memory_bytes'] / 1e6:.0f} "
                f"| {f'{above / 1e6:.0f}' if above else '-'} "
                f"| {ratio.get('step_wall', 1.0):.2f} "
                f"| {ratio.get('training_peak_above_loaded', 1.0 if above else float('nan')):.2f} |"
            )
        lines.append("")
    return lines


def deploy_section(deploy) -> list[str]:
    lines = [
        "### Deployment: int8, ONNX Runtime, torch.compile (`benchmarks/deploy.py`)",
        "",
        f"Trained pruned Whisper tiny.en models, {_machine(deploy)}; ONNX Runtime on the CPU "
        f"with {deploy['threads']} threads. Test accuracy of each form:",
        "",
        "| task | window | test clips | PyTorch fp32 | PyTorch int8 | ONNX fp32 | ONNX int8 "
        "| ONNX vs PyTorch max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, t in deploy["tasks"].items():
        a = t["accuracy"]
        lines.append(
            f"| {task} | {t['window_s']} s | {t['test_examples']} | {a['pruned_fp32']:.1%} "
            f"| {a['pruned_int8']:.1%} | {a['pruned_onnx_fp32']:.1%} | {a['pruned_onnx_int8']:.1%} "
            f"| {t['onnx_check']['max_abs_difference']:.1e} |"
        )
    timed = {task: t for task, t in deploy["tasks"].items() if "latency" in t}
    lines += [
        "",
        f"Latency (medians of {deploy['rounds']} interleaved rounds of {deploy['repeats']} calls, "
        "each task's model on its own window; speedups against the stock model with its 30 s "
        "window and against the dense model cut to the same window, fp32 PyTorch): ms, x stock, "
        "x dense same window.",
        "",
        "| batch | form | "
        + " | ".join(f"{task} ({t['window_s']} s)" for task, t in timed.items())
        + " |",
        "|---:|---|" + "---:|" * len(timed),
    ]
    order = ["stock_30s", "dense_window_fp32", "dense_window_int8", "pruned_fp32",
             "pruned_compiled", "pruned_int8", "pruned_onnx_fp32", "pruned_onnx_int8"]  # fmt: skip
    first = next(iter(timed.values()))["latency"]
    for i, row in enumerate(first):
        for name in sorted(row["latency"], key=lambda n: order.index(n) if n in order else 99):
            cells = []
            for t in timed.values():
                m = t["latency"][i]["latency"][name]
                cells.append(
                    f"{m['median_s'] * 1e3:.1f}, {m['speedup_vs_stock_30s']:.1f}x, "
                    f"{m['speedup_vs_dense_window_fp32']:.2f}x"
                )
            lines.append(f"| {row['batch_size']} | {name} | " + " | ".join(cells) + " |")
    for task, t in timed.items():
        ratios = []
        for row in t["latency"]:
            mac_ratio = row["macs"]["dense_window"] / row["macs"]["pruned"]
            speedup = row["latency"]["pruned_fp32"]["speedup_vs_dense_window_fp32"]
            ratios.append(
                f"batch {row['batch_size']}: speedup {speedup:.2f} at MAC ratio {mac_ratio:.2f} "
                f"({speedup / mac_ratio:.2f})"
            )
        top = t["profile_pruned_fp32_batch_1"][:6]
        lines += [
            "",
            f"{task}: pruned fp32 against the dense model with the same window, speedup / MAC "
            "ratio: " + "; ".join(ratios) + ". Where its batch-1 time goes (torch.profiler, self "
            "CPU time): " + ", ".join(f"`{e['op']}` {e['self_share']:.0%}" for e in top) + ".",
        ]
    return lines + [""]


def scale_section(scale) -> list[str]:
    order = ["get_mask_model", "training_step", "sparsity_report", "prune", "save_pretrained",
             "reload"]  # fmt: skip
    steps = sorted(scale["rows"][0]["steps"], key=lambda s: order.index(s) if s in order else 99)
    gpu = "peak_gpu_over_fp32_model" in scale["rows"][0]
    lines = [
        "### Scale: `benchmarks/scale.py`" + (" on a GPU" if gpu else ""),
        "",
        f"Random weights, {_machine(scale)}"
        + (f", {scale['environment'].get('cuda')}" if gpu else "")
        + "; seconds per step, one process per model; peak RSS as a multiple of the fp32 "
        "model's size (whole process, and above the process before the model was built)"
        + ("; peak GPU memory allocated, same multiple." if gpu else "."),
        "",
        "| model | params | "
        + " | ".join(steps)
        + " | peak RSS (GB) | x model | x model above start |"
        + (" GPU x model |" if gpu else ""),
        "|---|---:|" + "---:|" * len(steps) + "---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    for r in scale["rows"]:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.0f}M | "
            + " | ".join(f"{r['steps'][s]['seconds']:.2f}" for s in steps)
            + f" | {r['peak_rss'] / 1e9:.2f} | {r['peak_rss_over_fp32_model']:.2f} "
            f"| {r['peak_rss_above_start_over_fp32_model']:.2f} |"
            + (f" {r['peak_gpu_over_fp32_model']:.2f} |" if gpu else "")
        )
    return lines + [""]


def crepe_section(crepe) -> list[str]:
    removed = crepe["removed"]
    return [
        "### A plain PyTorch CNN: CREPE pitch (`benchmarks/crepe_pitch.py`)",
        "",
        f"{crepe['model']}, {crepe['task']}; {crepe['steps']} steps of {crepe['batch_size']} "
        f"frames, {crepe['device']} ({_machine(crepe)}); latency for a {crepe['latency_input']}.",
        "",
        "| model | pitch accuracy | params | MACs | latency (ms) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {name} | {crepe['accuracy'][name]:.3f} | {crepe['params'][name]:,} "
            f"| {crepe['macs'][name]:,} | {crepe['latency'][name]['median_s'] * 1e3:.1f} |"
            for name in ("dense", "pruned")
        ),
        "",
        f"Removed {removed['params_removed_fraction']:.1%} of parameters and "
        f"{removed['macs_removed_fraction']:.1%} of MACs; speedup "
        f"{crepe['ratios']['speedup']:.2f} for a MAC ratio of {crepe['ratios']['macs']:.2f}; "
        f"pruned vs masked max abs difference {crepe['max_abs_diff_pruned_vs_masked']:.1e}.",
        "",
        *frozen_mode_lines(crepe, _load("crepe_cpu_train_mode.json")),
    ]


def frozen_mode_lines(eval_mode, train_mode) -> list[str]:
    """The same CREPE run with the frozen CNN in training mode (its dropout on, as before
    hf_keepwhat 0.2) against eval mode (the default)."""
    if train_mode is None:
        return []
    return [
        "Frozen backbone in eval mode (default) vs training mode (`backbone_train_mode=True`: "
        "CREPE's dropout on while masks train), same seed and steps: pitch accuracy "
        f"{eval_mode['accuracy']['pruned']:.3f} vs {train_mode['accuracy']['pruned']:.3f}, "
        f"channels removed {eval_mode['removed']['units_removed_fraction']:.1%} vs "
        f"{train_mode['removed']['units_removed_fraction']:.1%}, MACs removed "
        f"{eval_mode['removed']['macs_removed_fraction']:.1%} vs "
        f"{train_mode['removed']['macs_removed_fraction']:.1%} "
        "(`crepe_cpu.json`, `crepe_cpu_train_mode.json`).",
        "",
    ]


def round_to_section(result) -> list[str]:
    header = ["model", "variant", "batch", "input (s)", "MACs vs exact",
              "latency (ms, median ± IQR)", "latency vs exact"]  # fmt: skip
    rows = [
        [
            r["model"],
            r["variant"],
            str(r["batch_size"]),
            f"{r['input_seconds']:g}",
            f"{r['macs_vs_exact']:.3f}",
            f"{r['latency_s'] * 1e3:.1f} ± {r['latency_iqr_s'] * 1e3:.1f}",
            f"{r['latency_vs_exact']:.3f}",
        ]  # fmt: skip
        for r in result["rows"]
    ]
    return [
        "### Hardware-aligned widths: `benchmarks/round_to.py`",
        "",
        f"{result['masks']}; {result['device']} ({_machine(result)}).",
        "",
        *markdown_table(header, rows, align="llrrrrr"),
        "",
    ]


# Results that are prepared but not yet run: the docs say so rather than say nothing.
NOT_MEASURED = {
    "scale_gpu.json": "Scale on a GPU: not measured yet (`benchmarks/gpu.sh scale` writes "
    "`benchmarks/results/scale_gpu.json`).",
}


def results_lines() -> list[str]:
    """Every results section, in the order `docs/results.md` shows them."""
    lines = []
    frontier = _load("frontier_gm.json")
    if frontier is not None:
        lines += frontier_section(frontier, _load("frontier_gm_latency.json"))
    lines += tables_section(load_tables())
    sources = _load("frontier_gm_sources.json")
    for name in ("frontier_gm_sources_latency.json", "frontier_gm_sources_latency_ort.json"):
        timed = _load(name)
        if sources is not None and timed is not None:
            lines += budget_section(sources, timed, name)
    for name, section in (
        ("demo_fsdd_report.json", demo_section),
        ("recipe_gm_base_at_tiny.json", recipe_gm_section),
        ("speed_cpu.json", speed_section),
        ("deploy_cpu.json", deploy_section),
        ("scale_cpu.json", scale_section),
        ("scale_gpu.json", scale_section),
        ("gpu_speed.json", gpu_section),
        ("round_to_cpu.json", round_to_section),
        ("crepe_cpu.json", crepe_section),
    ):
        result = _load(name)
        if result is not None:
            lines += section(result)
        elif name in NOT_MEASURED:
            lines += [NOT_MEASURED[name], ""]
    costs = [_load(n) for n in ("train_cost_cpu.json", "train_cost_base_cpu.json")]
    if any(costs):
        lines += cost_section([c for c in costs if c])
    # The sections were written as README subsections: one level up in a document of their own.
    return [line[1:] if line.startswith("###") else line for line in lines]


#: What research.md says above each re-run table (`render_arms.rerun_table`), by the re-run's
#: suffix, in the order the tables appear.
RERUN_INTROS = {
    "_average": "Averaging instead of choosing (`--checkpoint average`: the trained weights "
    "averaged over the evaluations of each phase's second half, the masks the last "
    "checkpoint's), on the seeds run both ways; the gaps with their 95% bootstrap "
    "interval over clips and seeds:",
    "_backbone_lr_2e-5": "A lower learning rate for the backbone (`--backbone_learning_rate 2e-5` "
    "in every phase, against the default 5e-5; the head's stays 1e-3), asked of Whisper base's "
    "fine-tuned dense reference, whose test accuracy spread most over the seeds; "
    "the best and last columns are the default rate's run, the re-run keeps its last "
    "checkpoints (`--checkpoint auto`):",
    "_head_first_100": "The head first (`--head_first_steps 100`: for the first 100 of the 500 "
    "steps of every phase that trains the backbone, its weights wait while the head and the "
    "masks train; LP-FT, Kumar et al. 2022: a random head's gradients distort the "
    "pretrained features), asked of the same spread and of tiny.en's default; the best "
    "and last columns are the default's run, the re-run keeps its last checkpoints:",
}


def weight_arms_lines() -> list[str]:
    """docs/research.md's weight-training section: ours against what a user would do instead,
    per regime whose `weight_arms_{regime}.json` exists."""
    lines = []
    for regime, words in (
        ("small", "a user's folder: 30 clips a family from FluidR3 (480 clips, the recipe "
         "carves 10% of them for validation, stratified and seeded)"),
        ("large", "gm_sources' whole train split: every GM program at 9 pitches and 2 "
         "velocities from FluidR3 (2287 clips; the recipe carves 10% for validation)"),
    ):  # fmt: skip
        result = _load(f"weight_arms_{regime}.json")
        if result is None:
            continue
        rows = result["rows"]
        # A run started from another run's dense/ names that folder as its model.
        models = sorted({r["model"] for r in rows if r["arm"] not in AFTER_DEFAULT})
        steps = sorted({r["steps"] for r in rows})
        lines += [
            "",
            f"## Training the weights: ours against what a user would do instead ({regime} data)",
            "",
            f"GM instrument families, {' and '.join(models)}, 1 s "
            f"window (MACs / dense: of the arm's own model); training data: {words}; "
            f"test: csound's GM SoundFont, never trained on ({rows[0]['test_examples']} clips). "
            f"Every arm: {', '.join(map(str, steps))} steps a phase, batch 8, the checkpoint best "
            "on validation, the same seeds (each seed draws its own clips and carve). Accuracy "
            "in points: the mean over the seeds (max - min); the gap to fine-tuning tiny.en with "
            "its 95% bootstrap interval over the test clips and seeds. MACs are hf_keepwhat's "
            "counter (attention matmuls included); latency batch 1, training time and peak RSS "
            "of the whole arm (ours: depth probes, dense probe, masks and fine-tuning; the median "
            "over the seeds) on this project's 2-core CPU, one thread an arm, two to four arms at "
            "a time: the latency and time columns moved with the load, so read speed from the "
            "MACs and from "
            "docs/results.md's interleaved timings (`benchmarks/weight_arms.py`).",
            "",
            *arms_table(rows),
            "",
            ours_on_validation(rows),
            "",
            "Choices made on each seed's validation (the depth is the same for every recipe arm "
            "of a model and seed):",
        ]
        for model in [
            m for m in models if any(r["model"] == m and r.get("depth") is not None for r in rows)
        ]:
            lines += ["", *choices_table(rows, model)]
        rules = checkpoint_rules_table(rows)
        if rules:
            validation = "/".join(map(str, sorted({r["validation_examples"] for r in rows})))
            lines += [
                "",
                f"What chooses a checkpoint ({validation} validation clips): every "
                "phase keeps its best checkpoint on validation and its last one; both scored on "
                "the test clips (`--score_last`), the gap with its 95% bootstrap interval over "
                f"clips and seeds. Below {LAST_CHECKPOINT_BELOW} validation clips `--checkpoint "
                "auto` keeps the last checkpoint (read from the small regime's table), at or above "
                "the best:",
                "",
                *rules,
            ]
        for suffix, intro in RERUN_INTROS.items():
            table = rerun_table(rows, suffix)
            if table:
                lines += ["", intro, "", *table]
        variants = against_default_table(rows)
        if variants:
            lines += [
                "",
                "The default as it runs today, and variants of it on the same seeds: its masks "
                "started from its own fine-tuned dense model (a second run with the first's "
                "`dense/` as `--model_name_or_path`, `--no_train_baseline` and the first run's depth "
                "as `--last_layer`: fine-tune dense, then masks over the weights; training time "
                "both runs'), and `--best_of 3` (three "
                "restarts of the masks, the one best on validation kept). The gaps with their 95% "
                "bootstrap interval over clips and seeds:",
                "",
                *variants,
            ]
    return lines


def replace_block(path: str, start: str, end: str, lines: list[str]) -> None:
    """Rewrites the part of `path` between the `start` and `end` marker lines (kept)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if start not in text or end not in text:
        raise ValueError(f"{path} has no {start} ... {end} block to render into.")
    head, rest = text.split(start, 1)
    text = head + "\n".join([start, *lines, end]) + rest.split(end, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(root: str = ROOT) -> None:
    """Rewrites `docs/results.md`, `docs/research.md` and the README's rendered blocks under
    `root` from the JSON files in this checkout's benchmarks/results (the test that docs are
    current renders into a copy and compares).

    Args:
        root: The folder holding `README.md` and `docs/`.
    """
    lines = [
        "# Results",
        "",
        "Every figure here is rendered by `python benchmarks/render_results.py` from the JSON files "
        "in `benchmarks/results/` (nothing typed by hand); `docs/development.md` lists the "
        "scripts that write them. Speed is always a ratio measured in one run (pruned against "
        "dense, same machine, same input).",
        "",
        "![Accuracy against encoder MACs on GM instrument families](../benchmarks/results/frontier_gm.png)",
        "",
        *results_lines(),
    ]
    with open(os.path.join(root, "docs", "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")
    sources = _load("frontier_gm_sources.json")
    if sources is not None:
        research = [
            "# Research notes",
            "",
            "What the project measured to decide its defaults, rendered by "
            "`python benchmarks/render_results.py` from `benchmarks/results/` (nothing typed by "
            "hand). Every choice is read on validation; test is reported only.",
            "",
            *sources_section(
                sources, (_load("frontier_gm_sources_probes.json") or {}).get("layer_probes")
            ),
        ]
        multi = _load("frontier_gm_multisource.json")
        if multi is not None:
            research += multisource_lines(sources, multi)
        research += weight_arms_lines()
        with open(os.path.join(root, "docs", "research.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(research).rstrip("\n") + "\n")
    tables = load_tables()
    if tables:
        replace_block(
            os.path.join(root, "README.md"),
            "<!-- latency:start -->",
            "<!-- latency:end -->",
            [
                "Measured on this project's 2-core CPU (batch 1, 1 s window; "
                "[docs/results.md](docs/results.md) has the masks trained for 50% and 25% of "
                "the dense latency, timed):",
                "",
                *tables_lines(tables),
            ],
        )
    demo = _load("demo_fsdd_report.json")
    if demo is not None:
        replace_block(os.path.join(root, "README.md"), START, END, demo_section(demo))


if __name__ == "__main__":
    main()
