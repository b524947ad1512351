"""The README's mask training with and without `optimizer_cls_and_kwargs`, on real Whisper
tiny.en and FSDD: the plain `Trainer` path must reach the same realised sparsity and accuracy.

Both runs use the README snippet's MaskConfig and TrainingArguments (120 steps, batch 8, head at
1e-3, masks at 0.03, 3 s window) on FSDD's train split; accuracy is on its test split (index
0-4). Without `optimizer_cls_and_kwargs`, `Trainer` builds one AdamW group at 1e-3 and
`SparsityCallback` gives the masks their own rate (`MaskModel.match_mask_learning_rate`).

    python benchmarks/plain_trainer.py --out benchmarks/results/plain_trainer_fsdd.json
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accuracy import Features, accuracy, load_fsdd  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import (  # noqa: E402
    Trainer,
    TrainingArguments,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import MaskConfig, SparsityCallback, environment, get_mask_model  # noqa: E402
from hf_keepwhat.files import read_json  # noqa: E402

PATHS = ("readme", "plain")


def run(path: str, seed: int, args, data) -> dict:
    """One README run; `path` says whether the masks' parameter groups are passed."""
    torch.manual_seed(seed)
    model = WhisperForAudioClassification.from_pretrained(args.model, num_labels=10)
    config = MaskConfig(
        budget="params",
        target_sparsity=0.5,
        max_input_seconds=3,
        mask_learning_rate=0.03,
        target_warmup_steps=40,
    )
    mm = get_mask_model(model, config)
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            out, max_steps=args.steps, per_device_train_batch_size=8, learning_rate=1e-3,
            save_strategy="no", report_to=[], disable_tqdm=True, seed=seed, use_cpu=True,
        )  # fmt: skip
        extra = {}
        if path == "readme":
            extra["optimizer_cls_and_kwargs"] = mm.optimizer_cls_and_kwargs(training)
        Trainer(
            model=mm,
            args=training,
            train_dataset=Features(*data["train"]),
            callbacks=[SparsityCallback(config)],
            **extra,
        ).train()
    total = mm.sparsity_report()["total"]
    return {
        "path": path,
        "seed": seed,
        "steps": args.steps,
        "params_removed_fraction": total["params_removed_fraction"],
        "accuracy": accuracy(mm.prune(), *data["test"]),
    }


def main() -> None:
    """Runs both paths for every seed and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--fsdd", default=os.environ.get("KEEPWHAT_FSDD"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads"
    )
    parser.add_argument("--out", default="benchmarks/results/plain_trainer_fsdd.json")
    args = parser.parse_args()
    if not args.model or not args.fsdd:
        parser.error("--model and --fsdd are required (or KEEPWHAT_WHISPER_TINY and KEEPWHAT_FSDD)")
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    data = load_fsdd(args.fsdd, WhisperFeatureExtractor.from_pretrained(args.model, chunk_length=3))
    # Resumes: runs already in --out (same path, seed, steps and threads) are kept, not redone.
    runs = read_json(args.out)["runs"] if os.path.isfile(args.out) else []
    done = {(r["path"], r["seed"], r["steps"], r["threads"]) for r in runs}
    for seed in args.seeds:
        for path in args.paths:
            if (path, seed, args.steps, args.threads) in done:
                continue
            runs.append({**run(path, seed, args, data), "threads": args.threads})
            print(runs[-1], flush=True)
            write_result(args.out, {"benchmark": "plain_trainer", "environment": environment(),
                                  "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
