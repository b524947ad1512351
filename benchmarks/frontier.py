"""Accuracy against encoder MACs on a hard task: mask methods, structured baselines, smaller dense
models and LoRA recovery, for several Whisper encoders, on one labelled audiofolder.

The question a user brings: "I can afford N MACs; do I take the small dense model, or a bigger
model pruned down to N?" Every method gets the same head, steps, batch and learning rates; only
what is trained or removed differs:
- `linear_probe`: the model's head on the frozen dense encoder; `full_finetune`: every weight
  trained (the head at the head's rate, the encoder at `--finetune_lr`), a ceiling;
- `mask_macs`: masks with the MACs budget and the hard-mask penalty; `mask_lagrangian`: the same
  with learned Lagrange multipliers;
- `random`, `magnitude`: structured pruning at the same MACs budget (the same fraction of every
  group removed, random or smallest L1), then the head trained on the frozen pruned encoder;
- `drop_layers`: the top encoder layers removed, the head trained on what remains;
- `--last_layer NAME=K` runs every method again on layers 0..K only (the paper: layers above the
  representation a task needs are dropped; choose K on the validation split);
- LoRA recovery (`--lora_steps`, peft) after every mask run, recorded with the run;
- `--train_to_target_steps N`, `--meet_target` and `--refit_head_steps N`: the mask methods'
  finish (the target reached by training on, or met by switching units off, then the head trained
  again with the masks frozen); their runs are keyed apart from the plain masks', so both can sit
  in one JSON.

Every run reports accuracy on the validation and test splits and which clips it got right (for
paired comparisons on the same clips), realised encoder MACs and params, and the kept units (hex
bit masks), from which `benchmarks/frontier_latency.py` rebuilds each pruned model to time it.
The JSON (the runs, and `summary`: mean and spread over the seeds of every point) is written
after every run and resumed from: a run already in `--out` is not run again, so the grid can be
spread over sessions and machines. `--workers N` trains N runs at once
in separate processes (useful on one GPU, whose kernels small models leave mostly idle);
`--stop_after_minutes` stops starting runs after that long.

    python benchmarks/audio_data/gm_instruments.py --out data/gm_instruments
    python benchmarks/frontier.py --data data/gm_instruments \
        --model whisper-tiny.en=$KEEPWHAT_WHISPER_TINY --model whisper-base=$KEEPWHAT_WHISPER_BASE \
        --match_macs_of whisper-tiny.en --out benchmarks/results/frontier_gm.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402
from provenance import write_result  # noqa: E402
from transformers import (  # noqa: E402
    PrinterCallback,
    Trainer,
    TrainingArguments,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import (  # noqa: E402
    MaskConfig,
    SparsityCallback,
    environment,  # noqa: E402
    get_mask_model,
    meet_target,
    train_to_target,
)
from hf_keepwhat.baselines import set_structured_masks  # noqa: E402
from hf_keepwhat.files import read_json  # noqa: E402
from hf_keepwhat.recovery import recover_with_lora, refit_head  # noqa: E402
from hf_keepwhat.tasks.augment import AugmentingCollator, SpectralAugment  # noqa: E402
from hf_keepwhat.tasks.depth import layer_probes  # noqa: E402
from hf_keepwhat.tasks.uncertainty import bits_of, hex_bits  # noqa: F401 (re-exported)

SPLITS = ("train", "validation", "test")  # every layout has these; choices use validation only
SAMPLING_RATE = 16_000
MASK_METHODS = {
    "mask_macs": {"budget": "macs"},
    "mask_lagrangian": {"budget": "macs", "budget_mode": "lagrangian"},
    # The model's `--latency_table` prices the units (`keepwhat profile-latency`).
    "mask_latency": {"budget": "latency"},
}
STRUCTURED = {"random": "random", "magnitude": "l1"}
DENSE_METHODS = ("linear_probe", "full_finetune")
ALL_METHODS = (*DENSE_METHODS, *MASK_METHODS, *STRUCTURED, "drop_layers")
#: Diagnostics only (`--diagnostics`), not part of the grid: a fresh head trained on the frozen
#: units that the `mask_macs` run with the same fields kept, like the structured baselines' head.
#: It tells whether the masks' units or their jointly trained head limit the accuracy.
KEPT_UNITS_PROBE = "mask_units_probe"
PRUNABLE_HEADS = ("linear", "weighted")  # heads the model class holds, so its pruned class too


@dataclass(frozen=True)
class Point:
    """One run of the grid.

    Args:
        model: The model's short name (`--model NAME=PATH`).
        method: One of `ALL_METHODS`, or `KEPT_UNITS_PROBE`.
        target: Fraction of encoder MACs to remove (dropped layers for `drop_layers`).
        seed: Training seed (and the random baseline's).
        last_layer: Layers above it dropped before anything else; None keeps all.
        head: `"linear"` (the model's own projector + classifier), `"weighted"` (the same on
            transformers' learned weighted sum of every layer's output, `use_weighted_layer_sum`,
            SUPERB's protocol: the head can read lower layers) or `"mlp"` (the paper's: one
            hidden layer of 1024 with ReLU).
        steps: Training steps.
        mask_learning_rate: The masks' own rate.
        warmup_fraction: Share of the steps over which the target rises to its value (from what
            `last_layer` removes; `SparsityCallback`).
        mask_type: `MaskConfig.mask_type` of the mask methods.
        mask_init: `MaskConfig.mask_init` of the mask methods (the initial logit; for
            hard-concrete masks the initial `log_alpha`, which sets how noisy the first samples
            are).
        distill_weight: `MaskConfig.distill_weight` of the mask methods (distillation from
            the dense encoder while masks train; 0: none).
        penalty_weight: `MaskConfig.penalty_weight` of `mask_macs` (the quadratic penalty's
            lambda: how hard the realised MACs are pulled onto the target).
        penalty_on: `MaskConfig.penalty_on` of the mask methods ("auto" is "mask" for this
            MACs budget: the penalty counts the hard masks; "probability": the keep probabilities).
        unit_kinds: `MaskConfig.unit_kinds` of the mask methods, comma-separated (e.g.
            "heads,ffn": the convolution stem keeps every channel); "": every kind.
        refit_head_steps: Mask methods: steps of `refit_head` after mask training (the head
            trained again, masks frozen, at the head's rate); 0: none.
        augment_db: Mask methods: timbre augmentation of the training batches
            (`hf_keepwhat.tasks.augment.SpectralAugment`: random EQ up to this many dB plus
            SpecAugment masks); 0: none.
        meet_target: Mask methods: `meet_target` after mask training (before any refit), so
            the realised MACs are at most the target's: True (its default selection) or a
            selection's name (`exact_budget.SELECTIONS`).
    """

    model: str
    method: str
    target: float
    seed: int
    last_layer: int | None = None
    head: str = "linear"
    steps: int = 2000
    mask_learning_rate: float = 0.02
    warmup_fraction: float = 1 / 3
    mask_type: str = "straight_through"
    mask_init: float = 1.0
    distill_weight: float = 0.0
    penalty_weight: float = 100.0
    penalty_on: str = "auto"
    unit_kinds: str = ""
    refit_head_steps: int = 0
    meet_target: bool | str = False
    meet_target_kinds: str = ""
    train_to_target_steps: int = 0
    augment_db: float = 0.0

    #: Fields added after runs were recorded: left out of the key at their default, so the
    #: recorded runs keep matching.
    ADDED_LATER = {
        "mask_type": "straight_through",
        "mask_init": 1.0,
        "distill_weight": 0.0,
        "penalty_weight": 100.0,
        "penalty_on": "auto",
        "unit_kinds": "",
        "refit_head_steps": 0,
        "meet_target": False,
        "meet_target_kinds": "",
        "train_to_target_steps": 0,
        "augment_db": 0.0,
    }

    def key(self) -> str:
        """A unique, readable name of the run (what resuming compares)."""
        fields = dataclasses.asdict(self)
        for name, default in self.ADDED_LATER.items():
            if fields[name] == default:
                del fields[name]
        return json.dumps(fields, sort_keys=True)


# ---- data ---------------------------------------------------------------------------------------


def read_audiofolder(folder: str) -> tuple[dict[str, tuple[list[np.ndarray], list[int]]], list]:
    """Audio and labels of every split of an audiofolder (`{split}/{label}/*.wav`), resampled to
    16 kHz; labels are indices into the sorted label names of the train split. Besides train,
    validation and test, every other split folder is read too and scored by every run (e.g. the
    in-source splits of `audio_data/gm_sources.py`).

    Args:
        folder: The dataset folder (e.g. `benchmarks/audio_data/gm_instruments.py`'s output).
    """
    missing = [s for s in SPLITS if not os.path.isdir(os.path.join(folder, s))]
    if missing:
        raise FileNotFoundError(
            f"{folder} has no {missing} split folder(s); the frontier needs train, validation "
            "(for every choice) and test. Render one with benchmarks/audio_data/gm_instruments.py."
        )
    names = sorted(os.listdir(os.path.join(folder, "train")))
    extra = sorted(
        s for s in os.listdir(folder) if os.path.isdir(os.path.join(folder, s)) and s not in SPLITS
    )
    splits = {}
    for split in (*SPLITS, *extra):
        audio, labels = [], []
        for label in sorted(os.listdir(os.path.join(folder, split))):
            for name in sorted(os.listdir(os.path.join(folder, split, label))):
                clip, rate = sf.read(os.path.join(folder, split, label, name), dtype="float32")
                if clip.ndim > 1:
                    clip = clip.mean(axis=1)
                if rate != SAMPLING_RATE:
                    clip = torchaudio.functional.resample(
                        torch.from_numpy(clip), rate, SAMPLING_RATE
                    ).numpy()
                audio.append(clip)
                labels.append(names.index(label))
        splits[split] = (audio, labels)
    return splits, names


def featurize(model_path: str, splits: dict, window: int) -> dict[str, tuple]:
    """Whisper log-mel features of every split for a `window`-second input window.

    Args:
        model_path: The model folder (its feature extractor).
        splits: `read_audiofolder`'s splits.
        window: The input window in seconds (`MaskConfig.max_input_seconds`).
    """
    extractor = WhisperFeatureExtractor.from_pretrained(model_path, chunk_length=window)
    return {
        split: (
            torch.from_numpy(
                extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="np").input_features
            ),
            torch.tensor(labels),
        )
        for split, (audio, labels) in splits.items()
    }


class Features(torch.utils.data.Dataset):
    """Precomputed features and labels as `Trainer` examples."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_features": self.features[i], "labels": self.labels[i]}


# ---- one run ------------------------------------------------------------------------------------


def build_model(path: str, num_labels: int, head: str) -> WhisperForAudioClassification:
    """The classifier with a fresh head: the model's own, or the paper's MLP."""
    model = WhisperForAudioClassification.from_pretrained(
        path, num_labels=num_labels, use_weighted_layer_sum=head == "weighted"
    )
    if head == "mlp":
        # projector then mean pooling then classifier: a linear projector commutes with the
        # mean, so this is the paper's MLP on the time-averaged features.
        model.projector = torch.nn.Linear(model.config.d_model, 1024)
        model.classifier = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(1024, num_labels))
    elif head not in PRUNABLE_HEADS:
        raise ValueError(f"Unknown head {head!r}; choose 'linear', 'weighted' or 'mlp'.")
    return model


def mask_config(
    point: Point, window: int, num_layers: int, latency_table: str | None = None
) -> MaskConfig:
    """The MaskConfig of a run (`latency_table`: the model's, which `mask_latency` needs and
    every mask run's record then reports the prediction of)."""
    common = {"max_input_seconds": window, "budget": "macs", "last_layer": point.last_layer}
    if point.method in MASK_METHODS:
        return MaskConfig(
            **{**common, **MASK_METHODS[point.method]},
            latency_table=latency_table,
            target_sparsity=point.target,
            mask_learning_rate=point.mask_learning_rate,
            mask_type=point.mask_type,
            mask_init=point.mask_init,
            distill_weight=point.distill_weight,
            penalty_weight=point.penalty_weight,
            penalty_on=point.penalty_on,
            **({"unit_kinds": point.unit_kinds.split(",")} if point.unit_kinds else {}),
            target_warmup_steps=round(point.steps * point.warmup_fraction),
        )
    if point.method == "drop_layers":
        top = num_layers - 1 if point.last_layer is None else point.last_layer
        return MaskConfig(**{**common, "last_layer": top - int(point.target)}, target_sparsity=0.0)
    return MaskConfig(**common, target_sparsity=0.0)


@torch.no_grad()
def correct_by_clip(model, features: torch.Tensor, labels: torch.Tensor, device) -> np.ndarray:
    """Whether each clip's arg-max class is its label (batched), clip 0 first."""
    model.eval()
    correct = []
    for start in range(0, len(labels), 128):
        batch = features[start : start + 128].to(device)
        logits = model(input_features=batch).logits
        correct.append((logits.argmax(-1).cpu() == labels[start : start + 128]).numpy())
    return np.concatenate(correct)


def evaluate(model, features: dict, device) -> dict:
    """Accuracy on every split but train, and which clips were right (`hex_bits`): two runs
    scored on the same clips can then be compared clip by clip (a paired test), which their
    accuracies alone do not allow.

    Args:
        model: A model whose output has `logits`.
        features: Split name -> (input features, labels).
        device: Where the model runs.
    """
    correct = {s: correct_by_clip(model, *xy, device) for s, xy in features.items() if s != "train"}
    return {
        "accuracy": {s: float(c.mean()) for s, c in correct.items()},
        "correct": {s: hex_bits(c) for s, c in correct.items()},
    }


def training_arguments(point: Point, args, work_dir: str, steps: int, lr: float):
    return TrainingArguments(
        output_dir=work_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        learning_rate=lr,
        save_strategy="no",
        logging_steps=max(steps // 40, 1),  # the masks' path to the target, in the record
        report_to=[],
        disable_tqdm=True,
        seed=point.seed,
        use_cpu=args.device == "cpu",
        dataloader_pin_memory=args.device != "cpu",
    )


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation of `values` (None for a single value).

    Args:
        values: One number per seed.
    """
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarize(runs: list[dict]) -> list[dict]:
    """Mean and spread over the seeds of every point: the runs grouped by their key without the
    seed (failed runs left out), with the seeds, the accuracy on every scored split (mean, sample
    standard deviation, None for one seed, and the seed spread max - min), MACs removed (mean)
    and test accuracy after LoRA recovery (mean, where run).

    Args:
        runs: The JSON's runs, one per (point, seed).
    """
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if "error" not in run:
            fields = {k: v for k, v in json.loads(run["key"]).items() if k != "seed"}
            groups.setdefault(json.dumps(fields, sort_keys=True), []).append(run)
    summary = []
    for point, members in groups.items():
        lora = [r["lora"]["accuracy"]["test"] for r in members if "lora" in r]
        accuracy = {}
        for split in members[0]["accuracy"]:
            values = [r["accuracy"][split] for r in members]
            mean, std = mean_std(values)
            accuracy[split] = {"mean": mean, "std": std, "spread": max(values) - min(values)}
        summary.append(
            {
                "point": json.loads(point),
                "seeds": sorted(r["seed"] for r in members),
                **accuracy,
                "macs_removed": statistics.mean(r["macs_removed_fraction"] for r in members),
                "lora_test": statistics.mean(lora) if lora else None,
            }
        )
    return summary


def kept_hex(mm) -> dict[str, str]:
    """Each group's hard mask as a hex bit string (unit 0 first)."""
    out = {}
    for name, kept in mm.kept_units().items():
        group = next(g for g in mm.unit_groups if g.name == name)
        bits = np.zeros(group.num_units, dtype=bool)
        bits[kept.cpu().numpy()] = True
        out[name] = hex_bits(bits)
    return out


def unpack(hex_string: str, num_units: int) -> list[int]:
    """The kept unit indices of a hex bit string written by `kept_hex`."""
    return np.nonzero(bits_of(hex_string, num_units))[0].tolist()


def set_recorded_kept(mm, kept: dict[str, str]) -> None:
    """Sets the hard masks a run recorded (`kept_hex`); groups it does not name keep every unit."""
    for group in mm.unit_groups:
        if group.name in kept:
            mm.set_kept(group.name, unpack(kept[group.name], group.num_units))


def recorded_mask_run(point: Point, out: str) -> dict:
    """The `mask_macs` run in `out` with `point`'s other fields (what `KEPT_UNITS_PROBE` reads)."""
    key = dataclasses.replace(point, method="mask_macs").key()
    runs = read_json(out)["runs"] if os.path.exists(out) else []
    source = next((r for r in runs if r["key"] == key and "error" not in r), None)
    if source is None:
        raise ValueError(f"{point.method} needs the mask_macs run {key} in {out}; run it first.")
    return source


def run_point(point: Point, args, data: dict, paths: dict) -> dict:
    """Trains and evaluates one point; returns its record."""
    start = time.perf_counter()
    torch.manual_seed(point.seed)
    features = data[point.model]
    device = torch.device(args.device)
    num_labels = int(features["train"][1].max()) + 1
    model = build_model(paths[point.model], num_labels, point.head)
    config = mask_config(
        point, args.window, model.config.encoder_layers, args.latency_table.get(point.model)
    )
    mm = get_mask_model(model, config).to(device)
    if point.method in STRUCTURED:
        set_structured_masks(mm, point.target, STRUCTURED[point.method], point.seed)
    elif point.method == KEPT_UNITS_PROBE:
        set_recorded_kept(mm, recorded_mask_run(point, args.out)["kept"])
    with tempfile.TemporaryDirectory() as work_dir:
        training = training_arguments(point, args, work_dir, point.steps, args.learning_rate)
        optimizer_cls, kwargs = mm.optimizer_cls_and_kwargs(training)
        if point.method == "full_finetune":
            mm.model.encoder.requires_grad_(True)
            mm.model.encoder.embed_positions.requires_grad_(False)  # Whisper's are fixed
            encoder = [p for p in mm.model.encoder.parameters() if p.requires_grad]
            kwargs["params"] = [*kwargs["params"], {"params": encoder, "lr": args.finetune_lr}]
        if point.method not in MASK_METHODS:
            mm.masks.requires_grad_(False)  # fixed masks (or none removed): only weights train
            mm.mask_config.penalty_weight = 0.0
        augmented = point.method in MASK_METHODS and point.augment_db
        trainer = Trainer(
            model=mm,
            args=training,
            data_collator=AugmentingCollator(
                _stack, SpectralAugment(eq_db=point.augment_db, seed=point.seed)
            )
            if augmented
            else None,
            train_dataset=Features(*features["train"]),
            callbacks=[SparsityCallback(config)] if point.method in MASK_METHODS else [],
            optimizer_cls_and_kwargs=(optimizer_cls, kwargs),
        )
        trainer.remove_callback(PrinterCallback)  # many runs at once: one line per run instead
        trainer.train()
        # Where the hard masks were along the way (SparsityCallback logs them): whether a run
        # ends short of its target because training settled there or because it was still moving.
        removed = f"removed_{config.budget}"
        removed_by_step = {
            log["step"]: round(log[removed], 5)
            for log in trainer.state.log_history
            if removed in log
        }
        if point.method in MASK_METHODS and point.train_to_target_steps:
            round_args = training_arguments(
                point, args, work_dir, point.train_to_target_steps, args.learning_rate
            )
            train_to_target(mm, round_args, Features(*features["train"]))
        if point.method in MASK_METHODS and point.meet_target:
            selection = point.meet_target if isinstance(point.meet_target, str) else "least_sure"
            kinds = point.meet_target_kinds.split(",") if point.meet_target_kinds else None
            meet_target(mm, selection=selection, unit_kinds=kinds)
        before_refit = None
        if point.method in MASK_METHODS and point.refit_head_steps:
            before_refit = evaluate(mm, features, device)
            refit_args = training_arguments(
                point, args, work_dir, point.refit_head_steps, args.learning_rate
            )
            refit_head(mm, refit_args, Features(*features["train"]))
        # The MLP head is not the model class's own, so no pruned class can hold it: that
        # variant is evaluated masked (pruned == masked is what the equivalence tests check).
        pruned = mm.prune().to(device) if point.head in PRUNABLE_HEADS else mm
        total = mm.sparsity_report()["total"]
        record = {
            **dataclasses.asdict(point),
            "key": point.key(),
            **evaluate(pruned, features, device),
            "macs_removed_fraction": total["macs_removed_fraction"],
            "params_removed_fraction": total["params_removed_fraction"],
            "encoder_macs": total["macs_remaining"],
            "encoder_params": total["params_remaining"],
            "layers_passed_through": total["layers_passed_through"],
            "kept": kept_hex(mm),
            "train_seconds": time.perf_counter() - start,
        }
        if before_refit is not None:
            record["accuracy_before_head_refit"] = before_refit["accuracy"]
            record["correct_before_head_refit"] = before_refit["correct"]
        if removed_by_step:
            record[f"{config.budget}_removed_by_step"] = removed_by_step
        if "latency_ms_remaining" in total:
            record["latency_predicted_ms"] = total["latency_ms_remaining"]
            record["latency_predicted_removed_fraction"] = total["latency_removed_fraction"]
        for done in ("target_trained", "target_met"):
            if getattr(mm, done) is not None:
                record[done] = getattr(mm, done)
        if point.method in MASK_METHODS and args.lora_steps and point.head in PRUNABLE_HEADS:
            lora_start = time.perf_counter()
            lora_args = training_arguments(
                point, args, work_dir, args.lora_steps, args.lora_learning_rate
            )
            recovered = recover_with_lora(pruned, lora_args, Features(*features["train"])).to(
                device
            )
            record["lora"] = {
                "steps": args.lora_steps,
                "learning_rate": args.lora_learning_rate,
                **evaluate(recovered, features, device),
                "seconds": time.perf_counter() - lora_start,
            }
    return record


def _stack(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([torch.as_tensor(e[k]) for e in examples]) for k in examples[0]}


def probe_layers(path: str, features: dict, window: int) -> list[dict]:
    """`hf_keepwhat.tasks.depth.layer_probes` of a model on every split: fitted on train, chosen
    on validation, scored on the others too.

    Args:
        path: The model folder.
        features: Split name -> (input features, labels), `featurize`'s output for this model.
        window: The input window in seconds.
    """
    data = {split: Features(*xy) for split, xy in features.items()}
    model = build_model(path, int(features["train"][1].max()) + 1, "linear")
    others = {s: d for s, d in data.items() if s not in ("train", "validation")}
    config = MaskConfig(max_input_seconds=window, budget="macs", target_sparsity=0.0)
    return layer_probes(model, config, data["train"], data["validation"], _stack, others=others)


# ---- the grid -----------------------------------------------------------------------------------


def encoder_macs(path_or_config: str, window: int, last_layer: int | None = None) -> tuple:
    """Encoder MACs of a Whisper model (a folder, or a `config.json`) for the input window:
    `(all layers, layers 0..last_layer)`. Only shapes matter: random weights."""
    config_file = os.path.join(path_or_config, "config.json")
    config = WhisperConfig.from_json_file(
        config_file if os.path.isdir(path_or_config) else path_or_config
    )
    mm = get_mask_model(
        WhisperForAudioClassification(config),
        MaskConfig(
            max_input_seconds=window, budget="macs", target_sparsity=0.0, last_layer=last_layer
        ),
    )
    total = mm.sparsity_report()["total"]
    return total["macs_original"], total["macs_remaining"]


def dropped_layer_counts(path: str, targets, last_layer: int | None) -> list[float]:
    """Numbers of top layers to drop nearest each MACs target (at least one layer kept)."""
    layers = WhisperConfig.from_pretrained(path).encoder_layers
    layers = layers if last_layer is None else last_layer + 1
    return [float(k) for k in sorted({round(t * layers) for t in targets} & set(range(1, layers)))]


def _targets_of(method: str, targets, path: str, last_layer, seed: int, args) -> list[float]:
    """The targets `method` runs at for this seed: probes on every seed, the mask methods at
    every target on every seed (the issue asks for 3 seeds of each), the other methods on the
    baseline seeds."""
    if method == "linear_probe":
        return [0.0]
    if method in MASK_METHODS:
        return list(targets)
    if seed not in args.baseline_seeds:
        return []
    if method == "full_finetune":
        return [0.0] if last_layer is None else []
    if method == "drop_layers":  # with layers already cut it would repeat the other rows
        return dropped_layer_counts(path, targets, last_layer) if last_layer is None else []
    return list(targets)


def plan(args, paths: dict, match_targets: dict) -> list[Point]:
    """Every point, most informative first (so a run stopped early has the headline figures):
    the dense methods and the 50% and matched-MACs targets (first seed, then the others), then
    the other budgets; `--diagnostics` last."""
    settings = {"steps": args.steps, "mask_learning_rate": args.mask_learning_rate}
    after_masks = {
        "refit_head_steps": args.refit_head_steps,
        "meet_target": args.meet_target,
        "train_to_target_steps": args.train_to_target_steps,
    }
    points = []
    for model, path in paths.items():
        every = {*args.targets, *([match_targets[model]] if model in match_targets else [])}
        for last_layer in [None] + ([args.last_layer[model]] if model in args.last_layer else []):
            # With layers cut, only targets beyond what the cut removes leave masks a choice.
            full, cut = encoder_macs(path, args.window, last_layer)
            targets = sorted(t for t in every if t > 1 - cut / full + 0.02)
            for seed in args.seeds:
                points += [
                    Point(
                        model,
                        method,
                        t,
                        seed,
                        last_layer,
                        **settings,
                        **(after_masks if method in MASK_METHODS else {}),
                    )
                    for method in args.methods
                    for t in _targets_of(method, targets, path, last_layer, seed, args)
                ]

    def priority(p: Point) -> tuple:
        headline = p.method in DENSE_METHODS or p.target in (0.5, match_targets.get(p.model))
        return (not headline, p.seed != args.seeds[0], p.last_layer is not None)

    points = sorted(dict.fromkeys(points), key=priority)  # a stable sort keeps the grid's order
    diagnostics = [Point(**{**settings, **json.loads(d)}) for d in args.diagnostics]
    return diagnostics + points if args.diagnostics_first else points + diagnostics


_WORKER: dict = {}


def _init_worker(args, paths: dict, features_file: str) -> None:
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    _WORKER.update(args=args, paths=paths, data=torch.load(features_file))


def _run_job(job: tuple[Point, float]) -> tuple[Point, dict | None]:
    point, stop_at = job
    if time.time() > stop_at:
        return point, None
    try:
        return point, run_point(point, _WORKER["args"], _WORKER["data"], _WORKER["paths"])
    except Exception as e:  # one broken run must not lose the others; it is recorded
        return point, {**dataclasses.asdict(point), "key": point.key(), "error": repr(e)}


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--data", required=True, help="audiofolder with train/validation/test splits")
    add("--model", action="append", required=True, help="NAME=PATH, repeatable")
    add(
        "--match_macs_of",
        help="NAME or config.json: add, for every larger model, the MACs target "
        "that leaves it this model's encoder MACs",
    )
    add(
        "--last_layer",
        action="append",
        default=[],
        help="NAME=K: also run every method on layers 0..K (K chosen on the validation split)",
    )
    add(
        "--methods",
        nargs="*",
        default=list(ALL_METHODS),
        choices=ALL_METHODS,
        help="the grid's methods; none: only --diagnostics",
    )
    add("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the mask methods")
    add("--baseline_seeds", type=int, nargs="+", default=[0], help="seeds of the other methods")
    add("--diagnostics", nargs="*", default=[], help="extra points as JSON Point fields")
    add("--diagnostics_first", action="store_true", help="run --diagnostics before the grid")
    add("--window", type=int, default=1, help="input window in seconds")
    add("--steps", type=int, default=2000)
    add("--batch_size", type=int, default=8)
    add("--learning_rate", type=float, default=1e-3, help="the head's")
    add("--mask_learning_rate", type=float, default=0.02)
    add("--finetune_lr", type=float, default=3e-5, help="the encoder's, in full_finetune")
    add("--refit_head_steps", type=int, default=0, help="refit_head steps after mask runs")
    add("--meet_target", action="store_true", help="meet_target after mask runs (before refit)")
    add(
        "--train_to_target_steps",
        type=int,
        default=0,
        help="train_to_target rounds of N steps after mask runs (before meet_target); 0: none",
    )
    add("--lora_steps", type=int, default=500, help="LoRA recovery after mask runs; 0: none")
    add("--lora_learning_rate", type=float, default=5e-4)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--workers", type=int, default=1, help="runs trained at once, one process each")
    add("--threads", type=int, default=torch.get_num_threads(), help="torch threads per run")
    add(
        "--layer_probes",
        action="store_true",
        help="first record, per model, a linear probe on each layer's pooled output (fitted on "
        "train, scored on every other split): the depth `--last_layer auto` would choose",
    )
    add(
        "--latency_table",
        action="append",
        default=[],
        help="NAME=latency.json (`keepwhat profile-latency`): the mask_latency budget's prices",
    )
    add("--stop_after_minutes", type=float, default=float("inf"))
    add("--work_dir", default=os.path.join(tempfile.gettempdir(), "frontier"))
    add("--out", default="benchmarks/results/frontier_gm.json")
    args = parser.parse_args()
    args.last_layer = {k: int(v) for k, v in (item.split("=", 1) for item in args.last_layer)}
    args.latency_table = dict(item.split("=", 1) for item in args.latency_table)
    return args


def main() -> None:
    """Runs every point not yet in `--out` and rewrites the JSON after each run."""
    args = parse_args()
    stop_at = time.time() + 60 * args.stop_after_minutes
    hf_logging.set_verbosity_error()
    paths = dict(item.split("=", 1) for item in args.model)
    match_targets = {}
    if args.match_macs_of:
        reference, _ = encoder_macs(paths.get(args.match_macs_of, args.match_macs_of), args.window)
        for name, path in paths.items():
            fraction = 1 - reference / encoder_macs(path, args.window)[0]
            if fraction > 0:
                match_targets[name] = round(fraction, 4)
    previous = read_json(args.out) if os.path.exists(args.out) else {}
    match_targets = {**previous.get("match_targets", {}), **match_targets}
    runs = [r for r in previous.get("runs", []) if "error" not in r]  # a failed run runs again
    done = {r["key"] for r in runs}
    todo = [p for p in plan(args, paths, match_targets) if p.key() not in done]
    print(f"{len(done)} runs already in {args.out}, {len(todo)} to run", flush=True)

    splits, label_names = read_audiofolder(args.data)
    os.makedirs(args.work_dir, exist_ok=True)
    features_file = os.path.join(args.work_dir, "features.pt")
    features = {name: featurize(path, splits, args.window) for name, path in paths.items()}
    torch.save(features, features_file)
    meta = {
        "benchmark": "frontier",
        "dataset": os.path.basename(os.path.normpath(args.data)),
        "labels": label_names,
        "examples": {s: len(labels) for s, (_, labels) in splits.items()},
        "window_s": args.window,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "finetune_lr": args.finetune_lr,
        "match_macs_of": args.match_macs_of,
        "match_targets": match_targets,
    }
    meta["layer_probes"] = previous.get("layer_probes", {})
    if args.layer_probes:
        torch.set_num_threads(args.threads)
        for name, path in paths.items():
            if name not in meta["layer_probes"]:
                meta["layer_probes"][name] = probe_layers(path, features[name], args.window)
    write_result(args.out, {**meta, "runs": runs, "summary": summarize(runs)})

    def record(point: Point, result: dict | None) -> None:
        if result is None:
            print(f"not started, time is up: {point.key()}", flush=True)
            return
        result["environment"] = {
            **environment(),
            "workers": args.workers,
            "threads_per_run": args.threads,
        }
        runs[:] = [r for r in runs if r["key"] != result["key"]] + [result]
        write_result(args.out, {**meta, "runs": runs, "summary": summarize(runs)})
        shown = {k: v for k, v in result.items() if k not in ("kept", "correct")}
        print(json.dumps(shown), flush=True)

    jobs = [(p, stop_at) for p in todo]
    if args.workers == 1:
        _init_worker(args, paths, features_file)
        for job in jobs:
            record(*_run_job(job))
    else:
        context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
        with context.Pool(args.workers, _init_worker, (args, paths, features_file)) as pool:
            for result in pool.imap_unordered(_run_job, jobs, chunksize=1):
                record(*result)


if __name__ == "__main__":
    main()
