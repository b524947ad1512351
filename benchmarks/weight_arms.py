"""What a user would do instead, side by side with ours: one arm per call, on the same data, carve,
steps and MAC counter, appended as a row to a JSON file (rendered by render_results.py).

Arms:
- `finetune`: every weight of the model trains (transformers' audio-classification example:
  lr 5e-5, 10% warm-up), optionally cut to layers 0..K first (`--last_layer K`).
- `tp_taylor`, `tp_magnitude`: Torch-Pruning (PyPI `torch-pruning`, the `bench` extra) with
  `GroupTaylorImportance` / `GroupMagnitudeImportance` on heads and FFN neurons (conv stem and
  d_model kept), pruned to `--keep_macs` of the dense MACs, then `--then head` (a head on the
  frozen result) or `--then finetune` (every weight, same steps).
- `recipe`: `recipes/classify.py` with the flags after `--` (ours: masks over trainable weights
  by default, `--train_backbone false` for the paper's frozen masks, `--finetune_steps`), same
  seed, so the same validation carve.

Every arm runs in its own process (peak RSS is its own); MACs are hf_keepwhat's counter
(`count_macs`, attention matmuls included) at the run's window.

    python benchmarks/weight_arms.py --arm finetune --model $KEEPWHAT_WHISPER_TINY \
        --data_dir data/gm_small_s0 --seed 0 --out benchmarks/results/weight_arms_small.json
    python benchmarks/weight_arms.py --arm recipe --model $KEEPWHAT_WHISPER_TINY \
        --data_dir data/gm_small_s0 --seed 0 --out ... -- --finetune_steps 2000
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from provenance import append_row  # noqa: E402


def _classify_task():
    """recipes/classify.py's Task: the arms prepare and score data exactly as the recipe does."""
    spec = importlib.util.spec_from_file_location(
        "classify", os.path.join(ROOT, "recipes", "classify.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TASK


def load_task(model_path: str, data_dir: str, seed: int):
    """The recipe's splits (its validation carve at `seed`), window and collator."""
    from transformers import AutoFeatureExtractor, set_seed

    from hf_keepwhat import MaskConfig
    from hf_keepwhat.tasks.arguments import DataArguments
    from hf_keepwhat.tasks.recipe import fit_window
    from hf_keepwhat.tasks.splits import load_splits

    set_seed(seed)
    task = _classify_task()
    data_args = DataArguments(data_dir=data_dir)
    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    raw = load_splits(data_args, extractor.sampling_rate, seed)
    window = types.SimpleNamespace(max_input_seconds=None)
    fit_window(window, raw["train"], model_path, data_args.audio_column, extractor)
    config = MaskConfig(target_sparsity=0.0, max_input_seconds=window.max_input_seconds)
    splits, model_kwargs, collator = task.prepare(raw, extractor, model_path, data_args, config)
    return task, splits, model_kwargs, collator, config


def dense_model(model_path: str, model_kwargs: dict, config, last_layer: int | None):
    """The model at the run's window, cut to layers 0..`last_layer`, every unit kept."""
    import dataclasses

    from transformers import AutoModelForAudioClassification

    from hf_keepwhat import get_mask_model

    model = AutoModelForAudioClassification.from_pretrained(model_path, **model_kwargs)
    return get_mask_model(model, dataclasses.replace(config, last_layer=last_layer)).prune()


def _reference_input(collator, split) -> dict:
    batch = collator([dict(split[0])])
    batch.pop("labels")
    return batch


def torch_pruned(model, importance: str, keep_macs: int, batch: dict, macs_of) -> tuple:
    """Torch-Pruning as its transformers examples use it: heads (whole) and FFN neurons, every
    layer at one ratio, the ratio the largest whose MACs fit `keep_macs`. Returns the pruned
    copy and the ratio."""
    import torch_pruning as tp

    def prune(ratio: float):
        pruned = copy.deepcopy(model).train()
        attention = [m for m in pruned.modules() if type(m).__name__ == "WhisperAttention"]
        num_heads = {m.q_proj: m.num_heads for m in attention}
        num_heads |= {m.k_proj: m.num_heads for m in attention}
        num_heads |= {m.v_proj: m.num_heads for m in attention}
        # Roots are q/k/v and fc1 only: every module writing d_model (conv stem, out_proj, fc2,
        # the head) is ignored, so d_model stays and only heads and neurons go.
        roots = {*num_heads, *(layer.fc1 for layer in pruned.encoder.layers)}
        ignored = [
            m
            for m in pruned.modules()
            if isinstance(m, torch.nn.Linear | torch.nn.Conv1d) and m not in roots
        ]
        chosen = {
            "taylor": tp.importance.GroupTaylorImportance,
            "magnitude": tp.importance.GroupMagnitudeImportance,
        }[importance]()
        pruner = tp.pruner.MetaPruner(
            pruned, batch["input_features"], importance=chosen, pruning_ratio=ratio,
            ignored_layers=ignored, num_heads=num_heads, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=ratio,
            forward_fn=lambda m, x: m(input_features=x).logits,
        )  # fmt: skip
        if importance == "taylor":
            pruned(**batch).loss.backward()
        pruner.step()
        for m in attention:
            m.num_heads = pruner.num_heads[m.q_proj]
            m.embed_dim = m.q_proj.out_features
        pruned.zero_grad(set_to_none=True)
        return pruned.eval()

    low, high, best = 0.0, 0.95, (model, 0.0)
    for _ in range(10):
        ratio = (low + high) / 2
        candidate = prune(ratio)
        if macs_of(candidate) <= keep_macs:
            best, high = (candidate, ratio), ratio
        else:
            low = ratio
    return best


def train_arguments(folder: str, steps: int, learning_rate: float, seed: int):
    """The recipe's protocol: batch 8, validation and a checkpoint every tenth of the steps, the
    best on validation accuracy kept; 10% warm-up."""
    from transformers import TrainingArguments

    every = max(1, steps // 10)
    return TrainingArguments(
        folder, max_steps=steps, learning_rate=learning_rate, warmup_steps=steps // 10,
        per_device_train_batch_size=8, eval_strategy="steps", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="accuracy", seed=seed,
        report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip


def train_head_only(model, args, splits, collator, task):
    """A head on the frozen model (what our dense probe is): only projector and classifier."""
    from transformers import Trainer

    model.requires_grad_(False)
    for name in ("projector", "classifier"):
        getattr(model, name).requires_grad_(True)
    Trainer(
        model=model, args=args, train_dataset=splits["train"], eval_dataset=splits["validation"],
        data_collator=collator, compute_metrics=task.compute_metrics,
    ).train()  # fmt: skip
    return model.eval()


def scores(model, splits, collator, task, folder) -> dict:
    """Accuracy on validation and test, and each clip's correctness (paired intervals), as the
    recipe evaluates."""
    from transformers import Trainer, TrainingArguments

    from hf_keepwhat.tasks.uncertainty import hex_bits

    args = TrainingArguments(folder, report_to=[], use_cpu=not torch.cuda.is_available())
    trainer = Trainer(
        model=model, args=args, data_collator=collator, compute_metrics=task.compute_metrics
    )
    out = {"correct": {}}
    for split in ("validation", "test"):
        prediction = trainer.predict(splits[split], metric_key_prefix=split)
        out[split] = prediction.metrics[f"{split}_accuracy"]
        right = prediction.predictions.argmax(-1) == prediction.label_ids
        out["correct"][split] = hex_bits(right)
    return out


def run_own_arm(args, folder) -> dict:
    """An arm trained here (`finetune`, `tp_*`): its row."""
    from hf_keepwhat.finetuning import finetune
    from hf_keepwhat.profiling import count_macs, measure_latency

    task, splits, model_kwargs, collator, config = load_task(args.model, args.data_dir, args.seed)
    batch = _reference_input(collator, splits["test"])
    features = {"input_features": batch["input_features"]}

    def macs_of(model):
        return count_macs(model.encoder, features)

    full = dense_model(args.model, model_kwargs, config, None)
    dense_macs = macs_of(full)
    row = {}
    if args.arm == "finetune":
        model = dense_model(args.model, model_kwargs, config, args.last_layer)
    else:
        labelled = collator([dict(splits["train"][i]) for i in range(8)])
        model, ratio = torch_pruned(
            full, args.arm.removeprefix("tp_"), int(args.keep_macs * dense_macs), labelled, macs_of
        )
        row["tp_pruning_ratio"] = ratio
        row["loads_with_from_pretrained"] = _loads_back(model, folder)
    start = time.perf_counter()
    if args.arm == "finetune" or args.then == "finetune":
        training = train_arguments(folder, args.steps, args.finetune_learning_rate, args.seed)
        finetune(model, training, splits["train"], eval_dataset=splits["validation"],
                 compute_metrics=task.compute_metrics, data_collator=collator)  # fmt: skip
    else:
        training = train_arguments(folder, args.steps, args.head_learning_rate, args.seed)
        train_head_only(model, training, splits, collator, task)
    row["train_seconds"] = time.perf_counter() - start
    if args.score_last and args.arm == "finetune":
        from transformers import AutoModelForAudioClassification
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(folder)
        trained = AutoModelForAudioClassification.from_pretrained(last)
        scored = scored_checkpoint(last, trained, splits, collator, task, folder)
        row["last_checkpoint"] = {"finetune": scored}
    macs = macs_of(model)
    latency = measure_latency(model, features, repeats=20)
    return {
        **row,
        **scores(model, splits, collator, task, folder),
        "validation_examples": len(splits["validation"]),
        "test_examples": len(splits["test"]),
        "macs": macs,
        "macs_fraction_of_dense": macs / dense_macs,
        "latency_ms": latency["median_s"] * 1e3,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _loads_back(model, folder: str) -> str:
    """Whether a Torch-Pruning result saved with `save_pretrained` loads with `from_pretrained`
    (its config still says the dense shapes): "yes", or the error's first line."""
    from transformers import AutoModelForAudioClassification

    path = os.path.join(folder, "tp_saved")
    model.save_pretrained(path)
    try:
        AutoModelForAudioClassification.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - the message is the finding
        return f"no: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return "yes"


def last_checkpoint_scores(args, folder: str, report: dict) -> dict:
    """Issue 39's question, what should choose a checkpoint on small validation: each phase's
    last checkpoint (the recipe keeps the best on validation and the last) scored like the
    best, per phase (`baseline`: the dense reference, `target…`: the masks, `competitor`). Pass
    the recipe `--checkpoint best`: below 100 validation clips it keeps the last by default."""
    import dataclasses

    from safetensors.torch import load_file
    from transformers import AutoModelForAudioClassification
    from transformers.trainer_utils import get_last_checkpoint

    from hf_keepwhat import MaskConfig, get_mask_model

    task, splits, model_kwargs, collator, _ = load_task(args.model, args.data_dir, args.seed)
    masks = MaskConfig.from_dict(
        report["mask_config"] | {"target_sparsity": report["runs"][0]["target_sparsity"]}
    )
    configs = {"baseline": dataclasses.replace(masks, target_sparsity=0.0, last_layer=None)}
    configs[f"target{masks.target_sparsity:.2f}"] = masks
    out = {}
    for phase in (*configs, "competitor"):
        last = (
            get_last_checkpoint(os.path.join(folder, phase))
            if phase in os.listdir(folder)
            else None
        )
        if last is None:
            continue
        if phase == "competitor":
            model = AutoModelForAudioClassification.from_pretrained(last)
        else:
            model = AutoModelForAudioClassification.from_pretrained(args.model, **model_kwargs)
            mm = get_mask_model(model, configs[phase])
            mm.load_state_dict(load_file(os.path.join(last, "model.safetensors")))
            model = mm.prune()
        out[phase] = scored_checkpoint(last, model, splits, collator, task, folder)
    return out


def scored_checkpoint(last: str, model, splits, collator, task, folder: str) -> dict:
    """`model`, loaded from the checkpoint folder `last`, scored like the arm's kept model, with
    its step and whether Trainer's best checkpoint is this one."""
    with open(os.path.join(last, "trainer_state.json"), encoding="utf-8") as f:
        best = json.load(f)["best_model_checkpoint"]
    return {"step": int(last.rsplit("-", 1)[1]), "best_is_last": best == last,
            **scores(model.eval(), splits, collator, task, folder)}  # fmt: skip


def run_recipe_arm(args, folder) -> dict:
    """`recipes/classify.py` with `args.recipe_flags` (same seed, data and steps): its row."""
    command = [
        sys.executable, os.path.join(ROOT, "recipes", "classify.py"),
        "--model_name_or_path", args.model, "--data_dir", args.data_dir, "--seed", str(args.seed),
        "--max_steps", str(args.steps), "--output_dir", folder, "--report_to", "none",
        "--disable_tqdm", "true", *args.recipe_flags,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    with open(os.path.join(folder, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    (run,) = report["runs"]
    dense = report["dense"]
    return {
        "validation": run["validation_metrics"]["accuracy"],
        "test": run["metrics"]["accuracy"],
        "correct": run.get("correct"),
        "dense_probe": {
            "validation": dense["validation_metrics"].get("accuracy"),
            "test": dense["metrics"].get("accuracy"),
        },
        "validation_examples": report["validation_examples"],
        "test_examples": report["test_examples"],
        "macs": run["macs"],
        "macs_fraction_of_dense": run["macs"] / dense["macs"],
        "latency_ms": run["latency"]["median_s"] * 1e3,
        "depth": report["depth"] and report["depth"]["last_layer"],
        "depth_by_validation_alone": report["depth"]
        and report["depth"].get("last_layer_by_validation_alone"),
        "dense_probe_correct": dense.get("correct"),
        "dense_kind": report["dense_kind"],
        "competitor": report.get("competitor")
        and {k: report["competitor"][k] for k in ("model", "macs", "steps", "correct")}
        | {
            "validation": report["competitor"]["validation_metrics"]["accuracy"],
            "test": report["competitor"]["metrics"]["accuracy"],
        },  # fmt: skip
        "train_seconds": seconds,  # the whole run: depth probes, dense probe, masks, fine-tuning
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    } | (
        {"last_checkpoint": last_checkpoint_scores(args, folder, report)} if args.score_last else {}
    )


def main() -> None:
    """Command line: run one arm and append its row to `--out`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--arm", required=True, choices=["finetune", "tp_taylor", "tp_magnitude", "recipe"]
    )
    parser.add_argument("--name", help="The arm's name in the table (default: from the flags).")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--regime", required=True, help="e.g. small, large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--last_layer", type=int, help="finetune: cut to layers 0..K first.")
    parser.add_argument("--keep_macs", type=float, default=0.5, help="tp_*: MACs kept, of dense.")
    parser.add_argument("--then", choices=["head", "finetune"], default="finetune")
    parser.add_argument("--finetune_learning_rate", type=float, default=5e-5)
    parser.add_argument("--head_learning_rate", type=float, default=1e-3)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--score_last",
        action="store_true",
        help="recipe and finetune: score each phase's last checkpoint too.",
    )
    parser.add_argument("--keep_dir", help="Write the arm's folder here and keep it (checkpoints).")
    parser.add_argument("recipe_flags", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    args.recipe_flags = [f for f in args.recipe_flags if f != "--"]
    with tempfile.TemporaryDirectory(prefix="arm-") as folder:
        folder = args.keep_dir or folder
        row = run_recipe_arm(args, folder) if args.arm == "recipe" else run_own_arm(args, folder)
    name = args.name or args.arm + (
        f"_layers0-{args.last_layer}" if args.last_layer is not None else ""
    )
    append_row(args.out, {"arm": name, "regime": args.regime, "model": os.path.basename(os.path.normpath(args.model)),
                          "data": os.path.basename(os.path.normpath(args.data_dir)), "seed": args.seed,
                          "steps": args.steps, **row})  # fmt: skip


if __name__ == "__main__":
    main()
