"""What the recipes share: arguments, data preparation, and the run (baseline, masks, prune,
evaluate, measure, save, report). Each recipe only says what its task needs.

Runs the same under `python recipes/<task>.py ...` and `accelerate launch recipes/<task>.py ...`:
`Trainer` takes care of the processes; only the main process measures latency and writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    AutoFeatureExtractor,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_keepwhat import (
    MaskConfig,
    SparsityCallback,
    adapted_feature_extractor,
    count_macs,
    count_params,
    disk_size,
    environment,
    get_mask_model,
    measure_latency,
    meet_target,
    recover_with_lora,
    refit_head,
    save_pruned_module,
    train_to_target,
)
from hf_keepwhat.exact_budget import SELECTIONS
from hf_keepwhat.tasks import (
    AudioCollator,
    AudioDataError,
    cast_audio,
    compare,
    featurize,
    label_names,
    load_audio_dataset,
    pooled_classifier,
    require_column,
    write_report,
)
from hf_keepwhat.tasks.heads import HEADS

logger = logging.getLogger("keepwhat.recipe")

# Hub datasets of the paper's tasks: --preset NAME fills the data arguments (still overridable).
# This project's machines cannot reach the Hub; each preset was checked against the dataset's
# stored Hub pages (dataset_infos.json / README metadata): a parquet dataset (no loading script),
# its splits, label and fold columns.
# - esc50 (ashraq/esc50): one "train" split of 2,000 clips; "category" (string), "fold" 1-5.
# - urbansound8k (danavery/urbansound8K): one "train" split of 8,732; "class" (string), "fold" 1-10.
# Unverified (no stored page of the repository): librispeech.
# Dropped: google/speech_commands, marsyas/gtzan, jg583/NSynth and confit/magnatagatune (loading
# scripts, which datasets 5 refuses to run), AudioSet/MagnaTagATune (no such dataset found), the
# Fluent Speech Commands preset (a ~200-row evaluation subset). FSD50K is not offered: its Hub
# copies use a loading script (Fhrozen/FSD50k) or store mp3 bytes without an Audio feature
# (nguyenvulebinh/fsd50k).
PRESETS = {
    "esc50": {"dataset_name": "ashraq/esc50", "label_column": "category", "test_fold": ["5"]},
    "urbansound8k": {
        "dataset_name": "danavery/urbansound8K",
        "label_column": "class",
        "test_fold": ["10"],
    },
    "librispeech": {
        "dataset_name": "openslr/librispeech_asr",
        "dataset_config_name": "clean",
        "train_split": "train.100",
        "test_split": "test",
        "text_column": "text",
    },
}


@dataclass
class ModelArguments:
    """Which pretrained model to specialise."""

    model_name_or_path: str = field(metadata={"help": "Hub id or local folder of the base model."})
    head: str = field(
        default="model",
        metadata={
            "help": "model: the model's own ...ForAudioClassification head; linear or mlp: the mean-pooled features of any backbone (embedding models too: AutoModel) into a linear layer or the paper's MLP (1024, ReLU)."
        },
    )


@dataclass
class DataArguments:
    """Where the audio and labels come from."""

    preset: str | None = field(default=None, metadata={"help": f"One of {sorted(PRESETS)}."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset config."})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local folder: audiofolder layout, or flat files with --filename_label_regex."
        },
    )
    filename_label_regex: str | None = field(
        default=None,
        metadata={
            "help": r"Regex over file names with a (?P<label>...) group, e.g. FSDD's (?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav."
        },
    )
    test_group: str | None = field(
        default=None, metadata={"help": "Regex group that decides the test split."}
    )
    test_values: list[str] | None = field(
        default=None, metadata={"help": "Values of --test_group that are test data."}
    )
    audio_column: str = field(default="audio", metadata={"help": "Column with the audio."})
    label_column: str = field(default="label", metadata={"help": "Column with the label(s)."})
    text_column: str = field(default="text", metadata={"help": "Column with transcripts (ctc.py)."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    test_split: str = field(default="test", metadata={"help": "Split to evaluate on."})
    test_size: float = field(
        default=0.1, metadata={"help": "Held-out fraction when there is no test split."}
    )
    test_fold: list[str] | None = field(
        default=None,
        metadata={
            "help": "Fold-based split (UrbanSound8K, ESC-50): rows of the train split whose --fold_column value is one of these are the test split, the rest train."
        },
    )
    fold_column: str = field(default="fold", metadata={"help": "Column holding the fold."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Truncate the train split."}
    )
    max_test_samples: int | None = field(
        default=None, metadata={"help": "Truncate the test split."}
    )


@dataclass
class RunArguments:
    """What the run measures besides the masked model."""

    train_baseline: bool = field(
        default=False,
        metadata={
            "help": "Also train the dense baseline: the same head on the frozen, unmasked backbone (a linear probe)."
        },
    )
    latency_repeats: int = field(
        default=20, metadata={"help": "Timed runs per latency measurement."}
    )
    train_to_target_steps: int = field(
        default=0,
        metadata={
            "help": "After mask training, if the masks remove less than the target, train masks and head on in rounds of this many steps (at most 3) with the penalty's target raised by the shortfall (train_to_target), before --meet_target (0: none)."
        },
    )
    meet_target: bool = field(
        default=False,
        metadata={
            "help": "After mask training, if the masks remove less than the target, switch off kept units (see --meet_target_selection) until they remove it (before the head refit), so the pruned model costs at most what was asked. It can cost accuracy: see the README's Exact budget."
        },
    )
    meet_target_selection: str = field(
        default="least_sure",
        metadata={
            "help": "Which units --meet_target switches off: least_sure (lowest keep probability, whatever their cost) or fit_the_gap (first the least sure units no costlier than the shortfall).",
            "choices": list(SELECTIONS),
        },
    )
    meet_target_unit_kinds: list[str] | None = field(
        default=None,
        metadata={
            "help": "The unit kinds --meet_target may switch off (e.g. heads ffn; default every kind). Switching off conv-stem channels moves every layer's input: see the README's Exact budget."
        },
    )
    refit_head_steps: int = field(
        default=0,
        metadata={
            "help": "After mask training, train the head again for this many steps (at the head's learning rate) with the masks frozen, so it fits the units pruning keeps (0: none)."
        },
    )
    recover_lora_steps: int = field(
        default=0,
        metadata={
            "help": "After pruning, train LoRA adapters (peft) on the task for this many steps and merge them into the pruned model (0: none)."
        },
    )
    recover_lora_learning_rate: float = field(
        default=5e-4, metadata={"help": "Learning rate of the LoRA recovery."}
    )


def _mask_arguments_class() -> type:
    """MaskConfig's fields as command-line arguments, with `target_sparsity` taking a list: one
    run per value."""
    fields = []
    for f in dataclasses.fields(MaskConfig):
        if f.name == "target_sparsity":
            fields.append(
                (
                    "target_sparsity",
                    list[float],
                    field(
                        default_factory=lambda: [0.5],
                        metadata={
                            "help": "Fraction(s) of the budget to remove; several values give one run each."
                        },
                    ),
                )
            )
        else:
            default = (
                {"default_factory": f.default_factory}
                if f.default_factory is not dataclasses.MISSING
                else {"default": f.default}
            )
            fields.append((f.name, f.type, field(**default)))
    return dataclasses.make_dataclass("MaskArguments", fields)


MaskArguments = _mask_arguments_class()


@dataclass
class Task:
    """What differs between recipes.

    Args:
        name: The task family, e.g. "classification".
        auto_class: The Auto class of the model, e.g. `AutoModelForAudioClassification`.
        metric: The metric the report leads with.
        prepare: `(splits, feature_extractor, model_path, data_args) -> (train, test, model_kwargs,
            collator)`: featurized splits, `from_pretrained` kwargs (labels, vocabulary), collator.
        compute_metrics: Trainer's `compute_metrics` for the test split.
        compute_loss_func: Trainer's `compute_loss_func`, when the model's own loss is not the
            task's (tagging: BCE); it must add `outputs.auxiliary_loss`.
        card_task: The task in words for the model card.
    """

    name: str
    auto_class: type
    metric: str
    prepare: Callable
    compute_metrics: Callable
    compute_loss_func: Callable | None = None
    card_task: str = ""


def parse_arguments():
    """Parses the recipe's command line (or a single JSON file of arguments)."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, MaskArguments, RunArguments, TrainingArguments)
    )
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parsed = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        parsed = parser.parse_args_into_dataclasses()
    model_args, data_args, mask_args, run_args, training_args = parsed
    if model_args.head not in ("model", *HEADS):
        parser.error(f"--head {model_args.head!r} is not one of {('model', *HEADS)}")
    if data_args.preset:
        if data_args.preset not in PRESETS:
            parser.error(f"--preset {data_args.preset!r} is not one of {sorted(PRESETS)}")
        for key, value in PRESETS[data_args.preset].items():
            if getattr(data_args, key) == getattr(DataArguments, key, None):
                setattr(data_args, key, value)
    return model_args, data_args, mask_args, run_args, training_args


def mask_configs(mask_args) -> list[MaskConfig]:
    """One MaskConfig per requested target sparsity."""
    values = {f.name: getattr(mask_args, f.name) for f in dataclasses.fields(MaskConfig)}
    return [MaskConfig(**{**values, "target_sparsity": t}) for t in mask_args.target_sparsity]


def load_splits(data_args, sampling_rate: int, seed: int):
    """The train and test splits, decoded and resampled to `sampling_rate`."""
    splits = load_audio_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.data_dir,
        data_args.filename_label_regex,
        data_args.test_group,
        data_args.test_values,
    )
    if data_args.train_split not in splits:
        raise AudioDataError(
            f"The dataset has no split {data_args.train_split!r}; it has {list(splits)}."
        )
    train = splits[data_args.train_split]
    if data_args.test_fold:
        train, test = fold_split(train, data_args)
    elif data_args.test_split in splits:
        test = splits[data_args.test_split]
    else:
        logger.warning(
            "No %r split: holding out %.0f%% of the train split.",
            data_args.test_split,
            100 * data_args.test_size,
        )
        held_out = train.train_test_split(test_size=data_args.test_size, seed=seed)
        train, test = held_out["train"], held_out["test"]
    if data_args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    if data_args.max_test_samples:
        test = test.select(range(min(data_args.max_test_samples, len(test))))
    return cast_audio(train, data_args.audio_column, sampling_rate), cast_audio(
        test, data_args.audio_column, sampling_rate
    )


def fold_split(dataset, data_args):
    """Train and test splits by fold: the test split holds the rows of `--test_fold`."""
    require_column(dataset.column_names, data_args.fold_column, "fold", "--fold_column")
    wanted = {str(v) for v in data_args.test_fold}
    folds = [str(v) for v in dataset[data_args.fold_column]]
    test = [i for i, fold in enumerate(folds) if fold in wanted]
    if not test or len(test) == len(folds):
        raise AudioDataError(
            f"--test_fold {sorted(wanted)} selects {len(test)} of {len(folds)} rows; the folds "
            f"are {sorted(set(folds))}."
        )
    train = [i for i, fold in enumerate(folds) if fold not in wanted]
    return dataset.select(train), dataset.select(test)


def _median_example(test, input_name: str, collator) -> dict[str, torch.Tensor]:
    """The test example of median input length, as the collator batches it (the latency input)."""
    lengths = [np.asarray(x).shape[-1] for x in test[input_name]]
    index = int(np.argsort(lengths)[len(lengths) // 2])
    batch = collator([dict(test[index])])
    batch.pop("labels")
    return batch


def _figures(model, mm, latency_input: dict, folder: str, repeats: int) -> dict:
    """Parameters, backbone parameters and MACs (at `mm`'s reference input), latency on
    `latency_input` and disk size of a saved model."""
    backbone = model.get_submodule(mm.layout.backbone_path)
    return {
        "params": count_params(model),
        "backbone_params": count_params(backbone),
        "macs": count_macs(backbone, mm.reference_inputs),
        "latency": measure_latency(model, latency_input, repeats=repeats),
        "disk_bytes": disk_size(folder),
    }


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


@dataclass
class Run:
    """What every step of a recipe run shares: arguments, data, and how to build the model."""

    task: Task
    model_args: object
    data_args: object
    run_args: object
    training_args: TrainingArguments
    train: object
    test: object
    collator: object
    model_kwargs: dict
    latency_input: dict

    @property
    def main(self) -> bool:
        """Whether this is the process that measures and writes files."""
        return self.training_args.process_index == 0

    def fresh_model(self):
        """The base model with a new task head: its own (`--head model`), or a pooled linear /
        MLP head around any backbone."""
        path, head = self.model_args.model_name_or_path, self.model_args.head
        if head == "model":
            return self.task.auto_class.from_pretrained(path, **self.model_kwargs)
        multi_label = self.model_kwargs.get("problem_type") == "multi_label_classification"
        return pooled_classifier(path, self.model_kwargs["num_labels"], head, multi_label)

    def arguments(self, name: str, **changes) -> TrainingArguments:
        """The TrainingArguments of one step, writing under `output_dir/name`."""
        folder = os.path.join(self.training_args.output_dir, name)
        return dataclasses.replace(self.training_args, output_dir=folder, **changes)

    def train_masks(self, config: MaskConfig, name: str, freeze_masks: bool = False):
        """Wraps a fresh model and trains its masks (or only its head) with `Trainer`."""
        mm = get_mask_model(self.fresh_model(), config)
        if freeze_masks:  # the dense baseline: every unit kept, only the head trains
            mm.masks.requires_grad_(False)
        args = self.arguments(name)
        trainer = Trainer(
            model=mm,
            args=args,
            train_dataset=self.train,
            data_collator=self.collator,
            callbacks=[SparsityCallback(config)],
            optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
            compute_loss_func=self.task.compute_loss_func,
        )
        if self.task.compute_loss_func is not None:
            trainer.loss_is_scaled_for_ga = False  # a mean loss: let Trainer divide by GA steps
        trainer.train()
        return mm

    def evaluate(self, model, name: str) -> dict:
        """The task metrics of `model` on the test split."""
        args = self.arguments(name, report_to=[])
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=self.collator,
            compute_metrics=self.task.compute_metrics,
            compute_loss_func=self.task.compute_loss_func,
        )
        metrics = trainer.evaluate(self.test, metric_key_prefix="test")
        return {
            k.removeprefix("test_"): v
            for k, v in metrics.items()
            if not k.endswith(("runtime", "per_second"))
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


def dense_baseline(run: Run, dense_config: MaskConfig) -> tuple[object, dict]:
    """The dense reference (every unit kept): a linear probe when `--train_baseline`, else the
    untrained head, only measured. Returns its MaskModel and, on the main process, its figures
    (the dense model saved under `output_dir/dense`)."""
    if run.run_args.train_baseline:
        dense_mm = run.train_masks(dense_config, "baseline", freeze_masks=True).eval()
        metrics = run.evaluate(dense_mm, "baseline")
    else:
        dense_mm, metrics = get_mask_model(run.fresh_model(), dense_config), {}
    if not run.main:
        return dense_mm, {}
    dense = dense_mm.prune(feature_extractor=run.collator.feature_extractor)
    folder = os.path.join(run.training_args.output_dir, "dense")
    save_model(dense, folder, run.collator.feature_extractor)
    figures = _figures(dense, dense_mm, run.latency_input, folder, run.run_args.latency_repeats)
    return dense_mm, {"metrics": metrics, **figures}


def prune_one_target(run: Run, config: MaskConfig, dense_figures: dict) -> dict | None:
    """Trains the masks for one target (then trains on to it, meets it and refits the head when
    asked), prunes (then recovers with LoRA when asked), evaluates, saves adapter and pruned
    model; returns the run's row (None off the main process)."""
    name = f"target{config.target_sparsity:.2f}"
    mm = run.train_masks(config, name)
    task_data = {"data_collator": run.collator, "compute_loss_func": run.task.compute_loss_func}
    if run.run_args.train_to_target_steps:
        train_to_target(
            mm,
            run.arguments(f"{name}/to_target", max_steps=run.run_args.train_to_target_steps),
            run.train,
            **task_data,
        )
    if run.run_args.meet_target:
        meet_target(
            mm,
            selection=run.run_args.meet_target_selection,
            unit_kinds=run.run_args.meet_target_unit_kinds,
        )
    row = {}
    if run.run_args.refit_head_steps:
        row["metrics_before_head_refit"] = run.evaluate(mm.prune(), name)
        refit_head(
            mm,
            run.arguments(f"{name}/head", max_steps=run.run_args.refit_head_steps),
            run.train,
            **task_data,
        )
    checksums = _gather(_mask_checksum(mm))
    pruned = mm.prune(feature_extractor=run.collator.feature_extractor)
    metrics = run.evaluate(pruned, name)
    if run.run_args.recover_lora_steps:
        row["metrics_before_recovery"] = metrics
        lora_args = run.arguments(
            f"{name}/lora",
            max_steps=run.run_args.recover_lora_steps,
            learning_rate=run.run_args.recover_lora_learning_rate,
        )
        pruned = recover_with_lora(
            pruned,
            lora_args,
            run.train,
            **task_data,
        )
        metrics = run.evaluate(pruned, name)
    if not run.main:
        return None
    data = run.data_args
    if hasattr(pruned, "set_card_info"):  # a transformers model: its card states the result
        pruned.set_card_info(
            dataset=data.dataset_name
            or os.path.basename(os.path.normpath(data.data_dir or ""))
            or None,
            metrics={run.task.metric: metrics[run.task.metric]},
            task_description=run.task.card_task,
        )
    folder = os.path.join(run.training_args.output_dir, name)
    save_adapter(mm, os.path.join(folder, "adapter"))
    save_model(pruned, os.path.join(folder, "pruned"), run.collator.feature_extractor)
    figures = _figures(
        pruned, mm, run.latency_input, os.path.join(folder, "pruned"), run.run_args.latency_repeats
    )
    report = mm.sparsity_report()
    return {
        "target_sparsity": config.target_sparsity,
        "metrics": metrics,
        **row,
        **figures,
        "removed": {k: v for k, v in report["total"].items() if k.endswith("removed_fraction")},
        "ratios": compare(dense_figures, figures),
        "groups": report["groups"],
        "processes": len(checksums),
        "mask_checksums_agree": len(set(checksums)) == 1,
        "adapter": os.path.join(name, "adapter"),
        "pruned": os.path.join(name, "pruned"),
    }


def write_run_report(run: Run, configs, dense_figures: dict, runs: list[dict], mask_args) -> dict:
    """Writes report.json / report.md / plots under `output_dir`, prints report.md, returns it."""
    input_name = run.collator.feature_extractor.model_input_names[0]
    dense_config = dataclasses.replace(configs[0], target_sparsity=0.0)
    report = {
        "task": run.task.name,
        "model": run.model_args.model_name_or_path,
        "dataset": run.data_args.dataset_name or run.data_args.data_dir,
        "test_examples": len(run.test),
        "metric": run.task.metric,
        "dense_kind": "linear probe" if run.run_args.train_baseline else "untrained head",
        "latency_input": "one test clip of median length "
        f"({tuple(run.latency_input[input_name].shape)})",
        "mask_config": dense_config.to_dict() | {"target_sparsity": mask_args.target_sparsity},
        "train_to_target_steps": run.run_args.train_to_target_steps,
        "meet_target": run.run_args.meet_target,
        "meet_target_selection": run.run_args.meet_target_selection,
        "meet_target_unit_kinds": run.run_args.meet_target_unit_kinds,
        "refit_head_steps": run.run_args.refit_head_steps,
        "recover_lora_steps": run.run_args.recover_lora_steps,
        "dense": dense_figures,
        "runs": runs,
        "environment": environment(),
    }
    output_dir = run.training_args.output_dir
    write_report(report, output_dir)
    print(open(os.path.join(output_dir, "report.md"), encoding="utf-8").read())
    return report


def main(task: Task) -> None:
    """The recipes' entry point: `run`, with data problems reported as one clear line."""
    try:
        run(task)
    except AudioDataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def prepare_run(task: Task, arguments) -> Run:
    """Loads and featurizes the data and picks the latency input: everything the steps share."""
    model_args, data_args, mask_args, run_args, training_args = arguments
    dense_config = dataclasses.replace(mask_configs(mask_args)[0], target_sparsity=0.0)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    with training_args.main_process_first(desc="dataset preparation"):
        train_raw, test_raw = load_splits(
            data_args, feature_extractor.sampling_rate, training_args.seed
        )
    # The feature extractor must match the masked models (Whisper: the window).
    with training_args.main_process_first(desc="feature extraction"):
        train, test, model_kwargs, collator = task.prepare(
            train_raw, test_raw, feature_extractor, model_args.model_name_or_path, data_args,
            dense_config,
        )  # fmt: skip
    input_name = collator.feature_extractor.model_input_names[0]
    latency_input = _median_example(test, input_name, collator)
    return Run(
        task, model_args, data_args, run_args, training_args,
        train, test, collator, model_kwargs, latency_input,
    )  # fmt: skip


def run(task: Task) -> dict | None:
    """Runs a recipe end to end (dense baseline, one pruned model per target, report) and
    returns the report (on the main process; None elsewhere)."""
    arguments = parse_arguments()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    transformers.utils.logging.set_verbosity_warning()
    set_seed(arguments[-1].seed)
    configs = mask_configs(arguments[2])
    state = prepare_run(task, arguments)
    _, dense_figures = dense_baseline(state, dataclasses.replace(configs[0], target_sparsity=0.0))
    runs = [prune_one_target(state, config, dense_figures) for config in configs]
    if not state.main:
        return None
    return write_run_report(state, configs, dense_figures, runs, arguments[2])


def prepare_labelled_audio(multi_label: bool) -> Callable:
    """`Task.prepare` for classification and tagging: features, labels named from the train
    split (multi-hot when `multi_label`), the matching head size, `AudioCollator`."""

    def prepare(train, test, feature_extractor, model_path, data_args, config):
        feature_extractor = fitted_feature_extractor(feature_extractor, model_path, config)
        names = label_names(train, data_args.label_column)
        args = (feature_extractor, data_args.audio_column, data_args.label_column, names)
        train = featurize(train, *args, multi_label=multi_label, split="train")
        test = featurize(test, *args, multi_label=multi_label, split="test")
        model_kwargs = {
            "num_labels": len(names),
            "label2id": {name: i for i, name in enumerate(names)},
            "id2label": dict(enumerate(names)),
        }
        if multi_label:
            model_kwargs["problem_type"] = "multi_label_classification"
        return train, test, model_kwargs, AudioCollator(feature_extractor)

    return prepare


def fitted_feature_extractor(feature_extractor, model_path: str, config: MaskConfig):
    """The feature extractor for the masked model (e.g. Whisper's shortened window)."""
    model_config = transformers.AutoConfig.from_pretrained(model_path)
    return adapted_feature_extractor(feature_extractor, model_config, config)
