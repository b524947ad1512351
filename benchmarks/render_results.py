"""Writes the README's "Results" section from the benchmark JSON files (nothing typed by hand).

python benchmarks/render_results.py          # rewrites the part between the markers
"""

from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
START, END = "<!-- results:start -->", "<!-- results:end -->"


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


def demo_section(demo) -> list[str]:
    run = demo["runs"][0]
    dense = demo["dense"]
    return [
        "### Spoken digits (FSDD) with Whisper tiny.en: `make demo`",
        "",
        f"From `benchmarks/results/demo_fsdd_report.json` ({_machine(demo)}); latency is batch 1, "
        "one test clip, median of repeated runs.",
        "",
        "| model | accuracy | encoder params | MACs | latency (ms) | disk (MB) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| dense, linear probe | {dense['metrics']['accuracy']:.3f} | {dense['backbone_params']:,} "
        f"| {dense['macs']:,} | {dense['latency']['median_s'] * 1e3:.1f} | {dense['disk_bytes'] / 1e6:.1f} |",
        f"| pruned, target {run['target_sparsity']} | {run['metrics']['accuracy']:.3f} "
        f"| {run['backbone_params']:,} | {run['macs']:,} | {run['latency']['median_s'] * 1e3:.1f} "
        f"| {run['disk_bytes'] / 1e6:.1f} |",
        "",
        f"Removed: {run['removed']['params_removed_fraction']:.1%} of encoder parameters, "
        f"{run['removed']['macs_removed_fraction']:.1%} of MACs; latency ratio dense/pruned "
        f"{run['ratios']['latency']:.2f}, MAC ratio {run['ratios']['macs']:.2f}.",
        "",
    ]


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


def cost_section(cost) -> list[str]:
    lines = [
        "### Training cost: `benchmarks/train_cost.py`",
        "",
        f"Whisper tiny.en, batch {cost['batch_size']}, {cost['input_window_s']:g} s window, "
        f"{cost['device']} ({_machine(cost)}).",
        "",
        "| mode | trainable params | step time (s) | peak memory (MB) |",
        "|---|---:|---:|---:|",
    ]
    for mode, r in cost["results"].items():
        lines.append(
            f"| {mode} | {r['trainable_params']:,} | {r['step_wall_s_median']:.3f} "
            f"| {r['peak_memory_bytes'] / 1e6:.0f} |"
        )
    ratios = cost["ratios"]["masked_vs_full_finetune"]
    lines += [
        "",
        f"Mask training vs full fine-tuning: step time x{ratios['step_wall']:.2f}, "
        f"peak memory x{ratios['peak_memory']:.2f}.",
        "",
    ]
    return lines


def accuracy_section(acc) -> list[str]:
    lines = [
        "### Accuracy against removed parameters: `benchmarks/accuracy.py`",
        "",
        f"FSDD test accuracy, Whisper tiny.en, {acc['steps']} steps of batch {acc['batch_size']}, "
        f"seeds {sorted({r['seed'] for r in acc['runs']})}. Plot: "
        "`benchmarks/results/accuracy_fsdd.png`. Head (and masks' own rate 0.02) at 1e-3, full "
        "fine-tuning at 3e-5; `drop_layers` targets count dropped top layers (of 4).",
        "",
        "| method | target | params removed | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for r in acc["runs"]:
        lines.append(
            f"| {r['method']} | {r['target']:g} | {r['params_removed_fraction']:.1%} | {r['accuracy']:.3f} |"
        )
    return lines + [""]


def main() -> None:
    """Rewrites the README's results section."""
    lines = [START, "", "## Results", ""]
    for name, section in (
        ("demo_fsdd_report.json", demo_section),
        ("speed_cpu.json", speed_section),
        ("train_cost_cpu.json", cost_section),
    ):
        result = _load(name)
        if result is not None:
            lines += section(result)
    accuracy = [
        _load(n)
        for n in sorted(os.listdir(RESULTS))
        if n.startswith("accuracy_fsdd") and n.endswith(".json")
    ]
    if accuracy:
        merged = {**accuracy[0], "runs": [r for a in accuracy for r in a["runs"]]}
        lines += accuracy_section(merged)
    lines.append(END)
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        text = f.read()
    if START in text:
        head, rest = text.split(START, 1)
        text = head + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    with open(readme, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
