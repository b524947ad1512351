"""`MaskModel`: a frozen transformers model with learnable unit masks and a sparsity penalty."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os

import torch
from safetensors.torch import save_file
from torch import nn

from .config import MaskConfig
from .layouts import get_layout
from .masks import MaskParametrization, build_mask
from .profiling import count_macs, count_params
from .pruning import prune_group
from .sparsity import Budget, CostModel
from .units import UnitGroup

logger = logging.getLogger(__name__)

DEFAULT_MODULES_TO_SAVE = ("projector", "classifier", "layer_weights", "lm_head")
MASKS_FILE = "keepwhat_masks.safetensors"
MASK_CONFIG_FILE = "keepwhat_mask_config.json"


def _mask_key(group_name: str) -> str:
    # nn.ModuleDict keys may not contain dots.
    return group_name.replace(".", "__")


@functools.cache
def _specialised_class(model_class: type) -> type:
    """A `MaskModel` subclass whose `forward` advertises `model_class.forward`'s signature.

    `Trainer` reads the model's `forward` signature to keep dataset columns
    (`remove_unused_columns`) and to find label names; a plain `forward(*args, **kwargs)` would
    lose both.
    """

    def forward(self, *args, **kwargs):
        return MaskModel.forward(self, *args, **kwargs)

    forward.__signature__ = inspect.signature(model_class.forward)
    forward.__doc__ = MaskModel.forward.__doc__
    return type(f"MaskModelFor{model_class.__name__}", (MaskModel,), {"forward": forward})


class MaskModel(nn.Module):
    """A transformers model with a learnable mask over its prunable units.

    Every backbone parameter is frozen; only the masks and the modules in
    `config.modules_to_save` (the task head) train. `forward` returns the wrapped model's output
    with `loss = task_loss + sparsity penalty`; the output also carries the attributes
    `task_loss`, `sparsity_penalty` and `realised_sparsity` (hard-mask removed fraction of the
    budget).

    Args:
        model: A transformers model of a supported type (see `supported_model_types()`). It is
            modified in place: layers above `config.last_layer` are deleted, its parameters
            frozen, and mask hooks added.
        config: The `MaskConfig`.
    """

    # The penalty is a batch mean like the task loss; `Trainer` must divide both by the number of
    # gradient-accumulation steps instead of handing `num_items_in_batch` to the model.
    accepts_loss_kwargs = False

    def __new__(cls, model: nn.Module | None = None, *args, **kwargs):
        if cls is MaskModel and model is not None:
            cls = _specialised_class(type(model))
        return super().__new__(cls)

    def __init__(self, model: nn.Module, config: MaskConfig):
        super().__init__()
        self.layout = get_layout(model)
        self.mask_config = config
        if config.max_input_seconds is not None:
            # Part of the task's definition: the shortened model is the dense reference.
            self.layout.set_input_window(model, config.max_input_seconds)
        backbone_path = self.layout.backbone_path(model)
        backbone = model.get_submodule(backbone_path)
        reference = self.layout.reference_inputs(model, config)
        self._totals = {"params": count_params(backbone), "macs": count_macs(backbone, reference)}
        if config.last_layer is not None:
            self.layout.drop_layers_above(model, config.last_layer)
        self._after_drop = {
            "params": count_params(backbone),
            "macs": count_macs(backbone, reference),
        }

        self.model = model
        self.unit_groups: list[UnitGroup] = [
            g for g in self.layout.unit_groups(model, config) if g.kind in config.unit_kinds
        ]
        if not self.unit_groups:
            raise ValueError(
                f"{type(model).__name__} has no prunable units of kinds {config.unit_kinds}; "
                "add 'heads' or 'ffn' to MaskConfig.unit_kinds."
            )
        self._groups_by_name = {g.name: g for g in self.unit_groups}
        self.masks = nn.ModuleDict(
            {
                _mask_key(g.name): build_mask(config.mask_type, g.num_units, config.mask_init)
                for g in self.unit_groups
            }
        )
        self.costs = CostModel(model, self.unit_groups, self._totals, self._after_drop)
        self.budget = Budget(config.budget, self.costs)
        reachable = self.budget.max_removed_fraction()
        if config.target_sparsity > reachable + 1e-9:
            raise ValueError(
                f"target_sparsity={config.target_sparsity} cannot be reached: with unit kinds "
                f"{config.unit_kinds}, at most {reachable:.3f} of the backbone's "
                f"{config.budget} can be removed. Lower the target or mask more unit kinds."
            )
        self.current_target = config.target_sparsity

        self._original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        self._freeze(model, backbone_path, config.modules_to_save)
        self._hooks = []
        self._add_hooks()

    # ---- setup -------------------------------------------------------------------------------

    @staticmethod
    def _freeze(model: nn.Module, backbone_path: str, modules_to_save: list[str] | None) -> None:
        model.requires_grad_(False)
        freeze_features = getattr(model, "freeze_feature_encoder", None)
        if callable(freeze_features):
            # Also stops the wav2vec2 feature encoder from asking for input gradients.
            freeze_features()
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

    def _add_hooks(self) -> None:
        for group in self.unit_groups:
            consumer = self.model.get_submodule(group.mask_module)
            hook = functools.partial(self._apply_mask, group)
            self._hooks.append(consumer.register_forward_pre_hook(hook))

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _apply_mask(self, group: UnitGroup, module: nn.Module, args: tuple):
        hidden = args[0]
        mask = self.masks[_mask_key(group.name)]()
        if group.unit_width > 1:
            mask = mask.repeat_interleave(group.unit_width)
        shape = [1] * hidden.dim()
        shape[group.mask_dim] = -1
        return (hidden * mask.view(shape).to(hidden.dtype), *args[1:])

    # ---- pass-through of what Trainer and users read from a model --------------------------

    @property
    def config(self):
        """The wrapped model's `PretrainedConfig`."""
        return self.model.config

    @property
    def main_input_name(self) -> str:
        """The wrapped model's main input name (`input_values`, `input_features`)."""
        return self.model.main_input_name

    # ---- masks and budget --------------------------------------------------------------------

    def get_mask(self, name: str) -> MaskParametrization:
        """Returns the mask of the unit group called `name`.

        Args:
            name: A group name from `unit_groups`.
        """
        if name not in self._groups_by_name:
            known = list(self._groups_by_name)
            raise KeyError(
                f"No unit group named {name!r}. There are {len(known)} groups, e.g. "
                f"{known[:4]}; see MaskModel.unit_groups for all of them."
            )
        return self.masks[_mask_key(name)]

    def set_kept(self, name: str, indices) -> None:
        """Sets a hard mask on one group: the listed units kept, the others removed.

        Args:
            name: A group name from `unit_groups`.
            indices: Unit indices to keep, each in `[0, num_units)`.
        """
        self.get_mask(name).set_kept(indices)

    def kept_units(self) -> dict[str, torch.Tensor]:
        """Returns, per group name, the sorted indices of the units the hard mask keeps."""
        return {g.name: self.masks[_mask_key(g.name)].kept_indices() for g in self.unit_groups}

    def _masks_in_order(self) -> list[MaskParametrization]:
        return [self.masks[_mask_key(g.name)] for g in self.unit_groups]

    def sparsity_penalty(self) -> torch.Tensor:
        """The differentiable sparsity penalty at the current target (`current_target`)."""
        masks = self._masks_in_order()
        if self.mask_config.resolved_penalty_on() == "mask":
            keep = [m() for m in masks]
        else:
            keep = [m.keep_probability() for m in masks]
        return self.budget.penalty(keep, self.current_target, self.mask_config.penalty_weight)

    def realised_sparsity(self) -> float:
        """Fraction of the budget (units, params or MACs) the hard masks remove now."""
        with torch.no_grad():
            keep = [m.kept().float() for m in self._masks_in_order()]
            return float(1.0 - self.budget.kept_fraction(keep))

    def sparsity_report(self) -> dict:
        """Realised kept/removed units, parameters and MACs per group and in total.

        `total` holds the original backbone's parameters and MACs, what pruning now would leave
        (`*_remaining`) and the removed fractions. MACs are for `layout.reference_inputs`.
        """
        report = self.costs.report([m.kept() for m in self._masks_in_order()])
        report["total"]["budget"] = self.mask_config.budget
        report["total"]["target_sparsity"] = self.mask_config.target_sparsity
        return report

    def param_groups(self, learning_rate: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups: the trainable head, and the mask logits at their own rate.

        `optimizer_cls_and_kwargs` hands them to `Trainer`; the Trainer's learning-rate schedule
        then scales both groups alike.

        Args:
            learning_rate: Learning rate of the head (`TrainingArguments.learning_rate`).
            weight_decay: Weight decay of the head. Mask logits get none: decay would pull every
                logit towards 0, the on/off boundary.
        """
        mask_params = list(self.masks.parameters())
        mask_ids = {id(p) for p in mask_params}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in mask_ids]
        mask_lr = self.mask_config.mask_learning_rate or learning_rate
        groups = [{"params": mask_params, "lr": mask_lr, "weight_decay": 0.0}]
        if head:
            groups.insert(0, {"params": head, "lr": learning_rate, "weight_decay": weight_decay})
        return groups

    def optimizer_cls_and_kwargs(self, args) -> tuple[type, dict]:
        """`Trainer(optimizer_cls_and_kwargs=...)` for mask training with `param_groups`.

        Uses the optimizer `args.optim` names, with its usual arguments, so only the parameter
        groups differ from what `Trainer` would build itself.

        Args:
            args: The `TrainingArguments` (its `learning_rate` and `weight_decay` are the head's).
        """
        from transformers import Trainer

        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, self)
        groups = self.param_groups(args.learning_rate, args.weight_decay)
        return optimizer_cls, {**kwargs, "params": groups}

    # ---- forward -----------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        """Runs the wrapped model with masks applied and adds the penalty to its loss.

        Args:
            *args: Positional arguments of the wrapped model's `forward`.
            **kwargs: Keyword arguments of the wrapped model's `forward` (inputs, `labels`, ...).
        """
        outputs = self.model(*args, **kwargs)
        penalty = self.sparsity_penalty()
        if isinstance(outputs, tuple):
            if kwargs.get("labels") is not None:
                outputs = (outputs[0] + penalty, *outputs[1:])
            return outputs
        task_loss = outputs.get("loss")
        if task_loss is not None:
            outputs["loss"] = task_loss + penalty
        # Attributes, not keys: Trainer treats every key but `loss` as logits.
        object.__setattr__(outputs, "task_loss", task_loss)
        object.__setattr__(outputs, "sparsity_penalty", penalty.detach())
        object.__setattr__(outputs, "realised_sparsity", self.realised_sparsity())
        return outputs

    # ---- pruning and mask files --------------------------------------------------------------

    @torch.no_grad()
    def prune(self) -> nn.Module:
        """Returns a physically smaller copy of the wrapped model, with every masked unit gone.

        The result is an instance of the wrapped model's own class (e.g.
        `WhisperForAudioClassification`) in eval mode, with no hooks, that computes what this
        masked model computes. This MaskModel is left unchanged.
        """
        self._remove_hooks()
        try:
            pruned = copy.deepcopy(self.model)
        finally:
            self._add_hooks()
        for group in self.unit_groups:
            prune_group(pruned, group, self.masks[_mask_key(group.name)].kept_indices().cpu())
        for name, param in pruned.named_parameters():
            param.requires_grad_(self._original_requires_grad.get(name, True))
        return pruned.eval()

    def save_masks(self, directory: str | os.PathLike) -> None:
        """Writes the mask logits (`keepwhat_masks.safetensors`) and the `MaskConfig` JSON.

        Args:
            directory: Folder to write into; created if missing.
        """
        os.makedirs(directory, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.masks.state_dict().items()}
        save_file(tensors, os.path.join(directory, MASKS_FILE), metadata={"format": "pt"})
        self.mask_config.to_json_file(os.path.join(directory, MASK_CONFIG_FILE))


def get_mask_model(model: nn.Module, config: MaskConfig | None = None) -> MaskModel:
    """Wraps a transformers model for mask training: backbone frozen, masks and head trainable.

    Args:
        model: A transformers model of a supported type; modified in place (see `MaskModel`).
        config: The `MaskConfig`; defaults to `MaskConfig()` (remove 50% of parameters).
    """
    return MaskModel(model, config if config is not None else MaskConfig())
