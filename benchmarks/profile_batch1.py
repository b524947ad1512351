"""Where batch-1 time goes in dense and pruned Whisper tiny.en, operator by operator.

The models of `benchmarks/speed.py` (real weights, 3 s window, magnitude masks keeping the same
share of every group) are timed and profiled with `torch.profiler` at batch 1, in alternation:
per operator, its CPU self time per forward in each model (the profiler's own overhead
inflates these; compare them between models, not with the wall time), next to the MAC ratio. Operators whose time does not shrink with the MACs are what keeps
the batch-1 speedup below the MAC ratio.

    python benchmarks/profile_batch1.py --out benchmarks/results/profile_batch1_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from provenance import write_result  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import WhisperForAudioClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import MaskConfig, environment, get_mask_model, set_structured_masks  # noqa: E402
from hf_keepwhat.profiling import count_macs  # noqa: E402


def pruned_whisper(path: str, target: float, window: int):
    """Whisper tiny.en cut to `window` seconds with `target` of its parameters removed by
    magnitude (0: dense)."""
    model = WhisperForAudioClassification.from_pretrained(path, num_labels=10)
    mm = get_mask_model(model, MaskConfig(max_input_seconds=window, target_sparsity=0.0))
    if target:
        set_structured_masks(mm, target, "l1")
    return mm.prune().eval()


@torch.inference_mode()
def interleaved_op_times(models: dict, inputs: dict, rounds: int, calls: int) -> dict:
    """Per model: median wall time of a forward, and each operator's self time and count per
    forward. Models are timed and profiled in alternation (`rounds` rounds of `calls` forwards
    each), so that a drift of the machine's speed hits all alike."""
    walls = {key: [] for key in models}
    totals = {key: {} for key in models}
    for model in models.values():
        for _ in range(5):
            model(**inputs)
    for _ in range(rounds):
        for key, model in models.items():
            for _ in range(calls):
                start = time.perf_counter()
                model(**inputs)
                walls[key].append(time.perf_counter() - start)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(calls):
                    model(**inputs)
            for e in prof.key_averages():
                op = totals[key].setdefault(e.key, {"self_ms": 0.0, "calls": 0.0})
                op["self_ms"] += e.self_cpu_time_total / 1e3 / (calls * rounds)
                op["calls"] += e.count / (calls * rounds)
    return {
        key: {"wall_ms": statistics.median(walls[key]) * 1e3, "ops": totals[key]} for key in models
    }


def main() -> None:
    """Profiles dense and pruned models and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--whisper", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/profile_batch1_cpu.json")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    inputs = {"input_features": torch.randn(1, 80, args.window * 100)}
    models = {t: pruned_whisper(args.whisper, t, args.window) for t in [0.0, *args.targets]}
    measured = interleaved_op_times(models, inputs, args.rounds, args.calls)
    for target, model in models.items():
        measured[target]["macs"] = count_macs(model, inputs)
    dense = measured[0.0]
    top = sorted(dense["ops"], key=lambda k: -dense["ops"][k]["self_ms"])[: args.top]
    rows = []
    for target in args.targets:
        pruned = measured[target]
        rows.append(
            {
                "target_sparsity": target,
                "dense_wall_ms": dense["wall_ms"],
                "pruned_wall_ms": pruned["wall_ms"],
                "speedup": dense["wall_ms"] / pruned["wall_ms"],
                "mac_ratio": dense["macs"] / pruned["macs"],
                "ops": [
                    {
                        "op": op,
                        "calls_per_forward": dense["ops"][op]["calls"],
                        "dense_ms": dense["ops"][op]["self_ms"],
                        "pruned_ms": pruned["ops"].get(op, {"self_ms": 0.0})["self_ms"],
                    }
                    for op in top
                ],
            }
        )
    write_result(args.out, {"benchmark": "profile_batch1", "model": "whisper-tiny.en",
                          "window_s": args.window, "environment": environment(),
                          "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
                          "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
