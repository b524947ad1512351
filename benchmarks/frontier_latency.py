"""CPU latency of every model of the frontier (`benchmarks/frontier.py`), rebuilt from the kept
units its JSON records: speed depends only on the shapes, so the pruned model is rebuilt from the
base weights and the recorded masks, pruned, and timed against the dense model of the same base
in the same run, on the same input (the 1 s window), at batch 1 and 8.

    python benchmarks/frontier_latency.py --frontier benchmarks/results/frontier_gm.json \\
        --model whisper-tiny.en=$KEEPWHAT_WHISPER_TINY --model whisper-base=$KEEPWHAT_WHISPER_BASE
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from frontier import Point, mask_config  # noqa: E402
from transformers import WhisperForAudioClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import environment, get_mask_model, measure_latency  # noqa: E402
from hf_keepwhat.files import read_json, write_json  # noqa: E402


def unpack(hex_bits: str, num_units: int) -> list[int]:
    """The kept unit indices of a hex bit string written by `frontier.kept_hex`."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[:num_units]
    return np.nonzero(bits)[0].tolist()


def rebuild(run: dict, path: str, window: int, num_labels: int):
    """The pruned model of one frontier run (dense when it kept everything)."""
    fields = {k: run[k] for k in Point.__dataclass_fields__}
    model = WhisperForAudioClassification.from_pretrained(path, num_labels=num_labels)
    point = Point(**fields)
    mm = get_mask_model(model, mask_config(point, window, model.config.encoder_layers))
    for group in mm.unit_groups:
        if group.name in run.get("kept", {}):
            mm.set_kept(group.name, unpack(run["kept"][group.name], group.num_units))
    return mm.prune().eval()


def main() -> None:
    """Times every run's model and writes one JSON file keyed like the frontier's runs."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frontier", default="benchmarks/results/frontier_gm.json")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH, repeatable")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results/frontier_gm_latency.json")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    paths = dict(item.split("=", 1) for item in args.model)
    frontier = read_json(args.frontier)
    window, num_labels = frontier["window_s"], len(frontier["labels"])
    rows = {}
    for name, path in paths.items():
        runs = [r for r in frontier["runs"] if r["model"] == name and "error" not in r]
        dense_run = {"model": name, "method": "linear_probe", "target": 0.0, "seed": 0}
        for run in [dense_run, *runs]:
            model = rebuild(run, path, window, num_labels)
            mels = model.config.num_mel_bins
            timings = {}
            for batch in args.batch_sizes:
                x = {"input_features": torch.randn(batch, mels, 100 * window)}
                measured = measure_latency(model, x, repeats=args.repeats, threads=args.threads)
                timings[f"batch_{batch}"] = {k: measured[k] for k in ("median_s", "iqr_s", "min_s")}
            key = run.get("key", f"dense:{name}")
            rows[key] = {"model": name, "latency": timings}
            print(key, {b: round(t["median_s"] * 1e3, 2) for b, t in timings.items()}, flush=True)
            write_json(args.out, {"benchmark": "frontier_latency", "window_s": window,
                                  "environment": environment(), "threads": args.threads,
                                  "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
