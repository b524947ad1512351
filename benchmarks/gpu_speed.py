"""GPU speed of pruned Whisper encoders: latency by dtype, batch and width rounding, and the step
time of mask training against full fine-tuning and a linear probe.

Speed depends on shapes only, so the models are Whisper encoders of the tiny, base and
large-v3 shapes with random weights (built on the GPU; no download). Units are removed by
magnitude to 50% and 75% of encoder MACs, the same fraction in every group, and every pruned
model is timed against its dense counterpart in the same run on the same input; `round_to`
rows re-prune the 50% masks to multiples of 8 and 64 channels. Attention runs through
transformers' SDPA implementation (its default for Whisper). `benchmarks/gpu.sh` runs it.

    python benchmarks/gpu_speed.py --out benchmarks/results/gpu_speed.json
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import WhisperConfig, WhisperForAudioClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import (  # noqa: E402
    MaskConfig,
    environment,  # noqa: E402
    get_mask_model,
)
from hf_keepwhat.baselines import set_structured_masks  # noqa: E402
from hf_keepwhat.profiling import count_macs, measure_latency  # noqa: E402

# Encoder shapes of the released checkpoints (openai/whisper-tiny, -base, -large-v3).
SHAPES = {
    "whisper-tiny": {"d_model": 384, "layers": 4, "heads": 6, "ffn": 1536, "mels": 80},
    "whisper-base": {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "mels": 80},
    "whisper-large-v3": {"d_model": 1280, "layers": 32, "heads": 20, "ffn": 5120, "mels": 128},
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def whisper_config(shape: str, num_labels: int = 10) -> WhisperConfig:
    """A `WhisperConfig` with the encoder shape of a released checkpoint."""
    s = SHAPES[shape]
    return WhisperConfig(
        d_model=s["d_model"],
        encoder_layers=s["layers"],
        encoder_attention_heads=s["heads"],
        encoder_ffn_dim=s["ffn"],
        decoder_layers=1,
        num_mel_bins=s["mels"],
        num_labels=num_labels,
    )


def pruned_variants(shape: str, window: int, device, targets, round_to) -> dict:
    """Dense, magnitude-pruned at each MACs target, and the first target re-rounded."""
    variants = {}
    for target in [0.0, *targets]:
        torch.manual_seed(0)
        with torch.device(device):  # a large-v3-sized encoder initialises far faster there
            model = WhisperForAudioClassification(whisper_config(shape))
        mm = get_mask_model(
            model, MaskConfig(max_input_seconds=window, budget="macs", target_sparsity=0.0)
        )
        if target:
            set_structured_masks(mm, target, "l1")
        variants[(target, 1)] = mm.prune().eval()
        if target == targets[0]:
            for multiple in round_to:
                variants[(target, multiple)] = mm.prune(round_to=multiple).eval()
        del mm, model
    return variants


def latency_rows(args, device, rows: list, save) -> None:
    """Dense vs pruned latency for every (shape, window, dtype, batch, variant), appended to
    `rows`; `save()` is called after each row, so a run stopped at its time limit keeps them."""
    for shape, windows in args.shapes.items():
        for window in windows:
            variants = pruned_variants(shape, window, device, args.targets, args.round_to)
            mels = SHAPES[shape]["mels"]
            one = {"input_features": torch.zeros(1, mels, 100 * window, device=device)}
            macs = {key: count_macs(model.encoder, one) for key, model in variants.items()}
            # Batches whose fp32 run would take seconds each are left out (large-v3, 30 s).
            batches = [b for b in args.batch_sizes if b * macs[(0.0, 1)] <= args.max_batch_macs]
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                for batch in batches:
                    x = torch.randn(batch, mels, 100 * window, device=device, dtype=dtype)
                    for (target, multiple), model in variants.items():
                        model.to(dtype)
                        latency = measure_latency(
                            model, {"input_features": x}, warmup=args.warmup, repeats=args.repeats
                        )
                        if target == 0.0:
                            dense_time = latency["median_s"]
                        rows.append(
                            {
                                "model": shape,
                                "window_s": window,
                                "dtype": dtype_name,
                                "batch_size": batch,
                                "macs_target": target,
                                "round_to": multiple,
                                "latency_s": latency["median_s"],
                                "iqr_s": latency["iqr_s"],
                                "speedup": dense_time / latency["median_s"],
                                "mac_ratio": macs[(0.0, 1)] / macs[(target, multiple)],
                            }
                        )
                        print(rows[-1], flush=True)
                        save()
            del variants


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_time(model, x, y, steps: int, optimizer) -> float:
    """Median seconds of one optimizer step (forward, backward, update)."""
    times = []
    for _ in range(steps):
        _sync(x.device)
        start = time.perf_counter()
        model(input_features=x, labels=y).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(x.device)
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    return times[len(times) // 2]


def training_rows(args, device) -> list[dict]:
    """Step time and peak GPU memory of mask training, full fine-tuning and a linear probe."""
    rows = []
    for shape, windows in args.shapes.items():
        window = windows[0]
        for mode in ("masked", "full_finetune", "linear_probe"):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            torch.manual_seed(0)
            with torch.device(device):
                model = WhisperForAudioClassification(whisper_config(shape))
            config = MaskConfig(max_input_seconds=window, budget="macs", target_sparsity=0.5)
            mm = get_mask_model(model, config)
            if mode == "masked":
                params = mm.param_groups(1e-3)
                trained = mm
            else:
                mm.masks.requires_grad_(False)
                model.encoder.requires_grad_(mode == "full_finetune")
                model.encoder.embed_positions.requires_grad_(False)
                params = [p for p in model.parameters() if p.requires_grad]
                trained = model
            optimizer = torch.optim.AdamW(params, lr=1e-3)
            mels = SHAPES[shape]["mels"]
            x = torch.randn(args.train_batch, mels, 100 * window, device=device)
            y = torch.randint(0, 10, (args.train_batch,), device=device)
            seconds = step_time(trained, x, y, args.train_steps, optimizer)
            rows.append(
                {
                    "model": shape,
                    "window_s": window,
                    "mode": mode,
                    "batch_size": args.train_batch,
                    "step_s": seconds,
                    "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20
                    if device.type == "cuda"
                    else None,
                }
            )
            print(rows[-1], flush=True)
            del mm, model, trained, optimizer
    return rows


def main() -> None:
    """Measures latency and training rows on the GPU and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--round_to", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--max_batch_macs", type=float, default=1e13, help="skip batches above this many MACs"
    )
    parser.add_argument("--train_batch", type=int, default=8)
    parser.add_argument("--train_steps", type=int, default=12)
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["whisper-tiny=1,30", "whisper-base=1,30", "whisper-large-v3=30"],
        help="SHAPE=WINDOW[,WINDOW]: input windows in seconds per encoder shape",
    )
    parser.add_argument("--out", default="benchmarks/results/gpu_speed.json")
    args = parser.parse_args()
    args.shapes = {
        name: [int(w) for w in windows.split(",")]
        for name, windows in (item.split("=") for item in args.shapes)
    }
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    started = time.perf_counter()
    result = {"benchmark": "gpu_speed", "environment": environment(), "latency": [], "training": []}

    def save():
        result["seconds"] = time.perf_counter() - started
        write_result(args.out, result)

    result["training"] = training_rows(args, device)
    save()
    latency_rows(args, device, result["latency"], save)


if __name__ == "__main__":
    main()
