"""`MaskModel`: a frozen model with learnable unit masks and a sparsity penalty.

It only masks (wrap, hooks, forward, penalty, state), as PEFT's `LoraModel` only injects:
pruning (`pruning`), reports (`sparsity.sparsity_report`) and adapter files (`adapter`) live in
their own modules; the methods here that reach them are one-line doors.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging

import torch
from torch import nn

from .adapter import MaskAdapterMixin
from .config import MaskConfig
from .distillation import DistillationMixin, captured_output, relative_squared_error
from .finetuning import unfreeze_for_finetuning
from .latency import LatencyTable
from .layouts import get_layout
from .masks import MaskHooks, MaskParametrization, build_mask, mask_key
from .optimization import OptimizationMixin
from .profiling import count_macs, count_params
from .pruning import PruningMixin
from .runtime import MODEL_TYPE_PREFIX
from .sparsity import Budget, CostModel, PenaltyMixin
from .units import KeptUnits, find_emptiable_layers

logger = logging.getLogger(__name__)

DEFAULT_MODULES_TO_SAVE = ("projector", "classifier", "layer_weights", "lm_head")


def _like_module(inputs: dict, module: nn.Module) -> dict:
    """`inputs` on `module`'s device, floating-point ones in its dtype (fp16, bf16, CUDA)."""
    param = next(module.parameters(), None)
    if param is None:
        return inputs
    return {
        k: v.to(param.device, param.dtype if v.is_floating_point() else v.dtype)
        if isinstance(v, torch.Tensor)
        else v
        for k, v in inputs.items()
    }


def freeze_backbone(model: nn.Module, backbone_path: str, modules_to_save) -> list[str]:
    """Freezes every parameter of `model` but the task head's; returns the head's names.

    Args:
        model: The model.
        backbone_path: Path of the backbone (a head module inside it gets a warning).
        modules_to_save: Head modules or parameters to train; None: those of
            `DEFAULT_MODULES_TO_SAVE` that the model has.
    """
    model.requires_grad_(False)
    freeze_features = getattr(model, "freeze_feature_encoder", None)
    if callable(freeze_features):
        freeze_features()  # also stops the wav2vec2 feature encoder asking for input gradients
    names = list(modules_to_save) if modules_to_save is not None else None
    if names is None:
        names = [n for n in DEFAULT_MODULES_TO_SAVE if hasattr(model, n)]
    for name in names:
        try:
            target = model.get_submodule(name)
        except AttributeError:
            target = getattr(model, name, None)
        if target is None:
            raise ValueError(
                f"MaskConfig.modules_to_save names {name!r}, which {type(model).__name__} "
                f"does not have. Its children are: {[n for n, _ in model.named_children()]}."
            )
        if backbone_path and (name == backbone_path or name.startswith(backbone_path + ".")):
            logger.warning("%s is part of the backbone; it will train with the masks.", name)
        target.requires_grad_(True)
    return names


def _adapter_keys(keys, head: list[str]) -> set[str]:
    """The state keys a mask adapter holds: masks, Lagrange multipliers and the task head."""
    exact = {"lagrange", *(f"model.{name}" for name in head)}  # a head module or parameter
    prefixes = ("masks.", *(f"model.{name}." for name in head))
    return {k for k in keys if k in exact or k.startswith(prefixes)}


def _backbone_cost(layout, reference_inputs: dict) -> dict:
    backbone = layout.backbone
    return {"params": count_params(backbone), "macs": count_macs(backbone, reference_inputs)}


def _latency_table(config: MaskConfig, macs: int, kinds: list[str]) -> LatencyTable | None:
    """The config's latency table, checked against the model it is to price (its MACs at the
    run's input, and the unit kinds masked)."""
    if config.latency_table is None:
        return None
    table = LatencyTable.from_dict(config.latency_table)
    if table.dense_macs != macs:
        raise ValueError(
            f"The latency table was profiled on a backbone of {table.dense_macs:,} MACs "
            f"({table.model}, {table.seconds:g} s window); this one has {macs:,} at its input. "
            "Profile this model at the run's window: keepwhat profile-latency MODEL --seconds S."
        )
    if sorted(table.unit_kinds) != kinds:
        raise ValueError(
            f"The latency table was profiled pruning {sorted(table.unit_kinds)}, the masks "
            f"prune {kinds}: set unit_kinds={sorted(table.unit_kinds)} or profile with "
            "--unit_kinds matching the masks."
        )
    return table


def check_wrappable(model: nn.Module, mask_config) -> None:
    """Refuses, before anything changes, what cannot be wrapped: a `MaskModel`, a model another
    `MaskModel` wraps (its masks would still apply), a pruned model, a config of another type.

    Args:
        model: The model to wrap.
        mask_config: The `MaskConfig`.
    """
    if not isinstance(mask_config, MaskConfig):
        raise TypeError(f"mask_config must be a MaskConfig, not {type(mask_config).__name__}.")
    if isinstance(model, MaskModel):
        raise TypeError("This is a MaskModel already; wrap its base model (mm.unload()).")
    if getattr(model, "_keepwhat_mask_model", False):
        raise ValueError(
            f"This {type(model).__name__} is already wrapped by a MaskModel, whose masks still "
            "apply to it. Use that MaskModel, or call its unload() first."
        )
    model_type = getattr(type(getattr(model, "config", None)), "model_type", "")
    if isinstance(model_type, str) and model_type.startswith(MODEL_TYPE_PREFIX):
        raise ValueError(
            f"This {type(model).__name__} was pruned by hf_keepwhat already ({model_type}); "
            "masking it again is not supported. Wrap the base model."
        )


def _restore_requires_grad(model: nn.Module, original: dict[str, bool]) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(original.get(name, param.requires_grad))
    for module in model.modules():  # wav2vec2's freeze_feature_encoder() flag
        if hasattr(module, "_requires_grad"):
            module._requires_grad = any(p.requires_grad for p in module.parameters())


def _is_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False  # a head parameter (`layer_weights`), not a module
    return True


def _build_masks(groups, mask_config: MaskConfig) -> nn.ModuleDict:
    return nn.ModuleDict(
        {
            mask_key(g.name): build_mask(mask_config.mask_type, g.num_units, mask_config.mask_init)
            for g in groups
        }
    )


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Puts frozen batch norms in eval mode: in training mode they would normalise with batch
    statistics and overwrite running statistics that the adapter does not save.

    Args:
        model: The wrapped model.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()


def _no_units_message(layout, mask_config: MaskConfig) -> str:
    refused = getattr(layout, "refused", None)
    reason = (
        "no layer's channels can be removed exactly: "
        + "; ".join(f"{layer}: {why}" for layer, why in refused.items())
        if refused is not None
        else "add 'heads' or 'ffn' to MaskConfig.unit_kinds."
    )
    kinds = mask_config.unit_kinds
    return f"{type(layout.model).__name__} has no prunable units of kinds {kinds}; {reason}"


def _check_reachable(budget, config: MaskConfig) -> None:
    reachable = budget.max_removed_fraction()
    if config.target_sparsity > reachable + 1e-9:
        raise ValueError(
            f"target_sparsity={config.target_sparsity} cannot be reached: with unit kinds "
            f"{config.unit_kinds}, at most {reachable:.3f} of the backbone's "
            f"{config.budget} can be removed. Lower the target or mask more unit kinds."
        )


def _with_losses(outputs, auxiliary: torch.Tensor, terms: dict, realised: float):
    """A ModelOutput with `auxiliary` added to its loss and the terms as attributes."""
    task_loss = outputs.get("loss")
    if task_loss is not None:
        outputs["loss"] = task_loss + auxiliary
    # Attributes, not keys: Trainer treats every key but `loss` as logits. The penalty keeps its
    # graph so that a loss computed outside the model (Trainer's `compute_loss_func`, e.g. BCE
    # for tagging) can add it.
    values = {"task_loss": task_loss, **terms, "auxiliary_loss": auxiliary}
    for name, value in {**values, "realised_sparsity": realised}.items():
        object.__setattr__(outputs, name, value)
    return outputs


@functools.cache
def _specialised_class(model_class: type) -> type:
    """A `MaskModel` subclass whose `forward` advertises `model_class.forward`'s signature, so
    that `Trainer` keeps the dataset columns the model takes and finds its label names."""

    def forward(self, *args, **kwargs):
        return MaskModel.forward(self, *args, **kwargs)

    forward.__signature__ = inspect.signature(model_class.forward)
    forward.__doc__ = MaskModel.forward.__doc__
    return type(f"MaskModelFor{model_class.__name__}", (MaskModel,), {"forward": forward})


class MaskModel(
    MaskAdapterMixin, PruningMixin, OptimizationMixin, PenaltyMixin, DistillationMixin, nn.Module
):
    """A model with a learnable mask over its prunable units.

    Every backbone parameter is frozen; only the masks and the task head
    (`mask_config.modules_to_save`) train, unless `mask_config.train_backbone` (then the
    backbone's weights train with the masks, at `backbone_learning_rate`). `forward` returns the wrapped model's output with
    `loss = task_loss + sparsity penalty (+ distill_weight * distillation loss)`; the output also
    carries `task_loss`, `sparsity_penalty`, `distillation_loss` (None unless distilling),
    `auxiliary_loss` (what this model adds to the task loss) and `realised_sparsity` (hard-mask
    removed fraction of the budget). When the model computes no loss (no labels), add
    `outputs.auxiliary_loss` to your own loss.

    Args:
        model: A transformers model of a supported type (`supported_model_types()`), or a plain
            PyTorch model with `example_inputs`. Modified in place: layers above
            `mask_config.last_layer` deleted, parameters frozen, mask hooks added.
        mask_config: The `MaskConfig`.
        example_inputs: Plain PyTorch models only: inputs of one forward pass, from which the
            prunable channel chains are found and MACs counted (`layout.refused` says why
            other channels are left alone).
    """

    # The penalty is a batch mean like the task loss; `Trainer` must divide both by the number of
    # gradient-accumulation steps instead of handing `num_items_in_batch` to the model.
    accepts_loss_kwargs = False

    def __new__(cls, model: nn.Module | None = None, *args, **kwargs):
        if cls is MaskModel and model is not None:
            cls = _specialised_class(type(model))
        return super().__new__(cls)

    def __init__(self, model: nn.Module, mask_config: MaskConfig, example_inputs=None):
        super().__init__()
        check_wrappable(model, mask_config)
        self.mask_config = mask_config
        # Every change to `model` registers how to undo it: a failure anywhere leaves the model
        # as it was, and `unload()` gives it back.
        self._undo = []
        try:
            self._wrap(model, example_inputs)
        except BaseException:
            self._restore()
            raise

    def _wrap(self, model: nn.Module, example_inputs) -> None:
        mask_config = self.mask_config
        self.layout = layout = get_layout(model, mask_config, example_inputs)
        layout.check_supported()
        if mask_config.distill_weight > 0 and getattr(model, "config", None) is None:
            raise ValueError(
                "MaskConfig.distill_weight needs a transformers model, whose forward returns a "
                "loss to add the distillation term to; for a plain module set it to 0 and add "
                "hf_keepwhat.distillation.relative_squared_error to your own loss."
            )
        totals, after_drop = self._shape_the_task(layout)
        self.model = model
        all_groups = layout.unit_groups()
        self.unit_groups = [g for g in all_groups if g.kind in mask_config.unit_kinds]
        if not self.unit_groups:
            raise ValueError(_no_units_message(layout, mask_config))
        #: Pre-LN layers that become `PassThroughLayer`s when every unit of theirs is removed.
        self.emptiable_layers = find_emptiable_layers(
            layout.pass_through_layers(), all_groups, self.unit_groups
        )
        device = next(model.parameters()).device
        if device.type == "meta":  # masks hold values from the start, whatever the model holds
            device = torch.device("cpu")
        self.masks = _build_masks(self.unit_groups, mask_config).to(device)
        kinds = sorted({g.kind for g in self.unit_groups})
        latency = _latency_table(mask_config, totals["macs"], kinds)
        self.costs = CostModel(
            model, self.unit_groups, totals, after_drop, self.emptiable_layers, latency
        )
        self.budget = Budget(mask_config.budget, self.costs)
        _check_reachable(self.budget, mask_config)
        self.current_target = mask_config.target_sparsity
        #: The last training batch's distillation loss (unweighted), for the logs.
        self.last_distillation_loss: float | None = None
        #: What was done after mask training, recorded by `prune()` and the adapter:
        #: `target_training.train_to_target` (rounds trained on towards the target),
        #: `exact_budget.meet_target` (units switched off to meet the target) and
        #: `recovery.refit_head` (steps, learning rate).
        self.target_trained: dict | None = None
        self.target_met: dict | None = None
        self.head_refit: dict | None = None
        # Lagrange multipliers (l1, l2) of the exact budget: the quadratic one starts as the
        # paper's penalty weight, the linear one at 0 integrates the gap, so training only
        # settles where the gap is 0.
        self.lagrange = None
        if mask_config.budget_mode == "lagrangian":
            initial = torch.tensor([0.0, mask_config.penalty_weight], device=device)
            self.lagrange = nn.Parameter(initial)
        self._choose_what_trains(model, layout)
        self._hooks = MaskHooks(model, self.unit_groups, self.masks)
        self._undo.append(self._hooks.remove)
        model._keepwhat_mask_model = True
        self._undo.append(lambda: delattr(model, "_keepwhat_mask_model"))

    def _shape_the_task(self, layout) -> tuple[dict, dict]:
        """The model as the task defines it (prepared, its window cut, the layers above
        `last_layer` dropped); returns the backbone's costs before and after the drop."""
        mask_config = self.mask_config
        self._undo.append(layout.prepare())
        if mask_config.max_input_seconds is not None:
            # Part of the task's definition: the shortened model is the dense reference.
            self._undo.append(layout.set_input_window(mask_config.max_input_seconds))
        totals = _backbone_cost(layout, self.reference_inputs)
        if mask_config.last_layer is not None:
            self._undo.append(layout.drop_layers_above(mask_config.last_layer))
        return totals, _backbone_cost(layout, self.reference_inputs)

    def _choose_what_trains(self, model: nn.Module, layout) -> None:
        """Freezes the backbone (or, with `train_backbone`, not), records how to undo it, and
        the state keys checkpoints and adapters hold."""
        self.original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._undo.append(
            functools.partial(_restore_requires_grad, model, self.original_requires_grad)
        )
        self._head = freeze_backbone(model, layout.backbone_path, self.mask_config.modules_to_save)
        keys = nn.Module.state_dict(self)
        if self.mask_config.train_backbone:
            # The weights train too: checkpoints (and the best one loaded back) must hold them.
            unfreeze_for_finetuning(layout.backbone)
            self._adapter_keys = set(keys)
        else:
            self._adapter_keys = _adapter_keys(keys, self._head)

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def drop_backbone_gradients(self) -> None:
        """Forgets the backbone weights' gradients of this step, so the optimizer leaves them
        (and their moments) as they are: the steps of `mask_config.head_first_steps`."""
        for param in self.layout.backbone.parameters():
            param.grad = None

    def unload(self) -> nn.Module:
        """Gives the wrapped model back as it was before wrapping (window, layers, trainable
        parameters, modules; no hook), as PEFT's `unload()` does; this MaskModel is then empty.
        """
        model = self.model
        self._restore()
        return model

    @property
    def reference_inputs(self) -> dict[str, torch.Tensor]:
        """The input MACs are counted for: the layout's (batch 1), on the backbone's device and
        in its dtype."""
        return _like_module(self.layout.reference_inputs(), self.layout.backbone)

    def train(self, mode: bool = True):
        """Sets the task head's mode; the frozen model stays in eval mode (no dropout, LayerDrop
        or SpecAugment) unless `mask_config.backbone_train_mode`, and its batch norms always do.

        Args:
            mode: Training mode (True) or eval mode (False).
        """
        super().train(mode)
        if mode and not self.mask_config.backbone_train_mode:
            self.model.eval()
            for name in self._head:
                if _is_module(self.model, name):
                    self.model.get_submodule(name).train(mode)
        keep_frozen_norms_in_eval(self.model)
        return self

    def hooks_removed(self):
        """A context in which the mask hooks are off (e.g. to copy the model without them)."""
        return self._hooks.removed()

    @property
    def config(self):
        """The wrapped model's `PretrainedConfig` (None for a plain PyTorch model)."""
        return getattr(self.model, "config", None)

    @property
    def is_transformers_model(self) -> bool:
        """Whether the wrapped model is a transformers `PreTrainedModel`."""
        from transformers import PreTrainedModel

        return isinstance(self.model, PreTrainedModel)

    @property
    def main_input_name(self) -> str:
        """The wrapped model's main input name (`input_values`, `input_features`, or the first
        reference input of a plain model)."""
        return getattr(self.model, "main_input_name", None) or next(iter(self.reference_inputs))

    def get_mask(self, name: str) -> MaskParametrization:
        """Returns the mask of the unit group called `name`.

        Args:
            name: A group name from `unit_groups`.
        """
        key = mask_key(name)
        if key not in self.masks:
            known = [g.name for g in self.unit_groups]
            raise KeyError(
                f"No unit group named {name!r}. There are {len(known)} groups, e.g. "
                f"{known[:4]}; see MaskModel.unit_groups for all of them."
            )
        return self.masks[key]

    def set_kept(self, name: str, indices) -> None:
        """Sets a hard mask on one group: the listed units kept, the others removed.

        Args:
            name: A group name from `unit_groups`.
            indices: Unit indices to keep, each in `[0, num_units)`.
        """
        self.get_mask(name).set_kept(indices)

    def kept_units(self) -> KeptUnits:
        """The units the hard masks keep, by group name."""
        return KeptUnits({g.name: self.get_mask(g.name).kept_indices() for g in self.unit_groups})

    def forward(self, *args, **kwargs):
        """Runs the wrapped model with masks applied and adds the penalty (and, with
        `distill_weight`, the distillation term) to its loss.

        Args:
            *args: Positional arguments of the wrapped model's `forward`.
            **kwargs: Keyword arguments of the wrapped model's `forward` (inputs, `labels`, ...).
        """
        distilling = self.distilling()
        teacher = self._dense_backbone_output(args, kwargs) if distilling else None
        capture = captured_output(self.layout.backbone) if distilling else contextlib.nullcontext()
        with capture as student:
            outputs = self.model(*args, **kwargs)
        if isinstance(outputs, torch.Tensor):
            return outputs  # a plain model: add `sparsity_penalty()` to your loss
        penalty = self.sparsity_penalty()
        distillation = relative_squared_error(student[0], teacher) if distilling else None
        auxiliary = penalty
        if distillation is not None:
            auxiliary = penalty + self.mask_config.distill_weight * distillation
            self.last_distillation_loss = float(distillation.detach())
        if isinstance(outputs, tuple):
            if kwargs.get("labels") is not None:
                outputs = (outputs[0] + auxiliary, *outputs[1:])
            return outputs
        terms = {"sparsity_penalty": penalty, "distillation_loss": distillation}
        return _with_losses(outputs, auxiliary, terms, self.realised_sparsity())


def get_mask_model(
    model: nn.Module, mask_config: MaskConfig | None = None, example_inputs=None
) -> MaskModel:
    """Wraps a model for mask training: backbone frozen, masks and head trainable.

    Args:
        model: A transformers model of a supported type, or a plain PyTorch model with
            `example_inputs`; modified in place (see `MaskModel`).
        mask_config: The `MaskConfig`; defaults to `MaskConfig()` (remove 50% of parameters).
        example_inputs: Plain PyTorch models only: inputs of one forward pass (a dict of keyword
            arguments, a tensor or a tuple of tensors).
    """
    return MaskModel(
        model, mask_config if mask_config is not None else MaskConfig(), example_inputs
    )
