"""How the library's steps scale with model size: Whisper encoders from tiny- to large-v3-sized
and wav2vec2 base- and large-sized (random weights, configs built in code: time and memory
do not depend on the weights' values).

Each model runs in its own process, so that its peak RSS is its own. Steps, timed one after
the other: `get_mask_model`, one training step (batch 2, 1 s of audio, AdamW over what
trains), `sparsity_report`, `prune` (magnitude masks keeping half of every group), the pruned
model's `save_pretrained` and its reload with `AutoModelForAudioClassification`. Peak RSS is
read after each step (`ru_maxrss`, monotonic) and quoted as a multiple of the fp32 model's size;
with `--device cuda` (`benchmarks/gpu.sh`) the model and batch live on the GPU and the peak GPU
memory allocated is read after each step too.

    python benchmarks/scale.py --out benchmarks/results/scale_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# name -> (family, config fields); the Whisper sizes are OpenAI's checkpoints' encoder shapes.
SIZES = {
    "whisper-tiny-sized": ("whisper", dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536)),
    "whisper-base-sized": ("whisper", dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048)),
    "whisper-small-sized": ("whisper", dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072)),
    "whisper-large-v3-sized": ("whisper", dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128)),
    "wav2vec2-base-sized": ("wav2vec2", dict()),
    "wav2vec2-large-sized": ("wav2vec2", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, do_stable_layer_norm=True, feat_extract_norm="layer")),
}  # fmt: skip


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def build(name: str, device: str = "cpu"):
    """The randomly initialised classifier of size `name` and one training batch for it, both on
    `device` (a large-v3-sized model initialises far faster on a GPU)."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2ForSequenceClassification,
        WhisperConfig,
        WhisperForAudioClassification,
    )

    family, fields = SIZES[name]
    torch.manual_seed(0)
    with torch.device(device):
        if family == "whisper":
            config = WhisperConfig(num_labels=10, **fields)
            model = WhisperForAudioClassification(config)
            batch = {"input_features": torch.randn(2, config.num_mel_bins, 100)}
        else:
            model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=10, **fields))
            batch = {"input_values": torch.randn(2, 16000)}
        batch["labels"] = torch.tensor([1, 2])
    return model, batch


def measure(name: str, device: str = "cpu") -> dict:
    """Times every step for model `name` in this process; returns the figures."""
    import torch
    from transformers import AutoModelForAudioClassification

    from hf_keepwhat import MaskConfig, count_params, get_mask_model, set_structured_masks

    torch.set_num_threads(2)
    on_gpu = device.startswith("cuda")
    before_model = _peak_rss()
    model, batch = build(name, device)
    params = count_params(model)
    row = {"model": name, "params": params, "fp32_bytes": params * 4, "steps": {}}
    row["rss_before_model"] = before_model

    def step(label, fn):
        start = time.perf_counter()
        out = fn()
        if on_gpu:
            torch.cuda.synchronize()
        row["steps"][label] = {"seconds": time.perf_counter() - start, "peak_rss": _peak_rss()}
        if on_gpu:
            row["steps"][label]["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
        print(name, label, round(row["steps"][label]["seconds"], 2), flush=True)
        return out

    # Whisper's window is cut to the 1 s of audio trained on; wav2vec2 counts MACs for 1 s.
    window = {"max_input_seconds": 1} if "input_features" in batch else {"macs_input_seconds": 1}
    config = MaskConfig(target_sparsity=0.5, **window)
    mm = step("get_mask_model", lambda: get_mask_model(model, config))

    def train_step():
        mm.train()
        optimizer = torch.optim.AdamW([p for p in mm.parameters() if p.requires_grad], lr=1e-3)
        mm(**batch).loss.backward()  # the task loss plus the sparsity penalty
        optimizer.step()

    step("training_step", train_step)
    step("sparsity_report", mm.sparsity_report)
    set_structured_masks(mm, 0.5, "l1")
    pruned = step("prune", mm.prune)
    with tempfile.TemporaryDirectory() as folder:
        step("save_pretrained", lambda: pruned.save_pretrained(folder))
        step("reload", lambda: AutoModelForAudioClassification.from_pretrained(folder))
    row["peak_rss"] = _peak_rss()
    row["peak_rss_over_fp32_model"] = row["peak_rss"] / row["fp32_bytes"]
    row["peak_rss_above_start_over_fp32_model"] = (row["peak_rss"] - before_model) / row[
        "fp32_bytes"
    ]
    if on_gpu:
        row["peak_gpu_over_fp32_model"] = torch.cuda.max_memory_allocated() / row["fp32_bytes"]
    return row


def main() -> None:
    """Runs every size in its own process and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/gpu.sh)")
    parser.add_argument("--out", default="benchmarks/results/scale_cpu.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args.device)), flush=True)
        return

    from provenance import write_result

    from hf_keepwhat import environment

    rows = []
    for name in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--child", name, "--device", args.device],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        rows.append(json.loads(line.removeprefix("RESULT ")))
        print(name, {k: round(v["seconds"], 2) for k, v in rows[-1]["steps"].items()}, flush=True)
        write_result(args.out, {"benchmark": "scale", "environment": environment(), "rows": rows})


if __name__ == "__main__":
    main()
