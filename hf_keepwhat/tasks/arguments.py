"""The recipes' command line: model, data, masks, the run's extra steps, and `TrainingArguments`,
parsed by `HfArgumentParser` (a JSON file of arguments works too, as in transformers' examples).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from ..config import MaskConfig
from ..exact_budget import SELECTIONS
from .heads import HEADS
from .selection import CHECKPOINT_RULES, LAST_CHECKPOINT_BELOW

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
    validation_split: str = field(
        default="validation",
        metadata={"help": "The dataset's validation split, used when it has one."},
    )
    validation_size: float = field(
        default=0.1,
        metadata={
            "help": "Without a validation split or fold: the fraction of the train split carved out for validation (stratified by label where the labels allow it, seeded)."
        },
    )
    validation_fold: list[str] | None = field(
        default=None,
        metadata={
            "help": "Fold-based validation: rows of the train split whose --fold_column value is one of these (after --test_fold is taken out)."
        },
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
    max_validation_samples: int | None = field(
        default=None, metadata={"help": "Truncate the validation split."}
    )


@dataclass
class RunArguments:
    """What the run measures besides the masked model."""

    train_baseline: bool = field(
        default=True,
        metadata={
            "help": "Train the dense baseline as the masks train: every weight of the unmasked model fine-tuned with --train_backbone (the classification default), else the same head on the frozen backbone (a linear probe); --no_train_baseline measures the model as loaded (a previous run's dense/ given as --model_name_or_path: masks from a fine-tuned model)."
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
            "help": "After mask training, if the masks remove less than the target, switch off kept units (see --meet_target_selection) until they remove it (before the head refit), so the pruned model costs at most what was asked. It can cost accuracy: see docs/artifacts.md, Exact budget."
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
            "help": "The unit kinds --meet_target may switch off (e.g. heads ffn; default every kind). Switching off conv-stem channels moves every layer's input: see docs/artifacts.md, Exact budget."
        },
    )
    best_of: int = field(
        default=1,
        metadata={
            "help": "Train the masks of each target this many times (seeds --seed, --seed + 1, ...) and keep the run best on validation within the budget: one run's seed can move out-of-source accuracy by several points at high sparsity (docs/research.md, 'Restarts chosen on validation'). Costs that many mask trainings."
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
    finetune_steps: int = field(
        default=0,
        metadata={
            "help": "After pruning (and any LoRA recovery), train every kept weight and the head on the task for this many steps, with validation and the best checkpoint kept, as transformers' audio-classification example fine-tunes a dense model (0: none)."
        },
    )
    finetune_learning_rate: float = field(
        default=5e-5,
        metadata={
            "help": "Learning rate of --finetune_steps (warmed up over a tenth of the steps, then decayed linearly)."
        },
    )
    finetune_distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "With --finetune_steps: weight of a distillation term towards the frozen base model's backbone output at the pruned model's depth (0: the task loss alone)."
        },
    )
    restart: bool = field(
        default=False,
        metadata={
            "help": "Start over in --output_dir: by default a run resumes there (finished phases are read back, an unfinished one continues from its last checkpoint)."
        },
    )
    checkpoint: str = field(
        default="auto",
        metadata={
            "help": "Which checkpoint every phase keeps: best (best on validation; for masks, among those within the budget), last, average (the trained weights averaged over the checkpoints of the run's second half, the masks the last checkpoint's), or auto: the last where validation has fewer than "
            f"{LAST_CHECKPOINT_BELOW} clips (choosing on so few measured no better: docs/research.md, 'What chooses a checkpoint'), else the best.",
            "choices": list(CHECKPOINT_RULES),
        },
    )
    budget_tolerance: float = field(
        default=0.005,
        metadata={
            "help": "A checkpoint meets the budget when it removes at least the target minus this (a fraction); the best validation checkpoint is chosen among those."
        },
    )


@dataclass
class BudgetArguments:
    """The budget in the user's terms: as cheap as another model, a number of MACs or
    parameters, or milliseconds. Each sets `--budget` and `--target_sparsity` (computed and
    recorded)."""

    match_macs_of: str | None = field(
        default=None,
        metadata={
            "help": "Hub id, folder or config.json of a model: prune to at most its backbone MACs at the same input window (e.g. Whisper base to tiny.en's)."
        },
    )
    match_params_of: str | None = field(
        default=None,
        metadata={"help": "Hub id, folder or config.json: prune to at most its backbone params."},
    )
    max_macs: float | None = field(
        default=None, metadata={"help": "Prune to at most this many backbone MACs (per input)."}
    )
    max_params: float | None = field(
        default=None, metadata={"help": "Prune to at most this many backbone parameters."}
    )
    max_latency_ms: float | None = field(
        default=None,
        metadata={
            "help": "Prune to at most this many milliseconds per call, as --latency_table predicts them on the runtime it was measured on (keepwhat profile-latency)."
        },
    )

    def requested(self) -> tuple[str, str | float] | None:
        """The one budget asked for, as (argument name, value), or None."""
        given = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]
        given = [(name, value) for name, value in given if value is not None]
        if len(given) > 1:
            names = ", ".join(f"--{name}" for name, _ in given)
            raise ValueError(f"{names}: give one budget at most.")
        return given[0] if given else None


#: What a recipe user who sets nothing gets, where it differs from MaskConfig's library defaults:
#: the GM frontier grid's settings (docs/results.md): the MACs budget (what speed follows), the
#: masks' own rate 0.02, and the target warmed up over a third of the steps (None: a third).
RECIPE_MASK_DEFAULTS = {"budget": "macs", "mask_learning_rate": 0.02, "target_warmup_steps": None}
RECIPE_MASK_HELP = {
    "target_sparsity": "Fraction(s) of the budget to remove; several values give one run each.",
    "target_warmup_steps": "Steps over which the target rises to its value (default: a third of --max_steps).",
    "last_layer": "Drop the layers above this index; 'auto': per-layer probes on the validation split choose it; 'none': keep every layer (default: 'auto' for classification, 'none' otherwise).",
    "max_input_seconds": "Whisper: the input window in seconds (default: the longest train clip, rounded up to a whole second).",
    "latency_table": "A `keepwhat profile-latency` file: --budget latency prices units with it, and reports add its predicted latency.",
    "head_first_steps": "With --train_backbone: the backbone's weights wait this many steps of every phase while the head (and the masks) train (LP-FT); 0, the default, trains them from the first step (docs/research.md, 'Training the weights', small data: the head first).",
    "train_backbone": "Train the kept weights while the masks learn (at --backbone_learning_rate; the dense reference is then fine-tuned too); '--train_backbone false' freezes the backbone (default: true for single-label classification, where it won on validation in the small-data regime of docs/research.md 'Training the weights' (78.3 against 76.7 for frozen masks then --finetune_steps, 5 seeds) in less training time; in the large regime frozen masks then fine-tuning won on validation, 91.4 against 87.2, with the same test accuracy within the intervals; false otherwise).",
}


def _mask_arguments_class() -> type:
    """MaskConfig's fields as command-line arguments, with the recipe's defaults, a list of
    `target_sparsity` values (one run per value) and `last_layer` that may be `auto`."""
    types = {
        "target_sparsity": list[float],
        "last_layer": str | None,
        "target_warmup_steps": int | None,
        "latency_table": str | None,
        "train_backbone": bool | None,
    }
    fields = []
    for f in dataclasses.fields(MaskConfig):
        if f.name == "target_sparsity":
            default = {"default_factory": lambda: [0.5]}
        elif f.name in RECIPE_MASK_DEFAULTS:
            default = {"default": RECIPE_MASK_DEFAULTS[f.name]}
        elif f.default_factory is not dataclasses.MISSING:
            default = {"default_factory": f.default_factory}
        else:
            default = {"default": f.default}
        metadata = {"help": RECIPE_MASK_HELP[f.name]} if f.name in RECIPE_MASK_HELP else {}
        if f.name == "train_backbone":  # unset (None): `recipe.fill_task_defaults` decides
            default = {"default": None}
            metadata.update(nargs="?", const=True)
        fields.append((f.name, types.get(f.name, f.type), field(**default, metadata=metadata)))
    return dataclasses.make_dataclass("MaskArguments", fields)


@dataclass
class RecipeTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the recipes' defaults: the frontier grid's head learning rate and
    length (transformers' 5e-5 for three epochs trains a fresh head too little)."""

    learning_rate: float = field(
        default=1e-3,
        metadata={"help": "The head's learning rate (the masks': --mask_learning_rate)."},
    )
    max_steps: int = field(default=2000, metadata={"help": "Training steps of every phase."})


MaskArguments = _mask_arguments_class()


def parse_arguments():
    """Parses the recipe's command line (or a single JSON file of arguments) into model, data,
    mask, run, budget and training arguments."""
    parser = HfArgumentParser(
        (
            ModelArguments,
            DataArguments,
            MaskArguments,
            RunArguments,
            BudgetArguments,
            RecipeTrainingArguments,
        )
    )
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parsed = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        parsed = parser.parse_args_into_dataclasses()
    model_args, data_args, mask_args, run_args, budget_args, training_args = parsed
    if model_args.head not in ("model", *HEADS):
        parser.error(f"--head {model_args.head!r} is not one of {('model', *HEADS)}")
    if data_args.preset:
        if data_args.preset not in PRESETS:
            parser.error(f"--preset {data_args.preset!r} is not one of {sorted(PRESETS)}")
        for key, value in PRESETS[data_args.preset].items():
            if getattr(data_args, key) == getattr(DataArguments, key, None):
                setattr(data_args, key, value)
    try:
        budget_args.requested()
    except ValueError as e:
        parser.error(str(e))
    return model_args, data_args, mask_args, run_args, budget_args, training_args


def mask_configs(mask_args, max_steps: int = 0) -> list[MaskConfig]:
    """One MaskConfig per requested target sparsity (`last_layer="auto"` left for the run to
    choose, and "none": None here).

    Args:
        mask_args: The parsed `MaskArguments`.
        max_steps: The phases' steps: the warm-up's default is a third of them.
    """
    values = {f.name: getattr(mask_args, f.name) for f in dataclasses.fields(MaskConfig)}
    if values["target_warmup_steps"] is None:
        values["target_warmup_steps"] = max(max_steps, 0) // 3
    if values["last_layer"] in (None, "auto", "none"):
        values["last_layer"] = None
    else:
        try:
            values["last_layer"] = int(values["last_layer"])
        except ValueError:
            raise ValueError(
                f"--last_layer {values['last_layer']!r}: give a layer index, 'auto' or 'none'."
            ) from None
    return [MaskConfig(**{**values, "target_sparsity": t}) for t in mask_args.target_sparsity]


def recipe_defaults() -> dict:
    """What `recipes/classify.py` runs with when given no tuning flag: the mask, run and training
    defaults that decide a result (every JSON under benchmarks/results records them, and a test
    flags a "defaults" result that no longer matches)."""
    mask = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(MaskArguments)
        if f.name != "latency_table"
    }
    run = {
        f.name: f.default
        for f in dataclasses.fields(RunArguments)
        if f.name not in ("restart", "latency_repeats")
    }
    training = RecipeTrainingArguments.__dataclass_fields__
    return {
        "mask": mask,
        "run": run,
        "training": {
            "learning_rate": training["learning_rate"].default,
            "max_steps": training["max_steps"].default,
            "per_device_train_batch_size": training["per_device_train_batch_size"].default,
        },
        # Decided by `tasks.recipe.fill_task_defaults` when not given (classification).
        "last_layer_when_unset": "auto",
        "train_backbone_when_unset": True,
    }
