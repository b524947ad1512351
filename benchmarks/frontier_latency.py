"""CPU latency of every model of the frontier (`benchmarks/frontier.py`), rebuilt from the kept
units its JSON records: speed depends only on the shapes, so the pruned model is rebuilt from the
base weights and the recorded masks, pruned, and timed against the dense model of the same base
in the same run, on the same input (the 1 s window), at batch 1 and 8, the two timed in
alternation. Runs already in `--out` (same machine, threads and runtime) are not timed again;
`--where` times a subset (e.g. `--where meet_target=true`: the supported finish). `--runtime
onnxruntime` times both exported to ONNX, on ONNX Runtime's CPU provider with spinning off (as
`keepwhat profile-latency` does).

    python benchmarks/frontier_latency.py --frontier benchmarks/results/frontier_gm.json \\
        --model whisper-tiny.en=$KEEPWHAT_WHISPER_TINY --model whisper-base=$KEEPWHAT_WHISPER_BASE
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from frontier import Point, mask_config, set_recorded_kept  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import WhisperForAudioClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import environment, get_mask_model, measure_latency  # noqa: E402
from hf_keepwhat.files import read_json  # noqa: E402
from hf_keepwhat.latency_profile import interleaved_ms, runtime_call  # noqa: E402


def rebuild(run: dict, path: str, window: int, num_labels: int):
    """The pruned model of one frontier run (dense when it kept everything)."""
    point = Point(**{k: run[k] for k in Point.__dataclass_fields__ if k in run})
    if point.method == "mask_latency":  # only the recorded shapes matter, not what priced them
        point = dataclasses.replace(point, method="mask_macs")
    model = WhisperForAudioClassification.from_pretrained(path, num_labels=num_labels)
    mm = get_mask_model(model, mask_config(point, window, model.config.encoder_layers))
    set_recorded_kept(mm, run.get("kept", {}))
    return mm.prune().eval()


def main() -> None:
    """Times every run's model and writes one JSON file keyed like the frontier's runs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frontier", default="benchmarks/results/frontier_gm.json")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5, help="alternations dense/pruned")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--out", default="benchmarks/results/frontier_gm_latency.json")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        help="FIELD=JSON: time only the runs with this field value, e.g. meet_target=true",
    )
    args = parser.parse_args()
    where = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.where)}
    hf_logging.set_verbosity_error()
    paths = dict(item.split("=", 1) for item in args.model)
    frontier = read_json(args.frontier)
    window, num_labels = frontier["window_s"], len(frontier["labels"])
    # Each row's ratio comes from its own alternation, so rows timed earlier stay valid; only the
    # runs not yet timed are (on the same machine and threads; otherwise start afresh).
    earlier = read_json(args.out) if os.path.exists(args.out) else {}
    earlier_setting = (
        earlier.get("threads"),
        earlier.get("environment", {}).get("machine"),
        earlier.get("runtime", "torch"),
    )
    same_machine = earlier_setting == (args.threads, environment()["machine"], args.runtime)
    rows = earlier.get("rows", {}) if same_machine else {}
    for name, path in paths.items():
        runs = [
            r
            for r in frontier["runs"]
            if r["model"] == name and "error" not in r and r["key"] not in rows
            and all(r.get(k) == v for k, v in where.items())
        ]  # fmt: skip
        dense = rebuild({"model": name, "method": "linear_probe", "target": 0.0, "seed": 0},
                        path, window, num_labels)  # fmt: skip
        for run in runs:
            model = rebuild(run, path, window, num_labels)
            rows[run["key"]] = {"model": name, "latency": interleaved(dense, model, args)}
            ratios = {b: round(t["speedup"], 2) for b, t in rows[run["key"]]["latency"].items()}
            print(name, run["method"], run["target"], run["last_layer"], ratios, flush=True)
            write_result(args.out, {"benchmark": "frontier_latency", "window_s": window,
                                  "environment": environment(), "threads": args.threads,
                                  "runtime": args.runtime, "rounds": args.rounds,
                                  "repeats": args.repeats, "rows": rows})  # fmt: skip


def interleaved(dense, pruned, args) -> dict:
    """Dense and pruned timed in alternation (`rounds` x `repeats` runs each, per batch size),
    so that a drift of the machine's speed during the benchmark hits both alike."""
    out = {}
    mels = dense.config.num_mel_bins
    frames = 2 * dense.config.max_source_positions
    for batch in args.batch_sizes:
        x = {"input_features": torch.randn(batch, mels, frames)}
        if args.runtime == "onnxruntime":
            with tempfile.TemporaryDirectory() as folder:
                calls = [
                    runtime_call(m, x, "onnxruntime", args.threads, os.path.join(folder, k))
                    for k, m in (("dense", dense), ("pruned", pruned))
                ]
                ms = interleaved_ms(calls, args.rounds, args.repeats)
            medians = {"dense": ms[0] / 1e3, "pruned": ms[1] / 1e3}
        else:
            times = {"dense": [], "pruned": []}
            for _ in range(args.rounds):
                for key, model in (("dense", dense), ("pruned", pruned)):
                    measured = measure_latency(model, x, warmup=1, repeats=args.repeats,
                                               threads=args.threads)  # fmt: skip
                    times[key].append(measured["median_s"])
            medians = {k: statistics.median(v) for k, v in times.items()}
        out[f"batch_{batch}"] = {
            "dense_median_s": medians["dense"],
            "median_s": medians["pruned"],
            "speedup": medians["dense"] / medians["pruned"],
        }
    return out


if __name__ == "__main__":
    main()
