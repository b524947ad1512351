"""Latency effect of hardware-aligned widths: `prune()` against `prune(round_to=N)`.

Learned masks leave widths like 1531 neurons; `round_to=N` keeps a multiple of N channels per
group. Each model gets random masks keeping 40-60% of every group's units (so widths are not
aligned), is pruned with each `round_to`, and every variant is timed in the same run on the same
input. Rounding adds units, so it only pays when the aligned kernels gain more than the extra MACs
cost: compare `latency_vs_exact` with `macs_vs_exact`.

    python benchmarks/round_to.py --out benchmarks/results/round_to_cpu.json
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from provenance import write_result  # noqa: E402
from speed import speed_models  # noqa: E402  (same models and inputs as the speed benchmark)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import (
    environment,  # noqa: E402
    get_mask_model,  # noqa: E402
)
from hf_keepwhat.profiling import count_macs, measure_latency  # noqa: E402


def random_partial_masks(mm, seed: int) -> None:
    """Keeps a random 40-60% of every group's units, so pruned widths are rarely aligned.

    Args:
        mm: The `MaskModel`.
        seed: Random seed.
    """
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        fraction = 0.4 + 0.2 * float(torch.rand(1, generator=generator))
        count = max(1, round(fraction * group.num_units))
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[:count])


def main() -> None:
    """Times each model pruned exactly and with every `round_to`; writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--whisper", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--round_to", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seconds", type=float, nargs="+", default=[4.0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/round_to_cpu.json")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)

    rows = []
    for name, build, config, lengths, make_inputs in speed_models(args):
        mm = get_mask_model(build(), config)
        random_partial_masks(mm, args.seed)
        backbone_path = mm.layout.backbone_path
        variants = {"exact": mm.prune()}
        for multiple in args.round_to:
            variants[f"round_to={multiple}"] = mm.prune(round_to=multiple)
        inputs = {k: v.to(device) for k, v in make_inputs(args.batch_size, lengths[-1]).items()}
        measured = {}
        for variant, model in variants.items():
            model.to(device)
            latency = measure_latency(model, inputs, repeats=args.repeats)
            measured[variant] = {
                "macs": count_macs(model.get_submodule(backbone_path), inputs),
                "latency_s": latency["median_s"],
                "latency_iqr_s": latency["iqr_s"],
            }
            print(name, variant, measured[variant], flush=True)
        exact = measured["exact"]
        for variant, m in measured.items():
            rows.append(
                {
                    "model": name,
                    "variant": variant,
                    "batch_size": args.batch_size,
                    "input_seconds": lengths[-1],
                    "macs": m["macs"],
                    "latency_s": m["latency_s"],
                    "latency_iqr_s": m["latency_iqr_s"],
                    "macs_vs_exact": m["macs"] / exact["macs"],
                    "latency_vs_exact": m["latency_s"] / exact["latency_s"],
                }
            )
    write_result(
        args.out,
        {
            "benchmark": "round_to",
            "device": str(device),
            "masks": "random, 40-60% of each group's units kept",
            "repeats": args.repeats,
            "environment": environment(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
