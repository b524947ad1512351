"""Inference speed of pruned vs dense models: realised speedup against the MAC ratio.

For Whisper tiny.en (real weights, 3 s window) and a wav2vec2-base-sized classifier (random
weights: speed does not depend on their values), units are removed by magnitude to 25/50/75% of
the backbone's parameters; every pruned model is timed against its dense counterpart in the same
run, on the same input. The key figure is `speedup / mac_ratio` (1.0: the MAC savings turn fully
into time).

    python benchmarks/speed.py --out benchmarks/results/speed_cpu.json
    python benchmarks/speed.py --device cuda --out benchmarks/results/speed_cuda.json
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import (  # noqa: E402
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import (  # noqa: E402
    MaskConfig,
    environment,  # noqa: E402
    get_mask_model,
)
from hf_keepwhat.baselines import set_structured_masks  # noqa: E402
from hf_keepwhat.profiling import count_macs, measure_latency  # noqa: E402
from hf_keepwhat.tasks import saved_figure  # noqa: E402


def speed_models(args):
    """The benchmarked models: `(name, build, MaskConfig, input lengths, make_inputs)` each.

    Args:
        args: Parsed arguments with `whisper` (folder or None) and `seconds` (wav2vec2 lengths).
    """
    hf_logging.set_verbosity_error()
    if args.whisper:
        yield (
            "whisper-tiny.en",
            lambda: WhisperForAudioClassification.from_pretrained(args.whisper, num_labels=10),
            MaskConfig(max_input_seconds=3, target_sparsity=0.0),
            [3.0],
            lambda batch, seconds: {"input_features": torch.randn(batch, 80, int(seconds * 100))},
        )
    yield (
        "wav2vec2-base-sized (random weights)",
        lambda: Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=10)),
        MaskConfig(target_sparsity=0.0),
        args.seconds,
        lambda batch, seconds: {"input_values": torch.randn(batch, int(seconds * 16000))},
    )


def main() -> None:
    """Measures every (model, sparsity, batch, input length) and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--whisper", default=os.environ.get("KEEPWHAT_WHISPER_TINY"), help="Whisper tiny.en folder"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=[1.0, 4.0, 10.0], help="wav2vec2 input lengths"
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/speed_cpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    rows = []
    for name, build, config, lengths, make_inputs in speed_models(args):
        dense_mm = get_mask_model(build(), config)
        backbone_path = dense_mm.layout.backbone_path
        models = {0.0: dense_mm.prune().to(device)}
        removed = {0.0: 0.0}
        for target in args.sparsities:
            mm = get_mask_model(build(), config)
            removed[target] = set_structured_masks(mm, target, "l1")
            models[target] = mm.prune().to(device)
        for batch in args.batch_sizes:
            for seconds in lengths:
                inputs = {k: v.to(device) for k, v in make_inputs(batch, seconds).items()}
                measured = {}
                for target, model in models.items():
                    backbone = model.get_submodule(backbone_path)
                    measured[target] = {
                        "macs": count_macs(backbone, inputs),
                        "latency": measure_latency(
                            model, inputs, warmup=args.warmup, repeats=args.repeats
                        ),
                    }
                    print(
                        name,
                        batch,
                        seconds,
                        target,
                        measured[target]["latency"]["median_s"],
                        flush=True,
                    )
                dense = measured[0.0]
                for target in args.sparsities:
                    pruned = measured[target]
                    speedup = dense["latency"]["median_s"] / pruned["latency"]["median_s"]
                    mac_ratio = dense["macs"] / pruned["macs"]
                    rows.append(
                        {
                            "model": name,
                            "batch_size": batch,
                            "input_seconds": seconds,
                            "target_sparsity": target,
                            "params_removed_fraction": removed[target],
                            "dense_latency_s": dense["latency"]["median_s"],
                            "pruned_latency_s": pruned["latency"]["median_s"],
                            "dense_macs": dense["macs"],
                            "pruned_macs": pruned["macs"],
                            "speedup": speedup,
                            "mac_ratio": mac_ratio,
                            "speedup_over_mac_ratio": speedup / mac_ratio,
                        }
                    )
    result = {
        "benchmark": "speed",
        "device": str(device),
        "pruning": "magnitude (L1) structured masks, same keep fraction in every group",
        "repeats": args.repeats,
        "environment": environment(),
        "rows": rows,
    }
    write_result(args.out, result)
    _plot(rows, os.path.splitext(args.out)[0] + ".png")


def _plot(rows, path):
    with saved_figure(path, (5, 4)) as (_, ax):
        for model in sorted({r["model"] for r in rows}):
            points = [r for r in rows if r["model"] == model]
            ratios = [r["mac_ratio"] for r in points]
            ax.scatter(ratios, [r["speedup"] for r in points], label=model)
        top = max(max(r["mac_ratio"], r["speedup"]) for r in rows) * 1.05
        ax.plot([1, top], [1, top], "k--", linewidth=0.8, label="speedup = MAC ratio")
        ax.set_xlabel("dense MACs / pruned MACs")
        ax.set_ylabel("measured speedup")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
