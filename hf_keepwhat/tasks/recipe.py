"""The recipes' entry point: parse the command line, prepare the splits, resolve the budget, run
the phases (`run.py`) and write the report. `recipes/<task>.py` only says what its task needs.

Runs the same under `python recipes/<task>.py ...` and `accelerate launch recipes/<task>.py ...`:
`Trainer` takes care of the processes; only the main process measures latency and writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable

import transformers
from transformers import AutoFeatureExtractor, set_seed

from ..config import MaskConfig
from ..layouts import adapted_feature_extractor, layout_class_for_config
from ..profiling import environment
from ..standalone import RECORD_KEY
from .arguments import mask_configs, parse_arguments
from .audio import AudioCollator, AudioDataError, featurize, label_names, longest_clip_seconds
from .budgets import model_from_config, resolve_budget
from .competitor import competitor_baseline
from .depth import layer_probes, select_depth_cross_validated, select_last_layer
from .provenance import provenance
from .reports import accuracy_intervals, resolution_warning, write_report
from .run import Run, Task, _median_example, dense_baseline, dense_kind, prune_one_target
from .run_folder import RunFolder, fingerprint
from .selection import KEPT_IN_WORDS
from .splits import load_splits

logger = logging.getLogger("hf_keepwhat.recipe")


def configure_logging(training_args) -> None:
    """The run's phases at INFO on the main process (WARNING on the others), transformers at
    `--log_level` when given (its own default otherwise), as transformers' examples do."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    main = training_args.process_index == 0
    logging.getLogger("hf_keepwhat").setLevel(logging.INFO if main else logging.WARNING)
    if training_args.log_level != "passive":
        transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    else:
        transformers.utils.logging.set_verbosity_warning()


def budgeted_configs(task: Task, arguments) -> tuple[list[MaskConfig], dict | None]:
    """The MaskConfigs to run: one per `--target_sparsity`, or the one a budget in the user's
    terms (`--match_macs_of` ...) asks for, with that budget's record."""
    model_args, _, mask_args, _, budget_args, training_args = arguments
    configs = mask_configs(mask_args, training_args.max_steps)
    requested = budget_args.requested()
    if requested is None:
        return configs, None
    if model_args.head != "model":
        raise AudioDataError(
            f"--{requested[0]} needs --head model (the model's own head): the costs are counted "
            "on the model's Auto class."
        )

    def build(config):
        return task.auto_class.from_config(config)

    own = model_from_config(model_args.model_name_or_path, build)
    may_cut = mask_args.last_layer not in (None, "none")
    budget = resolve_budget(requested, configs[0], own, build, may_cut)
    logger.info(
        "budget: --%s %s allows %s %s of the model's %s: remove %.2f%% of its %s "
        "(masks alone reach down to %s)",
        budget["asked"],
        budget["value"],
        f"{budget['allowed_cost']:,}",
        budget["budget"],
        f"{budget['model_cost']:,}",
        100 * budget["target_sparsity"],
        budget["budget"],
        f"{budget['fastest_cost']:,.6g}",
    )
    changes = {"budget": budget["budget"], "target_sparsity": budget["target_sparsity"]}
    return [dataclasses.replace(configs[0], **changes)], budget


def fit_window(mask_args, train, model_path: str, audio_column: str, feature_extractor) -> None:
    """Sets `--max_input_seconds` to the longest train clip, rounded up to a whole second, when
    the model's window is fixed (Whisper's 30 s) and the user set none: a shorter window costs
    proportionally less and a clip never needs more than its own length."""
    if mask_args.max_input_seconds is not None:
        return
    config = transformers.AutoConfig.from_pretrained(model_path)
    if not layout_class_for_config(config, model_path).shortens_input_window:
        return
    full = feature_extractor.chunk_length
    longest = longest_clip_seconds(train, audio_column)
    seconds = min(max(1, math.ceil(longest - 1e-6)), full)
    if seconds < full:
        mask_args.max_input_seconds = float(seconds)
    logger.info(
        "window: %g s (the longest train clip is %.2f s; --max_input_seconds sets it)",
        seconds,
        longest,
    )


def prepare_run(task: Task, arguments, raw: dict, feature_extractor, folder: RunFolder) -> Run:
    """Featurizes the splits and picks the latency input: what the phases share."""
    model_args, data_args, mask_args, run_args, _, training_args = arguments
    dense_config = dataclasses.replace(
        mask_configs(mask_args, training_args.max_steps)[0], target_sparsity=0.0
    )
    # The feature extractor must match the masked models (Whisper: the window).
    with training_args.main_process_first(desc="feature extraction"):
        splits, model_kwargs, collator = task.prepare(
            raw, feature_extractor, model_args.model_name_or_path, data_args, dense_config
        )
    input_name = collator.feature_extractor.model_input_names[0]
    latency_input = _median_example(splits["test"], input_name, collator)
    return Run(
        task, model_args, data_args, run_args, training_args,
        splits, collator, model_kwargs, latency_input, folder,
    )  # fmt: skip


def choose_depth(run: Run, configs: list[MaskConfig]) -> tuple[list[MaskConfig], dict]:
    """`--last_layer auto`: a linear probe on each layer's pooled output, the last layer chosen by
    cross-validation over train and validation, knowing the budget
    (`select_depth_cross_validated`); a phase of its own, so a resumed run reads it back."""
    done = run.folder.done("depth")
    if done is None:
        if not run.task.selects_depth:
            raise AudioDataError(
                f"--last_layer auto chooses the depth with single-label probes; {run.task.name} "
                "has none. Give a layer index."
            )
        logger.info("depth: a linear probe on each layer's pooled output, cross-validated")
        run.folder.folder("depth")
        dense = dataclasses.replace(configs[0], target_sparsity=0.0, last_layer=None)
        model = run.fresh_model()
        if weights_trained_by_a_run(model):
            logger.warning(
                "depth: %s holds weights an hf_keepwhat run trained (a run's dense/ or pruned/): "
                "if they trained on these clips, the probes' folds have seen them and favour "
                "keeping every layer; give --last_layer the depth that run chose (its report's "
                "depth)",
                model_name(run.model_args.model_name_or_path),
            )
        rows = layer_probes(
            model,
            dense,
            run.splits["train"],
            run.splits["validation"],
            run.collator,
            run.training_args.seed,
        )
        removable = configs[0].target_sparsity if configs[0].budget == "macs" else 1.0
        done = {
            "last_layer": select_depth_cross_validated(rows, removable),
            "rule": "cross-validated",
            "last_layer_by_validation_alone": select_last_layer(rows),
            "probes": rows,
        }
        logger.info(
            "depth: chosen on the 5-fold mean over train and validation (%d clips): the cut "
            "nearest the budget's %.1f%% of MACs unless another beats it by more than the larger "
            "standard error; validation alone would keep layers 0-%d",
            len(run.splits["train"]) + len(run.splits["validation"]),
            100 * removable,
            done["last_layer_by_validation_alone"],
        )
        run.folder.finish("depth", done)
    deepest = max(r["last_layer"] for r in done["probes"])
    chosen = None if done["last_layer"] == deepest else done["last_layer"]
    logger.info("depth: layers 0-%d kept (of 0-%d)", done["last_layer"], deepest)
    return [dataclasses.replace(c, last_layer=chosen) for c in configs], done


def weights_trained_by_a_run(model) -> bool:
    """Whether a model's config (a pooled head's: its backbone's) records an hf_keepwhat run that
    trained its backbone weights (`--train_backbone`, `--finetune_steps`): its features may have
    been fitted to the clips the depth probes are cross-validated on.

    Args:
        model: What `Run.fresh_model` returned.
    """
    config = getattr(model, "config", None) or getattr(model.backbone, "config", None)
    record = getattr(config, RECORD_KEY, None) or {}
    return bool(record.get("mask_config", {}).get("train_backbone") or record.get("recovery"))


def model_name(path: str) -> str:
    """How a report names a model: a Hub id as it is, a local folder by its own name (never the
    machine's absolute path)."""
    if os.path.exists(path):
        return os.path.basename(os.path.normpath(path))
    return path


def write_run_report(run: Run, configs, dense: dict, runs: list[dict], budget, depth, competitor):
    """Writes report.json / report.md / plots under `output_dir`, prints report.md, returns it."""
    input_name = run.collator.feature_extractor.model_input_names[0]
    dense_config = dataclasses.replace(configs[0], target_sparsity=0.0)
    data = run.data_args
    report = {
        "task": run.task.name,
        "model": model_name(run.model_args.model_name_or_path),
        "dataset": data.dataset_name or (data.data_dir and model_name(data.data_dir)),
        "validation_examples": len(run.splits["validation"]),
        "test_examples": len(run.splits["test"]),
        "metric": run.task.metric,
        "dense_kind": dense_kind(run.run_args, dense_config),
        "latency_input": "one test clip of median length "
        f"({tuple(run.latency_input[input_name].shape)})",
        "mask_config": dense_config.to_dict()
        | {"target_sparsity": [c.target_sparsity for c in configs]},
        "depth": depth,
        "budget_request": budget and {**budget, "value": model_name(str(budget["value"]))},
        "train_to_target_steps": run.run_args.train_to_target_steps,
        "meet_target": run.run_args.meet_target,
        "meet_target_selection": run.run_args.meet_target_selection,
        "meet_target_unit_kinds": run.run_args.meet_target_unit_kinds,
        "refit_head_steps": run.run_args.refit_head_steps,
        "best_of": run.run_args.best_of,
        "checkpoint": dict(zip(("rule", "reason"), run.checkpoint_rule(), strict=True)),
        "recover_lora_steps": run.run_args.recover_lora_steps,
        "finetune_steps": run.run_args.finetune_steps,
        "finetune_learning_rate": run.run_args.finetune_learning_rate,
        "finetune_distill_weight": run.run_args.finetune_distill_weight,
        "dense": dense,
        "competitor": competitor,
        "runs": runs,
        "environment": environment(),
        "provenance": provenance(),
    }
    report["intervals"] = accuracy_intervals(report)
    output_dir = run.training_args.output_dir
    write_report(report, output_dir)
    print(open(os.path.join(output_dir, "report.md"), encoding="utf-8").read())
    return report


def fill_task_defaults(task: Task, mask_args) -> None:
    """Sets the mask arguments whose default depends on the task, where the user gave none.

    Args:
        task: The recipe's task.
        mask_args: The parsed `MaskArguments` (changed in place).
    """
    if mask_args.last_layer is None:
        # The out-of-source GM protocol decided it (docs/research.md, "Decisions"): cut to the
        # depth the validation probes choose, then mask, beats masks on every layer.
        mask_args.last_layer = "auto" if task.selects_depth else "none"
    if mask_args.train_backbone is None:
        # Measured on GM in a small and a large data regime (docs/research.md, "Training the
        # weights"): masks over a training backbone beat frozen masks on validation in both.
        # Distillation's teacher is the frozen backbone, so asking for it keeps it frozen.
        mask_args.train_backbone = task.trains_weights and not mask_args.distill_weight


def run(task: Task) -> dict | None:
    """Runs a recipe end to end (splits, window, budget, depth, dense reference, one pruned
    model per target, report), resuming what `--output_dir` already holds, and returns the
    report (on the main process; None elsewhere)."""
    arguments = parse_arguments()
    model_args, data_args, mask_args, run_args, _, training_args = arguments
    fill_task_defaults(task, mask_args)
    if run_args.best_of < 1:
        raise AudioDataError(
            f"--best_of {run_args.best_of}: give the number of mask runs, 1 or more."
        )
    configure_logging(training_args)
    set_seed(training_args.seed)
    main = training_args.process_index == 0
    try:
        folder = RunFolder(training_args.output_dir, fingerprint(arguments), run_args.restart, main)
    except ValueError as e:
        raise AudioDataError(str(e)) from e
    path = model_args.model_name_or_path
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    with training_args.main_process_first(desc="dataset preparation"):
        raw = load_splits(data_args, feature_extractor.sampling_rate, training_args.seed)
    logger.info(
        "data: %s", ", ".join(f"{name} {len(split)} examples" for name, split in raw.items())
    )
    warning = resolution_warning(len(raw["validation"]))
    if warning:
        logger.warning(warning)
    fit_window(mask_args, raw["train"], path, data_args.audio_column, feature_extractor)
    configs, budget = budgeted_configs(task, arguments)
    state = prepare_run(task, arguments, raw, feature_extractor, folder)
    rule, reason = state.checkpoint_rule()
    logger.info("checkpoints: each phase keeps %s (%s)", KEPT_IN_WORDS[rule], reason)
    depth = None
    if mask_args.last_layer == "auto":
        configs, depth = choose_depth(state, configs)
    dense_config = dataclasses.replace(configs[0], target_sparsity=0.0, last_layer=None)
    dense = dense_baseline(state, dense_config)
    competitor = competitor_baseline(state, budget, configs[0])
    runs = [prune_one_target(state, config, dense) for config in configs]
    if not main:
        return None
    return write_run_report(state, configs, dense, runs, budget, depth, competitor)


def main(task: Task) -> None:
    """The recipes' entry point: `run`, with data and argument problems reported as one clear
    line (exit status 2)."""
    try:
        run(task)
    except AudioDataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def fitted_feature_extractor(feature_extractor, model_path: str, config: MaskConfig):
    """The feature extractor for the masked model (e.g. Whisper's shortened window)."""
    model_config = transformers.AutoConfig.from_pretrained(model_path)
    return adapted_feature_extractor(feature_extractor, model_config, config)


def prepare_labelled_audio(multi_label: bool) -> Callable:
    """`Task.prepare` for classification and tagging: features, labels named from the train
    split (multi-hot when `multi_label`), the matching head size, `AudioCollator`."""

    def prepare(splits, feature_extractor, model_path, data_args, config):
        feature_extractor = fitted_feature_extractor(feature_extractor, model_path, config)
        names = label_names(splits["train"], data_args.label_column)
        args = (feature_extractor, data_args.audio_column, data_args.label_column, names)
        featurized = {
            name: featurize(split, *args, multi_label=multi_label, split=name)
            for name, split in splits.items()
        }
        model_kwargs = {
            "num_labels": len(names),
            "label2id": {name: i for i, name in enumerate(names)},
            "id2label": dict(enumerate(names)),
        }
        if multi_label:
            model_kwargs["problem_type"] = "multi_label_classification"
        return featurized, model_kwargs, AudioCollator(feature_extractor)

    return prepare
