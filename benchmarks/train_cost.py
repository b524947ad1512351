"""Training cost: step time and peak memory of mask training vs full fine-tuning vs linear probe,
mask training and full fine-tuning also with gradient checkpointing.

Each mode runs in its own process so that its peak memory (max RSS on CPU,
`torch.cuda.max_memory_allocated` on GPU) is its own. On the CPU the process's peak RSS also
holds torch and the weights, so the peak of training above the loaded model (peak RSS reset
before the first step) is recorded too. All modes use the same model, batch and input; the
figures to quote are the ratios within one run of this script.

    python benchmarks/train_cost.py --model $KEEPWHAT_WHISPER_TINY \
        --out benchmarks/results/train_cost_cpu.json
    python benchmarks/train_cost.py --model $KEEPWHAT_WHISPER_BASE \
        --out benchmarks/results/train_cost_base_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = (
    "masked",
    "full_finetune",
    "linear_probe",
    "masked_checkpointing",
    "full_finetune_checkpointing",
)


def _proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS: resident now; VmHWM: its peak), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so that the peak read after training
    # is the peak of training, not of loading the checkpoint.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _build(mode: str, model_path: str, window: float):
    checkpointing = mode.endswith("_checkpointing")
    mode = mode.removesuffix("_checkpointing")
    model = _build_mode(mode, model_path, window)
    if checkpointing:  # what TrainingArguments(gradient_checkpointing=True) calls
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _build_mode(mode: str, model_path: str, window: float):
    import torch
    from transformers import WhisperForAudioClassification
    from transformers.utils import logging as hf_logging

    from hf_keepwhat import MaskConfig, get_mask_model
    from hf_keepwhat.layouts import get_layout

    hf_logging.set_verbosity_error()
    model = WhisperForAudioClassification.from_pretrained(model_path, num_labels=10)
    if mode == "masked":
        return get_mask_model(model, MaskConfig(max_input_seconds=window))
    # The same shortened window as the masked model, so that only the training mode differs.
    get_layout(model).set_input_window(window)
    if mode == "linear_probe":
        model.encoder.requires_grad_(False)
    else:
        model.requires_grad_(True)
        model.encoder.embed_positions.requires_grad_(False)  # fixed sinusoids, never trained
    return model.to(torch.float32)


def run_mode(args) -> dict:
    """Times `args.steps` optimizer steps of one mode after `args.warmup` untimed ones."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = _build(args.mode, args.model, args.window).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    frames = int(args.window * 100)
    features = torch.randn(args.batch_size, 80, frames, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    resident_before = _proc_status_bytes("VmRSS")
    peak_reset = _reset_peak_rss()
    wall, cpu = [], []
    for step in range(args.warmup + args.steps):
        sync()
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        loss = model(input_features=features, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if step >= args.warmup:
            wall.append(time.perf_counter() - t_wall)
            cpu.append(time.process_time() - t_cpu)
    training_peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if peak_reset and resident_before is not None:
            # What training adds above the loaded model: activations, gradients, optimizer
            # state (the process's own footprint, torch and the weights, cancels out).
            training_peak = _proc_status_bytes("VmHWM") - resident_before
    return {
        "mode": args.mode,
        "trainable_params": sum(p.numel() for p in params),
        "step_wall_s_median": statistics.median(wall),
        "step_wall_s_stdev": statistics.stdev(wall) if len(wall) > 1 else 0.0,
        "step_cpu_s_median": statistics.median(cpu),
        "peak_memory_bytes": peak,
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "training_peak_above_loaded_bytes": training_peak,
    }


def _training_peak_ratio(result: dict, full: dict) -> dict:
    above, full_above = (r["training_peak_above_loaded_bytes"] for r in (result, full))
    return {"training_peak_above_loaded": above / full_above} if above and full_above else {}


def main() -> None:
    """Runs every mode in a subprocess and writes one JSON file with the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--window", type=float, default=3.0, help="Whisper input window (s)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/train_cost_cpu.json")
    args = parser.parse_args()
    if not args.model:
        parser.error("--model is required (or set KEEPWHAT_WHISPER_TINY to a Whisper model folder)")

    if args.mode:  # child process: one mode, JSON on stdout
        print(json.dumps(run_mode(args)))
        return

    results = {}
    for mode in MODES:
        command = [sys.executable, __file__, "--mode", mode] + [
            f"--{k}={v}" for k, v in vars(args).items() if k not in ("mode", "out")
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    full = results["full_finetune"]
    report = {
        "benchmark": "train_cost",
        "model": os.path.basename(os.path.normpath(args.model)),
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "input_window_s": args.window,
        "steps": args.steps,
        "results": results,
        "ratios": {
            f"{mode}_vs_full_finetune": {
                "step_wall": results[mode]["step_wall_s_median"] / full["step_wall_s_median"],
                "step_cpu": results[mode]["step_cpu_s_median"] / full["step_cpu_s_median"],
                "peak_memory": results[mode]["peak_memory_bytes"] / full["peak_memory_bytes"],
                **_training_peak_ratio(results[mode], full),
            }
            for mode in MODES
            if mode != "full_finetune"
        },
    }
    from provenance import write_result  # like run_mode, the library is imported lazily

    write_result(args.out, report)
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
