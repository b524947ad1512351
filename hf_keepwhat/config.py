"""`MaskConfig`: everything that decides what is masked and how hard the sparsity budget pulls."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

UNIT_KINDS = ("heads", "ffn", "conv")
BUDGET_KINDS = ("units", "params", "macs")
MASK_TYPES = ("straight_through",)
PENALTY_ON = ("auto", "probability", "mask")
BUDGET_MODES = ("penalty", "lagrangian")


@dataclass
class MaskConfig:
    """Configuration of mask training and of the sparsity budget.

    Args:
        unit_kinds: Which kinds of units get a learnable mask: `"heads"` (attention heads),
            `"ffn"` (feed-forward neurons), `"conv"` (convolution output channels, only where
            deleting them is exact). Kinds a model does not have are ignored.
        budget: What the sparsity target counts. `"units"` is the paper's penalty (every mask site
            weighs the same, whatever its size); `"params"` counts backbone parameters; `"macs"`
            counts backbone multiply-accumulates for an input of `macs_input_seconds`.
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
            sparsity and training settles on the target. `"auto"`: `"probability"` for
            `budget="units"` (the paper), `"mask"` for `"params"` and `"macs"`.
        mask_init: Initial mask logit of every unit. `1.0` (sigmoid 0.73, every unit on) as in
            the paper.
        mask_learning_rate: Learning rate of the mask logits when the optimizer is built from
            `MaskModel.param_groups` (masks usually want a larger rate than the head: a logit
            must travel from `mask_init` past 0 to switch a unit off). `None`: the head's rate.
        mask_type: The mask parametrisation; `"straight_through"` is the paper's hard
            `round(sigmoid(theta))` with a straight-through gradient.
        modules_to_save: Names of the wrapped model's child modules (or parameters) that are
            trained with the masks, the task head. `None` picks those of
            `projector`, `classifier`, `layer_weights`, `lm_head` that the model has.
        last_layer: Index of the last encoder layer to keep. Layers above it are dropped before
            training (their output is never used). `None` keeps them all.
        max_input_seconds: Whisper only: shorten the encoder's fixed input window (30 s as
            shipped) to this many seconds by truncating its positional table, so a task with short
            clips does not pay for 30 s of attention. Feed it features from
            `WhisperFeatureExtractor.from_pretrained(..., chunk_length=max_input_seconds)`. The
            shortened model is the dense reference the budget counts from.
        macs_input_seconds: Input length used to count MACs for models whose input length is
            free (wav2vec2 family). Whisper always counts its fixed input window.
        target_warmup_steps: `SparsityCallback` raises the target linearly from 0 to
            `target_sparsity` over this many optimizer steps; 0 applies it from the start.
        backbone_train_mode: Whether the frozen model follows the Trainer's training mode
            (dropout, LayerDrop, SpecAugment on while masks train). False, the default, keeps it
            in eval mode as the paper does: masks then learn against the function the pruned
            model will compute. The task head always follows the Trainer's mode.
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
    backbone_train_mode: bool = False

    def __post_init__(self):
        self.unit_kinds = list(self.unit_kinds)
        unknown = sorted(set(self.unit_kinds) - set(UNIT_KINDS))
        if unknown:
            raise ValueError(
                f"Unknown unit kind(s) {unknown} in MaskConfig.unit_kinds; "
                f"choose from {UNIT_KINDS}."
            )
        if not self.unit_kinds:
            raise ValueError(f"MaskConfig.unit_kinds is empty; name at least one of {UNIT_KINDS}.")
        if self.budget not in BUDGET_KINDS:
            raise ValueError(
                f"Unknown budget {self.budget!r} in MaskConfig.budget; choose from {BUDGET_KINDS}."
            )
        if self.mask_type not in MASK_TYPES:
            raise ValueError(
                f"Unknown mask_type {self.mask_type!r}; the supported ones are {MASK_TYPES}."
            )
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(
                f"Unknown budget_mode {self.budget_mode!r}; choose from {BUDGET_MODES}."
            )
        if self.penalty_on not in PENALTY_ON:
            raise ValueError(f"Unknown penalty_on {self.penalty_on!r}; choose from {PENALTY_ON}.")
        if not 0.0 <= float(self.target_sparsity) < 1.0:
            raise ValueError(
                f"target_sparsity={self.target_sparsity} is outside [0, 1): it is the fraction of "
                "the budget to remove, e.g. 0.5 to remove half."
            )
        if self.mask_learning_rate is not None and self.mask_learning_rate <= 0:
            raise ValueError(f"mask_learning_rate={self.mask_learning_rate} must be > 0, or None.")
        if self.penalty_weight < 0:
            raise ValueError(f"penalty_weight={self.penalty_weight} must be >= 0.")
        if self.last_layer is not None and self.last_layer < 0:
            raise ValueError(f"last_layer={self.last_layer} must be a layer index >= 0, or None.")
        if self.max_input_seconds is not None and self.max_input_seconds <= 0:
            raise ValueError(f"max_input_seconds={self.max_input_seconds} must be > 0, or None.")
        if self.macs_input_seconds <= 0:
            raise ValueError(f"macs_input_seconds={self.macs_input_seconds} must be > 0.")
        if self.target_warmup_steps < 0:
            raise ValueError(f"target_warmup_steps={self.target_warmup_steps} must be >= 0.")

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
