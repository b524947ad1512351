"""Deployment speed and accuracy of pruned models on the CPU: int8, ONNX Runtime, torch.compile.

For each trained pruned Whisper model given (`--task NAME=PRUNED_DIR`; FSDD digits and GM
instruments), the task's test accuracy of the model as PyTorch fp32, PyTorch dynamic int8
(`hf_keepwhat.quantization`), ONNX Runtime fp32 and ONNX Runtime int8 (`hf_keepwhat.export`).
For every task, latency at each batch size of: the stock model (`--stock`, 30 s window,
fp32), the same model cut to the pruned model's window (dense, fp32 and int8), and the pruned
model in every form. Variants are timed in alternation (`--rounds` rounds of `--repeats`
calls each, medians of the round medians), on one random input per batch size, so that ratios
come from one run. A `torch.profiler` table of the pruned fp32 model at batch 1 says where its
time goes.

    python benchmarks/deploy.py --stock $KEEPWHAT_WHISPER_TINY \
        --task fsdd=out/demo/pruned --fsdd $KEEPWHAT_FSDD \
        --task gm=out/gm/pruned --gm data/gm_instruments \
        --out benchmarks/results/deploy_cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402
from audio_data.fsdd import FILE_NAME, split_of  # noqa: E402
from frontier import featurize, read_audiofolder  # noqa: E402
from provenance import write_result  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import (  # noqa: E402
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import MaskConfig, environment, get_mask_model  # noqa: E402
from hf_keepwhat.export import INT8_FILE, ONNX_FILE, export_onnx, onnx_session  # noqa: E402
from hf_keepwhat.profiling import count_macs  # noqa: E402
from hf_keepwhat.quantization import quantize_dynamic_int8  # noqa: E402


def torch_runner(model):
    """A function of the input features that runs `model` without autograd."""

    def run(features):
        with torch.inference_mode():
            return model(input_features=features).logits.numpy()

    return run


def onnx_runner(path: str, threads: int):
    """A function of the input features that runs the ONNX graph at `path`."""
    session = onnx_session(path, threads)
    return lambda features: session.run(None, {"input_features": features.numpy()})[0]


def variants_of(pruned, onnx_dir: str, threads: int) -> dict:
    """The pruned model in every deployment form, as runners."""
    return {
        "pruned_fp32": torch_runner(pruned),
        "pruned_int8": torch_runner(quantize_dynamic_int8(pruned)),
        "pruned_onnx_fp32": onnx_runner(os.path.join(onnx_dir, ONNX_FILE), threads),
        "pruned_onnx_int8": onnx_runner(os.path.join(onnx_dir, INT8_FILE), threads),
    }


def fsdd_test(folder: str, extractor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features and labels of FSDD's standard test split (recording index 0-4), read
    from the flat folder of recordings at 8 kHz and resampled to 16 kHz."""
    audio, labels = [], []
    for name in sorted(os.listdir(folder)):
        match = FILE_NAME.fullmatch(name)
        if match and split_of(int(match["index"])) == "test":
            clip, rate = sf.read(os.path.join(folder, name), dtype="float32")
            audio.append(
                torchaudio.functional.resample(torch.from_numpy(clip), rate, 16000).numpy()
            )
            labels.append(int(match["digit"]))
    features = extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    return features, torch.tensor(labels)


def test_features(task: str, args, window: float, extractor_path: str):
    """Test features and labels of `task` for a `window`-second input."""
    if task == "fsdd":
        return fsdd_test(args.fsdd, AutoFeatureExtractor.from_pretrained(extractor_path))
    splits, _ = read_audiofolder(args.gm)
    return featurize(extractor_path, {"test": splits["test"]}, window)["test"]


def accuracy(run, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Arg-max accuracy of a runner over `features`, 50 at a time."""
    logits = np.concatenate([run(features[i : i + 50]) for i in range(0, len(features), 50)])
    return float((torch.from_numpy(logits).argmax(-1) == labels).float().mean())


def interleaved_latency(calls: dict, rounds: int, repeats: int) -> dict:
    """Median seconds of each argument-less call in `calls`, timed in alternation."""
    times = {name: [] for name in calls}
    for call in calls.values():  # warm-up: lazy init, compilation, allocator
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
            times[name].append(statistics.median(seconds))
    return {name: statistics.median(medians) for name, medians in times.items()}


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


def profile_table(model, features: torch.Tensor, rows: int = 12) -> list[dict]:
    """Where a forward pass spends CPU time: the top operators by self time (the profiling of
    one model, one round)."""
    measured = interleaved_op_times({"model": model}, {"input_features": features}, 1, 10)
    ops = measured["model"]["ops"]
    total = sum(op["self_ms"] for op in ops.values())
    top = sorted(ops, key=lambda name: ops[name]["self_ms"], reverse=True)[:rows]
    return [
        {
            "op": name,
            "calls_per_forward": ops[name]["calls"],
            "self_share": ops[name]["self_ms"] / total,
        }
        for name in top
    ]


def measure_task(task: str, path: str, args, onnx_root: str) -> tuple[dict, object, dict]:
    """Accuracy of every form of one pruned model; returns the rows, the model and runners."""
    pruned = AutoModelForAudioClassification.from_pretrained(path).eval()
    window = pruned.config.max_source_positions * 2 / 100  # 100 mel frames per second
    window = int(window) if window.is_integer() else window  # the stock extractor wants an int
    features, labels = test_features(task, args, window, path)
    onnx_dir = os.path.join(onnx_root, task)
    check = export_onnx(pruned, onnx_dir, {"input_features": features[:2]}, int8=True)
    runners = variants_of(pruned, onnx_dir, args.threads)
    result = {
        "model": path,
        "window_s": window,
        "test_examples": len(labels),
        "onnx_check": check,
        "accuracy": {name: accuracy(run, features, labels) for name, run in runners.items()},
    }
    print(task, result["accuracy"], flush=True)
    return result, pruned, runners


def dense_models(stock: str, num_labels: int, window: int) -> dict:
    """The stock model (30 s window) and the same model cut to `window` seconds (dense)."""
    hf_logging.set_verbosity_error()
    full = WhisperForAudioClassification.from_pretrained(stock, num_labels=num_labels).eval()
    base = WhisperForAudioClassification.from_pretrained(stock, num_labels=num_labels)
    cut = get_mask_model(base, MaskConfig(max_input_seconds=window)).prune().eval()
    return {"stock_30s": full, "dense_window": cut}


def latency_rows(pruned, runners: dict, args, window: float) -> list[dict]:
    """Latency of every variant at every batch size, with ratios against the stock model and
    against the dense model with the same window."""
    torch.set_num_threads(args.threads)
    dense = dense_models(args.stock, pruned.config.num_labels, window)
    frames = {"stock_30s": 3000, "dense_window": round(window * 100)}
    runners = {
        "stock_30s": torch_runner(dense["stock_30s"]),
        "dense_window_fp32": torch_runner(dense["dense_window"]),
        "dense_window_int8": torch_runner(quantize_dynamic_int8(dense["dense_window"])),
        **runners,
        "pruned_compiled": torch_runner(torch.compile(pruned)),
    }
    rows = []
    for batch in args.batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        window_input = torch.randn(batch, 80, frames["dense_window"], generator=generator)
        full_input = torch.randn(batch, 80, 3000, generator=generator)
        # Each runner gets the input its window takes; the stock model is timed on 30 s.
        calls = {
            name: (lambda run=run, x=full_input if name == "stock_30s" else window_input: run(x))
            for name, run in runners.items()
        }
        medians = interleaved_latency(calls, args.rounds, args.repeats)
        times = {}
        stock_macs = count_macs(dense["stock_30s"], {"input_features": full_input})
        macs = {
            "stock_30s": stock_macs,
            "dense_window": count_macs(dense["dense_window"], {"input_features": window_input}),
            "pruned": count_macs(pruned, {"input_features": window_input}),
        }
        for name, seconds in medians.items():
            times[name] = {
                "median_s": seconds,
                "speedup_vs_stock_30s": medians["stock_30s"] / seconds,
                "speedup_vs_dense_window_fp32": medians["dense_window_fp32"] / seconds,
            }
        rows.append({"batch_size": batch, "frames": frames, "macs": macs, "latency": times})
        print(batch, {n: round(t["speedup_vs_stock_30s"], 2) for n, t in times.items()}, flush=True)
    return rows


def main() -> None:
    """Measures accuracy and latency of every deployment form and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stock", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--task", action="append", required=True, help="NAME=PRUNED_DIR")
    parser.add_argument("--fsdd", default=os.environ.get("KEEPWHAT_FSDD"))
    parser.add_argument("--gm", help="GM-instrument audiofolder (test split)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/deploy_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = dict(item.split("=", 1) for item in args.task)
    result = {"benchmark": "deploy", "threads": args.threads, "rounds": args.rounds,
              "repeats": args.repeats, "environment": environment(), "tasks": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as onnx_root:
        for task, path in tasks.items():
            measured, pruned, runners = measure_task(task, path, args, onnx_root)
            window = measured["window_s"]
            frames = round(window * 100)
            sample = torch.randn(1, 80, frames, generator=torch.Generator().manual_seed(0))
            measured["profile_pruned_fp32_batch_1"] = profile_table(pruned, sample)
            measured["latency"] = latency_rows(pruned, runners, args, window)
            result["tasks"][task] = measured
            write_result(args.out, result)


if __name__ == "__main__":
    main()
