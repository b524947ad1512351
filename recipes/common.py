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
from transformers import (
    AutoFeatureExtractor,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model
from hf_keepwhat.audio import (
    AudioCollator,
    AudioDataError,
    cast_audio,
    featurize,
    label_names,
    load_audio_dataset,
)
from hf_keepwhat.layouts import get_layout, layout_for_config
from hf_keepwhat.profiling import count_macs, count_params, disk_size, measure_latency
from hf_keepwhat.reporting import compare, environment, write_report

logger = logging.getLogger("keepwhat.recipe")

# Hub datasets of the paper's tasks: --preset NAME fills the data arguments (still overridable).
PRESETS = {
    "speech_commands": {"dataset_name": "google/speech_commands", "dataset_config_name": "v0.02"},
    "fluent_speech_commands": {
        "dataset_name": "DynamicSuperb/IntentClassification_FluentSpeechCommands-Action",
        "label_column": "label",
    },
    "gtzan": {"dataset_name": "marsyas/gtzan", "label_column": "genre"},
    "esc50": {"dataset_name": "ashraq/esc50", "label_column": "category"},
    "nsynth_pitch": {"dataset_name": "jg583/NSynth", "label_column": "pitch"},
    "magnatagatune": {"dataset_name": "AudioSet/MagnaTagATune", "label_column": "tags"},
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
            task's (tagging: BCE); it must add `outputs.sparsity_penalty`.
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
    if data_args.test_split in splits:
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


def _median_example(test, input_name: str, collator) -> dict[str, torch.Tensor]:
    """The test example of median input length, as the collator batches it (the latency input)."""
    lengths = [np.asarray(x).shape[-1] for x in test[input_name]]
    index = int(np.argsort(lengths)[len(lengths) // 2])
    batch = collator([dict(test[index])])
    batch.pop("labels")
    return batch


def _figures(
    model, backbone_path: str, reference: dict, latency_input: dict, folder: str, repeats: int
) -> dict:
    backbone = model.get_submodule(backbone_path)
    return {
        "params": count_params(model),
        "backbone_params": count_params(backbone),
        "macs": count_macs(backbone, reference),
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


def _train_masks(
    model, config: MaskConfig, training_args, train, collator, task: Task, freeze_masks=False
):
    mm = get_mask_model(model, config)
    if freeze_masks:  # the dense baseline: every unit kept, only the head trains
        mm.masks.requires_grad_(False)
    trainer = Trainer(
        model=mm,
        args=training_args,
        train_dataset=train,
        data_collator=collator,
        callbacks=[SparsityCallback(config)],
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(training_args),
        compute_loss_func=task.compute_loss_func,
    )
    if task.compute_loss_func is not None:
        trainer.loss_is_scaled_for_ga = False  # a mean loss: let Trainer divide by GA steps
    trainer.train()
    return mm, trainer


def _evaluate(model, training_args, test, collator, task: Task, output_dir: str) -> dict:
    args = dataclasses.replace(training_args, output_dir=output_dir, report_to=[])
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=collator,
        compute_metrics=task.compute_metrics,
        compute_loss_func=task.compute_loss_func,
    )
    metrics = trainer.evaluate(test, metric_key_prefix="test")
    return {
        k.removeprefix("test_"): v
        for k, v in metrics.items()
        if not k.endswith(("runtime", "per_second"))
    }


def main(task: Task) -> None:
    """The recipes' entry point: `run`, with data problems reported as one clear line."""
    try:
        run(task)
    except AudioDataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(task: Task) -> dict | None:
    """Runs a recipe end to end and returns the report (on the main process; None elsewhere)."""
    model_args, data_args, mask_args, run_args, training_args = parse_arguments()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)
    configs = mask_configs(mask_args)
    main = training_args.process_index == 0

    feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    with training_args.main_process_first(desc="dataset preparation"):
        train_raw, test_raw = load_splits(
            data_args, feature_extractor.sampling_rate, training_args.seed
        )

    # Every unit kept: the dense reference (the baseline trains its head; else it is only
    # measured). The feature extractor must match the masked models (Whisper: the window).
    dense_config = dataclasses.replace(configs[0], target_sparsity=0.0)
    with training_args.main_process_first(desc="feature extraction"):
        train, test, model_kwargs, collator = task.prepare(
            train_raw,
            test_raw,
            feature_extractor,
            model_args.model_name_or_path,
            data_args,
            dense_config,
        )
    feature_extractor = collator.feature_extractor

    def fresh_model():
        return task.auto_class.from_pretrained(model_args.model_name_or_path, **model_kwargs)

    output_dir = training_args.output_dir
    input_name = feature_extractor.model_input_names[0]
    latency_input = _median_example(test, input_name, collator)

    if run_args.train_baseline:
        dense_args = dataclasses.replace(
            training_args, output_dir=os.path.join(output_dir, "baseline")
        )
        dense_mm, _ = _train_masks(
            fresh_model(), dense_config, dense_args, train, collator, task, freeze_masks=True
        )
        dense_mm.eval()
        dense_metrics = _evaluate(
            dense_mm, dense_args, test, collator, task, os.path.join(output_dir, "baseline")
        )
    else:
        dense_mm, dense_metrics = get_mask_model(fresh_model(), dense_config), {}
    layout = get_layout(dense_mm.model)
    backbone_path = layout.backbone_path(dense_mm.model)
    reference = layout.reference_inputs(dense_mm.model, dense_config)
    dense = dense_mm.prune(feature_extractor=feature_extractor)
    dense_folder = os.path.join(output_dir, "dense")
    if main:
        dense.save_pretrained(dense_folder)
        dense_figures = {
            "metrics": dense_metrics,
            **_figures(
                dense,
                backbone_path,
                reference,
                latency_input,
                dense_folder,
                run_args.latency_repeats,
            ),
        }

    runs = []
    for config in configs:
        name = f"target{config.target_sparsity:.2f}"
        run_args_i = dataclasses.replace(training_args, output_dir=os.path.join(output_dir, name))
        mm, _ = _train_masks(fresh_model(), config, run_args_i, train, collator, task)
        checksums = _gather(_mask_checksum(mm))
        pruned = mm.prune(feature_extractor=feature_extractor)
        metrics = _evaluate(
            pruned, run_args_i, test, collator, task, os.path.join(output_dir, name)
        )
        if not main:
            continue
        pruned.set_card_info(
            dataset=data_args.dataset_name
            or os.path.basename(os.path.normpath(data_args.data_dir or ""))
            or None,
            metrics={task.metric: metrics[task.metric]},
            task_description=task.card_task,
        )
        mm.save_pretrained(os.path.join(output_dir, name, "adapter"))
        pruned_folder = os.path.join(output_dir, name, "pruned")
        pruned.save_pretrained(pruned_folder)
        figures = _figures(
            pruned, backbone_path, reference, latency_input, pruned_folder, run_args.latency_repeats
        )
        report = mm.sparsity_report()
        runs.append(
            {
                "target_sparsity": config.target_sparsity,
                "metrics": metrics,
                **figures,
                "removed": {
                    k: v for k, v in report["total"].items() if k.endswith("removed_fraction")
                },
                "ratios": compare(dense_figures, figures),
                "groups": report["groups"],
                "processes": len(checksums),
                "mask_checksums_agree": len(set(checksums)) == 1,
                "adapter": os.path.join(name, "adapter"),
                "pruned": os.path.join(name, "pruned"),
            }
        )
    if not main:
        return None
    report = {
        "task": task.name,
        "model": model_args.model_name_or_path,
        "dataset": data_args.dataset_name or data_args.data_dir,
        "test_examples": len(test),
        "metric": task.metric,
        "dense_kind": "linear probe" if run_args.train_baseline else "untrained head",
        "latency_input": f"one test clip of median length ({tuple(latency_input[input_name].shape)})",
        "mask_config": dense_config.to_dict() | {"target_sparsity": mask_args.target_sparsity},
        "dense": dense_figures,
        "runs": runs,
        "environment": environment(),
    }
    write_report(report, output_dir)
    print(open(os.path.join(output_dir, "report.md"), encoding="utf-8").read())
    return report


def prepare_labelled_audio(multi_label: bool) -> Callable:
    """`Task.prepare` for classification and tagging: features, labels named from the train
    split (multi-hot when `multi_label`), the matching head size, `AudioCollator`."""

    def prepare(train, test, feature_extractor, model_path, data_args, config):
        feature_extractor = adapted_feature_extractor(feature_extractor, model_path, config)
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


def adapted_feature_extractor(feature_extractor, model_path: str, config: MaskConfig):
    """The feature extractor for the masked model (e.g. Whisper's shortened window)."""
    layout = layout_for_config(transformers.AutoConfig.from_pretrained(model_path), model_path)
    return layout.adapt_feature_extractor(feature_extractor, config)
