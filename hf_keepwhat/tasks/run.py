"""One recipe run, phase by phase: the dense reference, then one pruned model per target (masks
trained with validation, the best checkpoint within the budget kept, the optional finish steps,
prune, evaluate on validation and test, save, measure).

Each phase says what it will do and what it found, and writes its record when it finishes
(`RunFolder`), so a killed run resumes: finished phases are read back, the unfinished one
continues from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..averaging import WeightAverageCallback
from ..callbacks import SparsityCallback
from ..config import MaskConfig
from ..exact_budget import meet_target
from ..finetuning import finetune
from ..model import get_mask_model
from ..profiling import count_macs, count_params, disk_size, measure_latency
from ..recovery import recover_with_lora, refit_head
from ..standalone import save_pruned_module
from ..target_training import train_to_target
from .heads import pooled_classifier
from .loading import load_pretrained
from .reports import compare
from .run_folder import RunFolder
from .selection import (
    BudgetMetricCallback,
    checkpoint_rule,
    describe_kept,
    kept_checkpoint,
    restarts_warning,
    within_budget_name,
)
from .uncertainty import bits_of, hex_bits, wilson_interval

logger = logging.getLogger("hf_keepwhat.recipe")


@dataclass
class Task:
    """What differs between recipes.

    Args:
        name: The task family, e.g. "classification".
        auto_class: The Auto class of the model, e.g. `AutoModelForAudioClassification`.
        metric: The metric the report leads with (and validation chooses checkpoints by).
        prepare: `(splits, feature_extractor, model_path, data_args, config) -> (splits,
            model_kwargs, collator)`: featurized splits (train, validation, test),
            `from_pretrained` kwargs (labels, vocabulary), collator.
        compute_metrics: Trainer's `compute_metrics`.
        compute_loss_func: Trainer's `compute_loss_func`, when the model's own loss is not the
            task's (tagging: BCE); it must add `outputs.auxiliary_loss`.
        card_task: The task in words for the model card.
        greater_is_better: Whether a higher `metric` is better (False for WER).
        selects_depth: Whether `--last_layer auto` can choose the depth (single-label probes).
        trains_weights: The recipe's `--train_backbone` when it is not given (measured for
            single-label classification only).
    """

    name: str
    auto_class: type
    metric: str
    prepare: object
    compute_metrics: object
    compute_loss_func: object | None = None
    card_task: str = ""
    greater_is_better: bool = True
    selects_depth: bool = False
    trains_weights: bool = False


def _median_example(test, input_name: str, collator) -> dict[str, torch.Tensor]:
    """The test example of median input length, as the collator batches it (the latency input)."""
    lengths = [np.asarray(x).shape[-1] for x in test[input_name]]
    index = int(np.argsort(lengths)[len(lengths) // 2])
    batch = collator([dict(test[index])])
    batch.pop("labels")
    return batch


def _mask_checksum(mm) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(mm.masks.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _gather(value):
    """`value` from every process (a one-element list without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        values = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(values, value)
        return values
    return [value]


def scores(metrics: dict, metric: str) -> str:
    """`validation accuracy 0.71, test 0.70` from `Run.evaluate`'s metrics.

    Args:
        metrics: `Run.evaluate`'s result.
        metric: The metric shown.
    """
    shown = {}
    for split in ("validation", "test"):
        value = metrics[split].get(metric)
        shown[split] = "-" if value is None else f"{value:.4g}"
    return f"validation {metric} {shown['validation']}, test {shown['test']}"


@dataclass
class Run:
    """What every phase of a recipe run shares: arguments, data, and how to build the model.

    Args:
        task: The recipe's `Task`.
        model_args, data_args, run_args: The parsed arguments.
        training_args: The base `TrainingArguments` (each phase writes under its own folder).
        splits: Featurized `train`, `validation` and `test` datasets.
        collator: Batches examples for the model.
        model_kwargs: `from_pretrained` kwargs (labels).
        latency_input: One batch-1 input, for latency.
        folder: The output folder's record of finished phases.
    """

    task: Task
    model_args: object
    data_args: object
    run_args: object
    training_args: TrainingArguments
    splits: dict
    collator: object
    model_kwargs: dict
    latency_input: dict
    folder: RunFolder

    @property
    def main(self) -> bool:
        """Whether this is the process that measures and writes files."""
        return self.training_args.process_index == 0

    def fresh_model(self):
        """The base model with a new task head: its own (`--head model`), or a pooled linear /
        MLP head around any backbone."""
        path, head = self.model_args.model_name_or_path, self.model_args.head
        if head == "model":
            return load_pretrained(self.task.auto_class, path, **self.model_kwargs)
        multi_label = self.model_kwargs.get("problem_type") == "multi_label_classification"
        return pooled_classifier(path, self.model_kwargs["num_labels"], head, multi_label)

    def arguments(self, name: str, **changes) -> TrainingArguments:
        """The TrainingArguments of one step, writing under `output_dir/name`."""
        folder = os.path.join(self.training_args.output_dir, name)
        return dataclasses.replace(self.training_args, output_dir=folder, **changes)

    def validated_arguments(
        self, name: str, metric: str | None = None, **changes
    ) -> TrainingArguments:
        """A phase's training arguments: validation and a checkpoint every `eval_steps` (a tenth
        of the steps unless set), the best checkpoint loaded at the end unless `--checkpoint`
        keeps the last (`checkpoint_rule`).

        Args:
            name: The phase's folder under `output_dir`.
            metric: What chooses the checkpoint (default: the task's metric within the budget).
            **changes: Other `TrainingArguments` of the phase (`max_steps`, `learning_rate`).
        """
        base = dataclasses.replace(self.training_args, **changes)
        by_steps = base.max_steps > 0
        strategy = base.eval_strategy if base.eval_strategy != "no" else "steps"
        strategy = strategy if by_steps else "epoch"
        every = base.eval_steps if base.eval_steps else max(1, base.max_steps // 10)
        return self.arguments(
            name,
            **changes,
            eval_strategy=strategy,
            eval_steps=every,
            save_strategy=strategy,
            save_steps=every,
            save_total_limit=2,  # the best and the last
            load_best_model_at_end=self.checkpoint_rule()[0] == "best",
            metric_for_best_model=metric or within_budget_name(self.task.metric),
            greater_is_better=self.task.greater_is_better,
        )

    def checkpoint_rule(self) -> tuple[str, str]:
        """Which checkpoint every phase keeps ("best", "last" or "average") and why
        (`--checkpoint`)."""
        return checkpoint_rule(self.run_args.checkpoint, len(self.splits["validation"]))

    def checkpoint_callbacks(self) -> list:
        """The callbacks one phase's `Trainer` needs for the checkpoint rule: a new
        `WeightAverageCallback` under "average", none otherwise."""
        return [WeightAverageCallback()] if self.checkpoint_rule()[0] == "average" else []

    def finetune_arguments(self, name: str, steps: int | None = None) -> TrainingArguments:
        """Fine-tuning's training arguments: `--finetune_steps` (or `steps`) at
        `--finetune_learning_rate`, a 10% warm-up, the checkpoint `--checkpoint` keeps (the best on the
        task's metric, or the last)."""
        steps = self.run_args.finetune_steps if steps is None else steps
        return self.validated_arguments(
            name,
            metric=self.task.metric,
            max_steps=steps,
            learning_rate=self.run_args.finetune_learning_rate,
            warmup_steps=steps // 10,
        )

    @staticmethod
    def last_checkpoint(args: TrainingArguments) -> str | None:
        """The phase's last checkpoint, to resume from (None when it has none)."""
        return get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None

    def task_data(self) -> dict:
        """The collator and loss function every training step of the run passes to Trainer."""
        return {"data_collator": self.collator, "compute_loss_func": self.task.compute_loss_func}

    def describe_training(self, args: TrainingArguments) -> str:
        """The training a phase will do, in words."""
        length = (
            f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
        )
        every = f"every {args.eval_steps} steps" if args.eval_strategy == "steps" else "every epoch"
        return (
            f"{length}, batch {args.per_device_train_batch_size}, learning rate "
            f"{args.learning_rate:g}; validation ({len(self.splits['validation'])} examples) and "
            f"a checkpoint {every}"
        )

    def train_masks(
        self, config: MaskConfig, name: str, freeze_masks: bool = False, seed: int | None = None
    ):
        """Wraps a fresh model and trains its masks (or only its head) with `Trainer`, with
        validation; resumes from the phase's last checkpoint when there is one. Returns the
        MaskModel (with the checkpoint `--checkpoint` keeps loaded) and that checkpoint
        (`kept_checkpoint`: step, validation score, whether it met the budget).
        `seed`: a seed for the new head and the data order instead of `--seed`'s."""
        args = self.validated_arguments(name)
        if seed is not None:
            args = dataclasses.replace(args, seed=seed)
        # Before the head is built, as Trainer's `model_init` would be seeded: a phase's new head
        # is then the same whichever phases ran before it (depth probes, the dense reference).
        set_seed(args.seed)
        mm = get_mask_model(self.fresh_model(), config)
        averaging = self.checkpoint_callbacks()
        if freeze_masks:  # the dense baseline: every unit kept, only the head trains
            mm.masks.requires_grad_(False)
        trainer = Trainer(
            model=mm,
            args=args,
            train_dataset=self.splits["train"],
            eval_dataset=self.splits["validation"],
            data_collator=self.collator,
            compute_metrics=self.task.compute_metrics,
            callbacks=[
                SparsityCallback(config),
                BudgetMetricCallback(
                    mm,
                    self.task.metric,
                    self.run_args.budget_tolerance,
                    self.task.greater_is_better,
                ),
                *averaging,
            ],
            optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
            compute_loss_func=self.task.compute_loss_func,
        )
        if self.task.compute_loss_func is not None:
            trainer.loss_is_scaled_for_ga = False  # a mean loss: let Trainer divide by GA steps
        last = self.last_checkpoint(args)
        if last:
            logger.info("%s: resuming training from %s", name, last)
        trainer.train(resume_from_checkpoint=last)
        if not averaging:
            return mm, kept_checkpoint(trainer.state, args)
        trainer.evaluate()  # the average's own score: what --best_of and the budget check read
        return mm, kept_checkpoint(trainer.state, args, averaged=averaging[0].count)

    def evaluate(self, model, name: str) -> dict:
        """The task metrics of `model` on the validation and the test split:
        `{"validation": {...}, "test": {...}}`, and for single-label tasks each clip's
        correctness (`"correct": {split: hex_bits}`), from which reports draw intervals."""
        args = self.arguments(name, report_to=[], eval_strategy="no", save_strategy="no")
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=self.collator,
            compute_metrics=self.task.compute_metrics,
            compute_loss_func=self.task.compute_loss_func,
        )
        out = {}
        for split in ("validation", "test"):
            prediction = trainer.predict(self.splits[split], metric_key_prefix=split)
            out[split] = {
                k.removeprefix(f"{split}_"): v
                for k, v in prediction.metrics.items()
                if not k.endswith(("runtime", "per_second", "preparation_time"))  # timings
            }
            if self.task.selects_depth:  # single-label: each clip right or wrong
                logits = prediction.predictions
                logits = logits[0] if isinstance(logits, tuple) else logits
                right = np.argmax(logits, axis=-1) == prediction.label_ids
                out.setdefault("correct", {})[split] = hex_bits(right)
        return out

    def figures(self, model, mm, folder: str) -> dict:
        """Parameters, backbone parameters and MACs (at `mm`'s reference input), latency on the
        latency input and disk size of a model saved in `folder`."""
        backbone = model.get_submodule(mm.layout.backbone_path)
        return {
            "params": count_params(model),
            "backbone_params": count_params(backbone),
            "macs": count_macs(backbone, mm.reference_inputs),
            "latency": measure_latency(
                model, self.latency_input, repeats=self.run_args.latency_repeats
            ),
            "disk_bytes": disk_size(folder),
        }


def _predicted_latency(total: dict) -> dict:
    """What the latency table (`--latency_table`) predicts for the pruned model, if one was given."""
    if "latency_ms_remaining" not in total:
        return {}
    return {
        "latency_predicted_ms": total["latency_ms_remaining"],
        "latency_predicted_dense_ms": total["latency_ms_original"],
        "latency_runtime": total["latency_runtime"],
    }


def save_model(model, folder: str, feature_extractor) -> None:
    """A pruned transformers model saves itself (config, weights, card, feature extractor); a
    module with a pooled head saves its weights and manifest (`save_pruned_module`) and the
    feature extractor beside them."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
        return
    save_pruned_module(model, folder)
    feature_extractor.save_pretrained(folder)


def save_adapter(mm, folder: str) -> None:
    """The mask adapter folder (transformers models), or the masks + head of a pooled-head module
    as one safetensors file (`mm.load_state_dict(load_file(...))` restores them)."""
    if mm.is_transformers_model:
        mm.save_pretrained(folder)
        return
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in mm.state_dict().items()}
    save_file(state, os.path.join(folder, "keepwhat_masks.safetensors"))


def dense_kind(run_args, dense_config: MaskConfig) -> str:
    """What the dense reference is: trained as the masks are (the head alone on the frozen
    backbone, or every weight with `train_backbone`), or measured as loaded (its head untrained
    unless the checkpoint carried one, as a previous run's `dense/` does)."""
    if not run_args.train_baseline:
        return "as loaded"
    return "fine-tuned" if dense_config.train_backbone else "linear probe"


def dense_baseline(run: Run, dense_config: MaskConfig) -> dict:
    """The dense reference (every unit kept), trained as the masks are when `--train_baseline` (a
    linear probe; with `--train_backbone`, every weight fine-tuned), else measured as loaded.
    Returns its record (metrics on validation and test, and on the main process its figures; the
    dense model saved under `output_dir/dense`)."""
    phase = "baseline"
    done = run.folder.done(phase)
    if done is not None:
        return done
    if run.run_args.train_baseline:
        args = run.validated_arguments(phase)
        name, trains = (
            ("dense, fine-tuned", "every weight and the head, unmasked (--train_backbone)")
            if dense_config.train_backbone
            else ("dense probe", "the head on the frozen, unmasked backbone")
        )
        logger.info("%s: %s; %s", name, trains, run.describe_training(args))
        run.folder.folder(phase)
        dense_mm, kept = run.train_masks(dense_config, phase, freeze_masks=True)
        how = describe_kept(kept)
    else:
        # Measured, not trained: a new head scores chance, but a checkpoint that carries its head
        # (a previous run's fine-tuned `dense/`, to mask from) is the reference its masks start at.
        name, how = "dense model", "as loaded"
        logger.info("dense model: as loaded, measured only (--train_baseline trains it)")
        dense_mm = get_mask_model(run.fresh_model(), dense_config)
    dense_mm.eval()
    metrics = run.evaluate(dense_mm, phase)
    logger.info("%s: %s (%s)", name, scores(metrics, run.task.metric), how)
    if not run.main:
        return {}
    dense = dense_mm.prune(feature_extractor=run.collator.feature_extractor)
    folder = os.path.join(run.training_args.output_dir, "dense")
    save_model(dense, folder, run.collator.feature_extractor)
    record = {
        "metrics": metrics.get("test", {}),
        "validation_metrics": metrics.get("validation", {}),
        "correct": metrics.get("correct"),
        **run.figures(dense, dense_mm, folder),
    }
    run.folder.finish(phase, record)
    return record


def _best_of(run: Run, config: MaskConfig, name: str):
    """`train_masks` `--best_of` times (seeds `--seed`, `--seed + 1`, ...; each in its own
    folder, so a killed run resumes each), keeping the run best on validation among those whose
    kept checkpoint met the budget. Returns its MaskModel, its kept checkpoint
    (`kept_checkpoint`) and one row per run (seed, validation metric, whether it met the budget,
    chosen)."""
    if run.run_args.best_of <= 1:
        return (*run.train_masks(config, name), [])
    warning = restarts_warning(run.run_args.best_of, len(run.splits["validation"]))
    if warning:
        logger.warning(warning)
    sign = 1 if run.task.greater_is_better else -1
    best, rows = None, []
    for index in range(run.run_args.best_of):
        seed = run.training_args.seed + index
        logger.info("masks, run %d of %d (seed %d)", index + 1, run.run_args.best_of, seed)
        mm, kept = run.train_masks(config, f"{name}/seed{seed}", seed=seed)
        met, score = kept["met"], kept["score"]
        rows.append({"seed": seed, f"validation_{run.task.metric}": score, "met_budget": met})
        rank = (met, sign * score if met else 0.0)
        if best is None or rank > best[0]:
            best = (rank, mm, kept, index)
    _, mm, kept, chosen = best
    for index, row in enumerate(rows):
        row["chosen"] = index == chosen
    logger.info("masks: kept the run of seed %d (best on validation)", rows[chosen]["seed"])
    return mm, kept, rows


def _describe_target(config: MaskConfig) -> str:
    return f"{config.target_sparsity:.1%} of {config.budget}"


def _train_target_masks(run: Run, config: MaskConfig, name: str) -> tuple:
    """The masks of one target (`--best_of` runs), trained with validation; returns the
    MaskModel with the checkpoint `--checkpoint` keeps and the row's first fields."""
    args = run.validated_arguments(name)
    logger.info("masks to remove %s: %s", _describe_target(config), run.describe_training(args))
    run.folder.folder(name)
    mm, kept, best_of = _best_of(run, config, name)
    total = mm.sparsity_report()["total"]
    if kept["met"]:
        found = f"kept {describe_kept(kept)}: validation {run.task.metric} {kept['score']:.4g}"
    elif kept["rule"] == "best":
        found = "no checkpoint within the budget; kept the last state"
    else:
        found = f"kept {describe_kept(kept)}, outside the budget"
    logger.info(
        "masks: removed %.1f%% of %s; %s",
        100 * total[f"{config.budget}_removed_fraction"],
        config.budget,
        found,
    )
    return mm, {"checkpoint_step": kept["step"], "best_of": best_of}


def _finish_masks(run: Run, mm, name: str, row: dict) -> None:
    """The optional steps between mask training and pruning: train on to the target, meet it,
    refit the head (each recorded on `mm` and, for the refit, in `row`)."""
    task_data = run.task_data()
    if run.run_args.train_to_target_steps:
        logger.info("train to target: rounds of %d steps", run.run_args.train_to_target_steps)
        train_to_target(
            mm,
            run.arguments(f"{name}/to_target", max_steps=run.run_args.train_to_target_steps),
            run.splits["train"],
            **task_data,
        )
    if run.run_args.meet_target:
        logger.info("meet target: %s", run.run_args.meet_target_selection)
        meet_target(
            mm,
            selection=run.run_args.meet_target_selection,
            unit_kinds=run.run_args.meet_target_unit_kinds,
        )
    if run.run_args.refit_head_steps:
        before = run.evaluate(mm.prune(), name)
        row["metrics_before_head_refit"] = before["test"]
        row["validation_metrics_before_head_refit"] = before["validation"]
        logger.info("head refit: %d steps, masks frozen", run.run_args.refit_head_steps)
        refit_head(
            mm,
            run.arguments(f"{name}/head", max_steps=run.run_args.refit_head_steps),
            run.splits["train"],
            **task_data,
        )


def finetune_teacher(run: Run, config: MaskConfig):
    """The distillation teacher of `--finetune_distill_weight`: the base model with its head,
    cut to the pruned model's depth and window, every unit kept, frozen."""
    if run.model_args.head != "model":
        raise ValueError(
            "--finetune_distill_weight needs --head model: the teacher's backbone output is "
            "found through the model's layout."
        )
    dense = dataclasses.replace(config, target_sparsity=0.0, train_backbone=False)
    return get_mask_model(run.fresh_model(), dense).prune()


def _finetune_pruned(run: Run, pruned, config: MaskConfig, name: str):
    """`--finetune_steps`: every kept weight and the head train on the task, with validation
    and the checkpoint `--checkpoint` keeps, resuming from the phase's last checkpoint."""
    args = run.finetune_arguments(f"{name}/finetune")
    weight = run.run_args.finetune_distill_weight
    logger.info(
        "fine-tune: every kept weight and the head%s; %s",
        f", distilled from the dense model (weight {weight:g})" if weight else "",
        run.describe_training(args),
    )
    return finetune(
        pruned,
        args,
        run.splits["train"],
        eval_dataset=run.splits["validation"],
        compute_metrics=run.task.compute_metrics,
        teacher=finetune_teacher(run, config) if weight else None,
        distill_weight=weight,
        callbacks=run.checkpoint_callbacks(),
        resume_from_checkpoint=run.last_checkpoint(args),
        **run.task_data(),
    )


def _prune_and_recover(run: Run, mm, config: MaskConfig, name: str, row: dict):
    """Deletes the masked units, evaluates, then recovers with LoRA and/or fine-tunes the kept
    weights when asked (the metrics before each kept in `row`); returns the pruned model and its
    metrics."""
    logger.info("prune: deleting the masked units")
    pruned = mm.prune(feature_extractor=run.collator.feature_extractor)
    metrics = run.evaluate(pruned, name)
    run_args = run.run_args
    if run_args.recover_lora_steps:
        row["metrics_before_recovery"] = metrics["test"]
        row["validation_metrics_before_recovery"] = metrics["validation"]
        logger.info("LoRA recovery: %d steps", run_args.recover_lora_steps)
        lora_args = run.arguments(
            f"{name}/lora",
            max_steps=run_args.recover_lora_steps,
            learning_rate=run_args.recover_lora_learning_rate,
        )
        pruned = recover_with_lora(pruned, lora_args, run.splits["train"], **run.task_data())
        metrics = run.evaluate(pruned, name)
    if run_args.finetune_steps:
        row["metrics_before_finetune"] = metrics["test"]
        row["validation_metrics_before_finetune"] = metrics["validation"]
        pruned = _finetune_pruned(run, pruned, config, name)
        metrics = run.evaluate(pruned, name)
    logger.info("evaluate: %s", scores(metrics, run.task.metric))
    return pruned, metrics


def _card_info(metrics: dict, metric: str, test_examples: int) -> dict:
    """What the card states of the result: the test metric, the number of test examples and,
    where each clip's correctness is known, the metric's 95% Wilson interval."""
    out = {"metrics": {metric: metrics["test"][metric]}, "test_examples": test_examples}
    if metrics.get("correct"):
        right = int(bits_of(metrics["correct"]["test"], test_examples).sum())
        out["intervals"] = {metric: list(wilson_interval(right, test_examples))}
    return out


def _save_target(run: Run, mm, pruned, metrics: dict, name: str) -> dict:
    """Saves the adapter (masks over a frozen backbone only) and the pruned model (its card
    stating the test metric); returns the figures of the saved model."""
    data, metric = run.data_args, run.task.metric
    if hasattr(pruned, "set_card_info"):  # a transformers model: its card states the result
        pruned.set_card_info(
            dataset=data.dataset_name
            or os.path.basename(os.path.normpath(data.data_dir or ""))
            or None,
            **_card_info(metrics, metric, len(run.splits["test"])),
            task_description=run.task.card_task,
        )
    folder = os.path.join(run.training_args.output_dir, name)
    if not mm.mask_config.train_backbone:  # trained weights: no adapter can hold them
        logger.info("save: %s/adapter", folder)
        save_adapter(mm, os.path.join(folder, "adapter"))
    logger.info("save: %s/pruned", folder)
    save_model(pruned, os.path.join(folder, "pruned"), run.collator.feature_extractor)
    return run.figures(pruned, mm, os.path.join(folder, "pruned"))


def prune_one_target(run: Run, config: MaskConfig, dense_figures: dict) -> dict | None:
    """One target, phase by phase: masks trained with validation, the optional finish steps,
    prune, the optional recovery (LoRA, fine-tuning), evaluate on validation and test, save
    adapter and pruned model; returns the run's row (None off the main process)."""
    name = f"target{config.target_sparsity:.2f}"
    done = run.folder.done(name)
    if done is not None:
        return done if run.main else None
    mm, row = _train_target_masks(run, config, name)
    _finish_masks(run, mm, name, row)
    checksums = _gather(_mask_checksum(mm))
    pruned, metrics = _prune_and_recover(run, mm, config, name, row)
    if not run.main:
        return None
    figures = _save_target(run, mm, pruned, metrics, name)
    report = mm.sparsity_report()
    trained_weights = mm.mask_config.train_backbone
    record = {
        "target_sparsity": config.target_sparsity,
        "metrics": metrics["test"],
        "validation_metrics": metrics["validation"],
        "correct": metrics.get("correct"),
        **row,
        **figures,
        "removed": {k: v for k, v in report["total"].items() if k.endswith("removed_fraction")},
        **_predicted_latency(report["total"]),
        "ratios": compare(dense_figures, figures),
        "groups": report["groups"],
        "processes": len(checksums),
        "mask_checksums_agree": len(set(checksums)) == 1,
        "mask_checksum": checksums[0],
        "adapter": None if trained_weights else os.path.join(name, "adapter"),
        "pruned": os.path.join(name, "pruned"),
    }
    run.folder.finish(name, record)
    return record
