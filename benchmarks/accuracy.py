"""Accuracy against removed parameters on FSDD with Whisper tiny.en, for the mask methods and
the baselines, each trained on FSDD's train split and evaluated on its test split (index 0-4).

Methods (`--methods`):
- `mask_units`: the paper's penalty (fraction of mask sites, keep probabilities);
- `mask_params`: the parameter budget (hard-mask penalty);
- `mask_lagrangian`: the parameter budget with learned Lagrange multipliers;
- `random`, `magnitude`: structured pruning with the same keep fraction in every group (random
  units, or the largest L1 norms), then the head trained on the frozen pruned model;
- `drop_layers`: the top encoder layers removed, the head trained on what remains;
- `linear_probe`: the head on the dense frozen model (0% removed);
- `full_finetune`: every weight trained (0% removed).

    python benchmarks/accuracy.py --out benchmarks/results/accuracy_fsdd.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import (  # noqa: E402
    Trainer,
    TrainingArguments,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import (  # noqa: E402
    MaskConfig,
    SparsityCallback,
    environment,  # noqa: E402
    get_mask_model,
)
from hf_keepwhat.baselines import set_structured_masks  # noqa: E402
from hf_keepwhat.profiling import count_params  # noqa: E402

FSDD_NAME = re.compile(r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav")
MASK_METHODS = {
    "mask_units": {"budget": "units"},
    "mask_params": {"budget": "params"},
    "mask_lagrangian": {"budget": "params", "budget_mode": "lagrangian"},
}


def load_fsdd(folder: str, extractor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Log-mel features and labels of FSDD's standard train and test splits."""
    splits = {"train": ([], []), "test": ([], [])}
    for name in sorted(os.listdir(folder)):
        match = FSDD_NAME.fullmatch(name)
        if not match:
            continue
        audio, rate = sf.read(os.path.join(folder, name), dtype="float32")
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()
        split = "test" if int(match["index"]) < 5 else "train"
        splits[split][0].append(audio)
        splits[split][1].append(int(match["label"]))
    return {
        split: (
            torch.from_numpy(
                extractor(audio, sampling_rate=16000, return_tensors="np").input_features
            ),
            torch.tensor(labels),
        )
        for split, (audio, labels) in splits.items()
    }


class Features(torch.utils.data.Dataset):
    def __init__(self, features, labels):
        self.features, self.labels = features, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_features": self.features[i], "labels": self.labels[i]}


def accuracy(model, features, labels) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(input_features=features[i : i + 50]).logits for i in range(0, len(features), 50)]
        )
    return float((logits.argmax(-1) == labels).float().mean())


def run_one(method, target, seed, args, data):
    """Trains one (method, target, seed) and returns its test accuracy and realised sparsity."""
    torch.manual_seed(seed)
    model = WhisperForAudioClassification.from_pretrained(args.model, num_labels=10)
    training = TrainingArguments(
        output_dir=os.path.join(args.work_dir, f"{method}-{target}-{seed}"),
        per_device_train_batch_size=8,
        max_steps=args.steps,
        # Full fine-tuning moves pretrained weights: 1e-3 wrecks them, 3e-5 is the usual rate.
        learning_rate=3e-5 if method == "full_finetune" else 1e-3,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=seed,
        use_cpu=args.device == "cpu",
    )
    train = Features(*data["train"])
    common = {"max_input_seconds": 3}
    if method in MASK_METHODS:
        config = MaskConfig(
            target_sparsity=target,
            mask_learning_rate=0.02,
            target_warmup_steps=args.steps // 3,
            **common,
            **MASK_METHODS[method],
        )
    elif method == "drop_layers":
        layers = model.config.encoder_layers
        config = MaskConfig(target_sparsity=0.0, last_layer=layers - 1 - int(target), **common)
    else:
        config = MaskConfig(target_sparsity=0.0, **common)
    mm = get_mask_model(model, config)
    if method in ("random", "magnitude"):
        set_structured_masks(mm, target, "random" if method == "random" else "l1", seed)
    if method == "full_finetune":
        mm.model.requires_grad_(True)
        mm.model.encoder.embed_positions.requires_grad_(False)
    if method not in MASK_METHODS:
        mm.masks.requires_grad_(False)  # fixed masks (or none removed): only weights train
        mm.mask_config.penalty_weight = 0.0  # and nothing for a penalty to pull
    callbacks = [SparsityCallback(config)] if method in MASK_METHODS else []
    trainer = Trainer(
        model=mm,
        args=training,
        train_dataset=train,
        callbacks=callbacks,
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(training),
    )
    start = time.perf_counter()
    trainer.train()
    pruned = mm.prune()
    total = mm.sparsity_report()["total"]
    return {
        "method": method,
        "target": target,
        "seed": seed,
        "steps": args.steps,
        "accuracy": accuracy(pruned, *data["test"]),
        "params_removed_fraction": total["params_removed_fraction"],
        "macs_removed_fraction": total["macs_removed_fraction"],
        "encoder_params": count_params(pruned.encoder),
        "train_seconds": time.perf_counter() - start,
    }


def main() -> None:
    """Runs every (method, target, seed) and writes one JSON file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=os.environ.get("KEEPWHAT_WHISPER_TINY"))
    parser.add_argument("--fsdd", default=os.environ.get("KEEPWHAT_FSDD"))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[
            *MASK_METHODS,
            "random",
            "magnitude",
            "drop_layers",
            "linear_probe",
            "full_finetune",
        ],
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work_dir", default="out/accuracy")
    parser.add_argument("--out", default="benchmarks/results/accuracy_fsdd.json")
    args = parser.parse_args()
    if not args.model or not args.fsdd:
        parser.error("--model and --fsdd are required (or KEEPWHAT_WHISPER_TINY and KEEPWHAT_FSDD)")
    hf_logging.set_verbosity_error()
    extractor = WhisperFeatureExtractor.from_pretrained(args.model, chunk_length=3)
    data = load_fsdd(args.fsdd, extractor)

    runs = []
    plan = [(m, 0.0) for m in args.methods if m in ("linear_probe", "full_finetune")]
    for target in args.targets:  # target-major, so an interrupted run still covers whole budgets
        for method in args.methods:
            if method == "drop_layers":
                # Whole layers: 1, 2, 3 of Whisper tiny's 4 for targets near 25, 50, 75%.
                layers = round(target * 4)
                if 1 <= layers <= 3:
                    plan.append((method, float(layers)))
            elif method not in ("linear_probe", "full_finetune"):
                plan.append((method, target))
    for method, target in plan:
        for seed in args.seeds:
            result = run_one(method, target, seed, args, data)
            print(json.dumps(result), flush=True)
            runs.append(result)
            write(runs, args)  # after every run: an interrupted benchmark keeps what it measured


def write(runs, args) -> None:
    """Writes the JSON report of the runs so far (`render_results.py` plots all of them)."""
    write_result(
        args.out,
        {
            "benchmark": "accuracy",
            "model": os.path.basename(os.path.normpath(args.model)),
            "dataset": "FSDD (index 0-4 test, 5-49 train)",
            "steps": args.steps,
            "batch_size": 8,
            "input_window_s": 3,
            "environment": environment(),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
