"""`MaskConfig`: everything that decides what is masked and how hard the sparsity budget pulls."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

UNIT_KINDS = ("heads", "ffn", "conv")
BUDGET_KINDS = ("units", "params", "macs", "latency")
MASK_TYPES = ("straight_through", "straight_through_gated", "hard_concrete")
PENALTY_ON = ("auto", "probability", "mask", "kept")
BUDGET_MODES = ("penalty", "lagrangian")


def _number(name: str, value, low: float | None = None, strict: bool = False, none: str = ""):
    """`value` as a finite float, or an error naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"MaskConfig.{name} must be a number, not {value!r} ({type(value).__name__})."
        )
    value = float(value)
    bound = "" if low is None else (f" > {low:g}" if strict else f" >= {low:g}")
    if not math.isfinite(value) or (low is not None and (value <= low if strict else value < low)):
        raise ValueError(
            f"MaskConfig.{name}={value} must be a finite number{bound}{' ' + none if none else ''}."
        )
    return value


def _integer(name: str, value, what: str) -> int:
    """`value` as a non-negative int (an integral float such as 2.0 too), or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"MaskConfig.{name} must be an integer ({what}), not {value!r}.")
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise ValueError(f"MaskConfig.{name}={value} must be an integer {what}.")
    return int(value)


def _names(name: str, value, choices: tuple[str, ...] | None = None) -> list[str]:
    """`value` as a list of names; a single string is refused (it would split into characters)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(
            f"MaskConfig.{name} must be a list of names, e.g. [{value!r}], not {value!r}."
        )
    if not all(isinstance(v, str) for v in value):
        raise TypeError(f"MaskConfig.{name} must hold names (strings), not {value!r}.")
    unknown = sorted(set(value) - set(choices)) if choices is not None else []
    if unknown:
        raise ValueError(
            f"Unknown unit kind(s) {unknown} in MaskConfig.{name}; choose from {choices}."
        )
    return list(value)


@dataclass
class MaskConfig:
    """Configuration of mask training and of the sparsity budget.

    Args:
        unit_kinds: Which kinds of units get a learnable mask: `"heads"` (attention heads),
            `"ffn"` (feed-forward neurons), `"conv"` (convolution output channels, only where
            deleting them is exact). Kinds a model does not have are ignored.
        budget: What the sparsity target counts. `"units"` is the paper's penalty (every mask site
            weighs the same, whatever its size); `"params"` counts backbone parameters; `"macs"`
            counts backbone multiply-accumulates for an input of `macs_input_seconds`;
            `"latency"` counts milliseconds predicted by `latency_table` (measured on the
            runtime you deploy on), where an emptied attention block, FFN or layer also gives
            back its fixed cost.
        target_sparsity: Fraction of the budget to REMOVE, in [0, 1). `0.5` with
            `budget="params"` asks for half of the backbone's parameters to go.
        penalty_weight: `lambda` of the quadratic penalty `lambda * (kept - (1 - target))**2`;
            100 in the paper.
        budget_mode: `"penalty"`: the paper's quadratic penalty with the fixed `penalty_weight`.
            `"lagrangian"`: `l1 * d + l2 * d**2` with `d = kept - (1 - target)` and multipliers
            `l1, l2` trained by gradient ascent (CoFi / DPHuBERT), which drives the realised
            sparsity onto the target; needs the optimizer of `MaskModel.optimizer_cls_and_kwargs`
            (its multiplier group has `maximize=True`). Experimental: in short runs it does not
            yet land within 1 point of the target.
        penalty_on: What `kept` is computed from. `"probability"`: the keep probabilities
            `sigmoid(theta)`, as in the paper; the realised (hard-mask) sparsity then lags the
            target until the logits polarise, which takes long training. `"mask"`: the hard masks
            themselves, with the straight-through gradient, so the penalty measures the realised
            sparsity (for `"hard_concrete"` masks: their samples, whose soft expectation biases
            the count). `"kept"`: what pruning keeps (`log_alpha > 0` for `"hard_concrete"`),
            with the gradient of the masks the network runs with; for straight-through masks it
            is `"mask"`. `"auto"`: `"probability"` for `budget="units"` (the paper), `"mask"`
            for `"params"` and `"macs"`.
        mask_init: Initial mask logit of every unit. `1.0` (sigmoid 0.73, every unit on) as in
            the paper.
        mask_learning_rate: Learning rate of the mask logits when the optimizer is built from
            `MaskModel.param_groups` (masks usually want a larger rate than the head: a logit
            must travel from `mask_init` past 0 to switch a unit off). `None`: the head's rate.
        mask_type: The mask parametrisation. `"straight_through"` is the paper's hard
            `round(sigmoid(theta))` with a straight-through gradient. `"straight_through_gated"`
            adds one such gate per group (CoFi's coarse masks: a layer's whole attention block,
            its whole FFN), so the budget can remove a block in one decision instead of unit by
            unit; a layer whose blocks are all gated off becomes a pass-through.
            `"hard_concrete"`: L0 regularisation's stochastic masks (Louizos et al., 2018; CoFi),
            sampled while masks train and hard (`log_alpha > 0`) otherwise; `mask_init` is the
            initial `log_alpha`.
        modules_to_save: Names of the wrapped model's child modules (or parameters) that are
            trained with the masks, the task head. `None` picks those of
            `projector`, `classifier`, `layer_weights`, `lm_head` that the model has.
        last_layer: Index of the last encoder layer to keep. Layers above it are dropped before
            training (their output is never used). `None` keeps them all.
        max_input_seconds: Whisper only: shorten the encoder's fixed input window (30 s as
            shipped) to this many seconds (a multiple of 0.02 s, e.g. 1 or 0.5) by truncating its
            positional table, so a task with short clips does not pay for 30 s of attention. Feed
            it features from `adapted_feature_extractor(...)` (a whole number of seconds is the
            stock extractor with `chunk_length` set; a fraction needs
            `KeepWhatWhisperFeatureExtractor`). The shortened model is the dense reference the
            budget counts from.
        macs_input_seconds: Input length used to count MACs for models whose input length is
            free (wav2vec2 family). Whisper always counts its fixed input window.
        target_warmup_steps: `SparsityCallback` raises the target linearly to
            `target_sparsity` over this many optimizer steps, from what dropping the layers
            above `last_layer` removes (0 without it); 0 applies it from the start.
        distill_weight: Weight of a distillation term added to the loss while masks train: the
            relative squared error between the masked backbone's output and the dense
            backbone's on the same batch (the teacher is the frozen backbone with its masks
            off, one extra forward pass without gradient per step; CoFi, DPHuBERT): it pulls
            the masks towards the representation the dense model computes. 0, the default, is
            the paper's method; on GM instruments distillation gained nothing (README).
            transformers models only.
        backbone_train_mode: Whether the frozen model follows the Trainer's training mode
            (dropout, LayerDrop, SpecAugment on while masks train). False, the default, keeps it
            in eval mode as the paper does: masks then learn against the function the pruned
            model will compute. The task head always follows the Trainer's mode.
        latency_table: A latency model from `keepwhat profile-latency` (the file's path, or
            its dict; the config keeps the dict). Needed by `budget="latency"`; with any
            budget, reports and cards then add the predicted latency.
        train_backbone: Whether the backbone's weights train with the masks (CoFi, DPHuBERT)
            instead of staying frozen (the paper). The pruned model then holds the trained
            weights; a mask adapter (masks + head) cannot reproduce them, so only the pruned
            model is saved. Not with `distill_weight` (its teacher is the backbone itself).
        backbone_learning_rate: The backbone's learning rate when `train_backbone` (the head's
            is `TrainingArguments.learning_rate`; transformers' audio-classification example
            fine-tunes every weight at 5e-5).
        head_first_steps: With `train_backbone`, the backbone's weights stay as loaded for this
            many optimizer steps while the head (and the masks) train, then train too: the head
            the backbone first sees is fitted instead of random (LP-FT, Kumar et al. 2022, whose
            point is that a random head's gradients distort pretrained features). 0 trains them
            from the first step. `SparsityCallback` holds them.
    """

    unit_kinds: list[str] = field(default_factory=lambda: list(UNIT_KINDS))
    budget: str = "params"
    target_sparsity: float = 0.5
    penalty_weight: float = 100.0
    budget_mode: str = "penalty"
    penalty_on: str = "auto"
    mask_init: float = 1.0
    mask_learning_rate: float | None = None
    mask_type: str = "straight_through"
    modules_to_save: list[str] | None = None
    last_layer: int | None = None
    max_input_seconds: float | None = None
    macs_input_seconds: float = 1.0
    target_warmup_steps: int = 0
    distill_weight: float = 0.0
    backbone_train_mode: bool = False
    latency_table: dict | None = None
    train_backbone: bool = False
    backbone_learning_rate: float = 5e-5
    head_first_steps: int = 0

    def __post_init__(self):
        self.unit_kinds = _names("unit_kinds", self.unit_kinds, UNIT_KINDS)
        if not self.unit_kinds:
            raise ValueError(f"MaskConfig.unit_kinds is empty; name at least one of {UNIT_KINDS}.")
        for name, choices in (
            ("budget", BUDGET_KINDS),
            ("mask_type", MASK_TYPES),
            ("budget_mode", BUDGET_MODES),
            ("penalty_on", PENALTY_ON),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(
                    f"Unknown {name} {value!r} in MaskConfig.{name}; choose from {choices}."
                )
        self.target_sparsity = _number("target_sparsity", self.target_sparsity)
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ValueError(
                f"target_sparsity={self.target_sparsity} is outside [0, 1): it is the fraction of "
                "the budget to remove, e.g. 0.5 to remove half."
            )
        self.penalty_weight = _number("penalty_weight", self.penalty_weight, low=0.0)
        self.mask_init = _number("mask_init", self.mask_init)
        self.distill_weight = _number("distill_weight", self.distill_weight, low=0.0)
        self.macs_input_seconds = _number(
            "macs_input_seconds", self.macs_input_seconds, low=0.0, strict=True
        )
        for name in ("mask_learning_rate", "max_input_seconds"):
            if getattr(self, name) is not None:
                setattr(
                    self,
                    name,
                    _number(name, getattr(self, name), low=0.0, strict=True, none="or None"),
                )
        if self.last_layer is not None:
            self.last_layer = _integer("last_layer", self.last_layer, "a layer index >= 0, or None")
        self.target_warmup_steps = _integer("target_warmup_steps", self.target_warmup_steps, ">= 0")
        self.head_first_steps = _integer("head_first_steps", self.head_first_steps, ">= 0")
        if self.modules_to_save is not None:
            self.modules_to_save = _names("modules_to_save", self.modules_to_save)
        self._read_latency_table()
        for name in ("backbone_train_mode", "train_backbone"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(
                    f"MaskConfig.{name} must be True or False, not {getattr(self, name)!r}."
                )
        self.backbone_learning_rate = _number(
            "backbone_learning_rate", self.backbone_learning_rate, low=0.0, strict=True
        )
        if self.train_backbone and self.distill_weight > 0:
            raise ValueError(
                "MaskConfig.train_backbone=True with distill_weight > 0: the teacher is the "
                "backbone itself with its masks off, and it would train too. Set distill_weight=0 "
                "(or fine-tune after pruning with a frozen teacher: hf_keepwhat.finetune), or "
                "train_backbone=False (recipes: --train_backbone false)."
            )

    def _read_latency_table(self) -> None:
        # The table itself, not its path, is kept: an adapter must price units the same way
        # on a machine without the file.
        from .latency import LatencyTable

        table = self.latency_table
        if table is not None and not isinstance(table, (str, os.PathLike, dict)):
            raise TypeError(
                "MaskConfig.latency_table must be the path of a `keepwhat profile-latency` "
                f"file or its dict, not {type(table).__name__}."
            )
        try:
            if isinstance(table, (str, os.PathLike)):
                self.latency_table = LatencyTable.load(table).to_dict()
            elif table is not None:
                self.latency_table = LatencyTable.from_dict(table).to_dict()
        except (ValueError, TypeError, FileNotFoundError) as e:
            raise type(e)(f"MaskConfig.latency_table: {e}") from e
        if self.budget == "latency" and self.latency_table is None:
            raise ValueError(
                'budget="latency" needs a measured latency table: run `keepwhat profile-latency '
                'MODEL --out latency.json` on your runtime and pass latency_table="latency.json".'
            )

    def resolved_penalty_on(self) -> str:
        """`penalty_on` with `"auto"` resolved for this budget."""
        if self.penalty_on != "auto":
            return self.penalty_on
        return "probability" if self.budget == "units" else "mask"

    def to_dict(self) -> dict:
        """Returns the configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MaskConfig:
        """Builds a config from `to_dict()` output.

        Args:
            data: A dict of field values; unknown keys are an error naming them.
        """
        if not isinstance(data, dict):
            raise TypeError(
                f"A MaskConfig is read from a dict of fields, not {type(data).__name__}."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"Unknown MaskConfig field(s) {unknown}; was this written by a newer hf_keepwhat?"
            )
        return cls(**data)

    def to_json_string(self) -> str:
        """Returns the configuration as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Writes the configuration as JSON.

        Args:
            path: The file to write.
        """
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> MaskConfig:
        """Reads a configuration written by `to_json_file`.

        Args:
            path: The JSON file to read.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); the mask config is corrupt.") from e
        return cls.from_dict(data)
