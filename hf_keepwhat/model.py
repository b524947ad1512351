"""`MaskModel`: a frozen transformers model with learnable unit masks and a sparsity penalty."""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

from .cards import base_model_license
from .config import MaskConfig
from .layouts import get_layout
from .masks import MaskParametrization, build_mask
from .profiling import count_macs, count_params
from .pruned import build_manifest, to_pruned_model
from .pruning import prune_group, replace_with_pass_through
from .sparsity import Budget, CostModel
from .units import PassThrough, UnitGroup, find_pass_throughs
from .version import __version__

logger = logging.getLogger(__name__)

DEFAULT_MODULES_TO_SAVE = ("projector", "classifier", "layer_weights", "lm_head")


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
    budget). When the model computes no loss (no labels), add `outputs.sparsity_penalty` to the
    loss you compute yourself.

    Args:
        model: A transformers model of a supported type (see `supported_model_types()`). It is
            modified in place: layers above `config.last_layer` are deleted, its parameters
            frozen, and mask hooks added.
        config: The `MaskConfig`.
        example_inputs: For a plain PyTorch model (not transformers) only: inputs of one forward
            pass, from which its prunable channel chains are found (`channel_graph`) and for
            which MACs are counted. Channels that cannot be pruned exactly are left alone; see
            `layout.refused` for why.
    """

    # The penalty is a batch mean like the task loss; `Trainer` must divide both by the number of
    # gradient-accumulation steps instead of handing `num_items_in_batch` to the model.
    accepts_loss_kwargs = False

    def __new__(cls, model: nn.Module | None = None, *args, **kwargs):
        if cls is MaskModel and model is not None:
            cls = _specialised_class(type(model))
        return super().__new__(cls)

    def __init__(self, model: nn.Module, config: MaskConfig, example_inputs=None):
        super().__init__()
        self.layout = get_layout(model, example_inputs)
        self.layout.prepare(model)
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
        all_groups = self.layout.unit_groups(model, config)
        self.unit_groups: list[UnitGroup] = [g for g in all_groups if g.kind in config.unit_kinds]
        #: Pre-LN layers that become `PassThroughLayer`s when every unit of theirs is removed.
        self.pass_throughs: list[PassThrough] = find_pass_throughs(
            self.layout.pass_through_layers(model), all_groups, self.unit_groups
        )
        if not self.unit_groups:
            refused = getattr(self.layout, "refused", None)
            raise ValueError(
                f"{type(model).__name__} has no prunable units of kinds {config.unit_kinds}; "
                + (
                    "no layer's channels can be removed exactly: "
                    + "; ".join(f"{layer}: {why}" for layer, why in refused.items())
                    if refused is not None
                    else "add 'heads' or 'ffn' to MaskConfig.unit_kinds."
                )
            )
        self._groups_by_name = {g.name: g for g in self.unit_groups}
        self.masks = nn.ModuleDict(
            {
                _mask_key(g.name): build_mask(config.mask_type, g.num_units, config.mask_init)
                for g in self.unit_groups
            }
        )
        self.costs = CostModel(
            model, self.unit_groups, self._totals, self._after_drop, self.pass_throughs
        )
        self.budget = Budget(config.budget, self.costs)
        reachable = self.budget.max_removed_fraction()
        if config.target_sparsity > reachable + 1e-9:
            raise ValueError(
                f"target_sparsity={config.target_sparsity} cannot be reached: with unit kinds "
                f"{config.unit_kinds}, at most {reachable:.3f} of the backbone's "
                f"{config.budget} can be removed. Lower the target or mask more unit kinds."
            )
        self.current_target = config.target_sparsity
        # Lagrange multipliers (l1, l2) of the exact budget, maximised by the optimizer.
        self.lagrange = None
        if config.budget_mode == "lagrangian":
            # The quadratic multiplier starts as the paper's penalty weight; the linear one starts
            # at 0 and integrates the gap, so training only settles where the gap is 0.
            self.lagrange = nn.Parameter(torch.tensor([0.0, config.penalty_weight]))

        self._original_requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        head = tuple(
            f"model.{name}" for name in self._freeze(model, backbone_path, config.modules_to_save)
        )
        self._adapter_keys = {
            k
            for k in nn.Module.state_dict(self)
            if k.startswith("masks.")
            or k == "lagrange"
            or k in head
            or k.startswith(tuple(h + "." for h in head))
        }
        self._hooks = []
        self._add_hooks()

    # ---- setup -------------------------------------------------------------------------------

    @staticmethod
    def _freeze(model: nn.Module, backbone_path: str, modules_to_save: list[str] | None) -> list:
        """Freezes the backbone, unfreezes the head; returns the head's module names."""
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
        return names

    def train(self, mode: bool = True):
        """Sets training mode, except for frozen batch norms, which stay in eval mode.

        A frozen backbone's batch norm in training mode would normalise with batch statistics
        (another function than the model's) and overwrite its running statistics, which the
        adapter does not save: the masks would be trained for a model nobody can rebuild.

        Args:
            mode: Training mode (True) or eval mode (False).
        """
        super().train(mode)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

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
        name = getattr(self.model, "main_input_name", None)
        return name or next(iter(self.layout.reference_inputs(self.model, self.mask_config)))

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
        return self.budget.penalty(
            keep, self.current_target, self.mask_config.penalty_weight, self.lagrange
        )

    def realised_sparsity(self) -> float:
        """Fraction of the budget (units, params or MACs) the hard masks remove now."""
        with torch.no_grad():
            keep = [m.kept().float() for m in self._masks_in_order()]
            return float(1.0 - self.budget.kept_fraction(keep))

    def sparsity_report(self, kept_units: dict[str, torch.Tensor] | None = None) -> dict:
        """Realised kept/removed units, parameters and MACs per group and in total.

        `total` holds the original backbone's parameters and MACs, what pruning now would leave
        (`*_remaining`) and the removed fractions. MACs are for `layout.reference_inputs`.

        Args:
            kept_units: Kept unit indices per group name to report on instead of the masks'.
        """
        kept_units = kept_units or self.kept_units()
        kept = []
        for group in self.unit_groups:
            keep = torch.zeros(group.num_units, dtype=torch.bool)
            keep[kept_units[group.name].cpu()] = True
            kept.append(keep)
        report = self.costs.report(kept)
        report["total"]["layers_passed_through"] = [
            p.layer for p in self.layers_passed_through(kept_units)
        ]
        report["macs_input"] = self.layout.describe_reference_input(self.model, self.mask_config)
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
        special = {id(p) for p in mask_params} | {id(self.lagrange)}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in special]
        mask_lr = self.mask_config.mask_learning_rate or learning_rate
        groups = [{"params": mask_params, "lr": mask_lr, "weight_decay": 0.0}]
        if head:
            groups.insert(0, {"params": head, "lr": learning_rate, "weight_decay": weight_decay})
        if self.lagrange is not None:
            # Gradient ascent: the multipliers grow while the budget is missed.
            groups.append(
                {"params": [self.lagrange], "lr": mask_lr, "weight_decay": 0.0, "maximize": True}
            )
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
        if isinstance(outputs, torch.Tensor):
            return outputs  # a plain model: add `sparsity_penalty()` to your loss
        penalty = self.sparsity_penalty()
        if isinstance(outputs, tuple):
            if kwargs.get("labels") is not None:
                outputs = (outputs[0] + penalty, *outputs[1:])
            return outputs
        task_loss = outputs.get("loss")
        if task_loss is not None:
            outputs["loss"] = task_loss + penalty
        # Attributes, not keys: Trainer treats every key but `loss` as logits. The penalty keeps
        # its graph so that a loss computed outside the model (Trainer's `compute_loss_func`,
        # e.g. BCE for tagging) can add it.
        object.__setattr__(outputs, "task_loss", task_loss)
        object.__setattr__(outputs, "sparsity_penalty", penalty)
        object.__setattr__(outputs, "realised_sparsity", self.realised_sparsity())
        return outputs

    # ---- pruning and mask files --------------------------------------------------------------

    def rounded_kept_units(self, multiple: int) -> dict[str, torch.Tensor]:
        """Kept units per group, raised with the best-ranked removed units (by mask logit) until
        the kept width (units x unit width, e.g. heads x head_dim) is a multiple of `multiple`
        channels; a group with no unit kept stays empty, and a group can at most be whole.

        Args:
            multiple: Channels, e.g. 8 or 64, so that pruned widths suit GPU kernels. Heads of
                64 channels already satisfy 8 or 64, so only neurons and conv channels change.
        """
        if multiple < 1:
            raise ValueError(f"round_to={multiple} must be a positive number of channels.")
        rounded = {}
        for group in self.unit_groups:
            mask = self.masks[_mask_key(group.name)]
            kept = mask.kept()
            count = int(kept.sum())
            step = multiple // math.gcd(multiple, group.unit_width)  # units per aligned block
            wanted = min(group.num_units, math.ceil(count / step) * step)
            scores = mask.keep_probability().detach().clone()
            scores[kept] = float("inf")  # the kept units stay
            chosen = torch.argsort(scores, descending=True)[:wanted]
            rounded[group.name] = torch.sort(chosen).values.cpu()
        return rounded

    @torch.no_grad()
    def prune(self, feature_extractor=None, round_to: int | None = None) -> nn.Module:
        """Returns a physically smaller copy of the wrapped model, with every masked unit gone.

        The result is an instance of a subclass of the wrapped model's class (e.g.
        `KeepWhatWhisperForAudioClassification`, a `WhisperForAudioClassification`) in eval
        mode, with no hooks, that computes what this masked model computes; a pre-LN layer
        with no head and no neuron left is a `PassThroughLayer` there. Its config records
        the new shapes and what was pruned; `save_pretrained` writes it with its feature
        extractor and a model card. A plain PyTorch model comes back as its own class with the
        shape manifest in `keepwhat_manifest` (save it with `save_pruned_module`). This
        MaskModel is left unchanged.

        Args:
            feature_extractor: Saved with the pruned model. Default: the base model's own, read
                from its folder or the Hub cache when available (adjusted to
                `max_input_seconds` for Whisper).
            round_to: Keep a multiple of this many channels per group (`rounded_kept_units`). The
                extra units were masked, so the result then computes what this model computes
                with those units switched back on, not with the masks as trained.
        """
        self._remove_hooks()
        try:
            pruned = copy.deepcopy(self.model)
        finally:
            self._add_hooks()
        by_name = self.rounded_kept_units(round_to) if round_to else self.kept_units()
        kept = [by_name[g.name].cpu() for g in self.unit_groups]
        for group, kept_units in zip(self.unit_groups, kept, strict=True):
            prune_group(pruned, group, kept_units)
        passed_through = self.layers_passed_through(by_name)
        for layer in passed_through:
            replace_with_pass_through(pruned, self.model, layer)
        manifest = build_manifest(pruned, self.unit_groups, kept, [p.layer for p in passed_through])
        if not self.is_transformers_model:
            # A plain module keeps its class; `save_pruned_module` writes the manifest with it.
            pruned.keepwhat_manifest = manifest
            pruned.keepwhat_record = self.pruning_record(by_name)
            return pruned.eval()
        pruned = to_pruned_model(pruned, manifest, self.pruning_record(by_name))
        for name, param in pruned.named_parameters():
            param.requires_grad_(self._original_requires_grad.get(name, True))
        pruned.keepwhat_feature_extractor = self._feature_extractor(feature_extractor)
        return pruned

    def layers_passed_through(self, kept_units: dict[str, torch.Tensor]) -> list[PassThrough]:
        """The layers pruning replaces by a `PassThroughLayer`: every unit of theirs removed.

        Args:
            kept_units: Kept unit indices per group name.
        """
        return [p for p in self.pass_throughs if all(len(kept_units[g]) == 0 for g in p.groups)]

    def pruning_record(self, kept_units: dict[str, torch.Tensor] | None = None) -> dict:
        """What pruning now would do: base model, MaskConfig and the sparsity report.

        Args:
            kept_units: Kept unit indices per group, when not the masks' own (`round_to`).
        """
        config = self.config
        base = getattr(config, "_name_or_path", None) or None
        return {
            "library": "hf_keepwhat",
            "version": __version__,
            "base_model": base,
            "base_model_revision": getattr(config, "_commit_hash", None),
            "license": base_model_license(base),
            "mask_config": self.mask_config.to_dict(),
            "report": self.sparsity_report(kept_units),
        }

    def _feature_extractor(self, given):
        if given is None:
            base = getattr(self.model.config, "_name_or_path", None)
            if not base:
                return None
            from transformers import AutoFeatureExtractor

            try:
                given = AutoFeatureExtractor.from_pretrained(base)
            except (OSError, ValueError) as e:
                logger.warning(
                    "No feature extractor saved with the pruned model: none could be read for "
                    "%s (%s). Pass prune(feature_extractor=...).",
                    base,
                    e,
                )
                return None
        return self.layout.adapt_feature_extractor(given, self.mask_config)

    # ---- the mask adapter: masks + trainable head ---------------------------------------------

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """The adapter's state: mask logits and the trainable head, not the frozen backbone.

        `Trainer` checkpoints are made of this state, so they stay small and resume exactly;
        the backbone comes from the base model's own checkpoint.
        """
        full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        out = OrderedDict() if destination is None else destination
        for key, value in full.items():
            if key[len(prefix) :] in self._adapter_keys:
                out[key] = value
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loads an adapter state (masks + head) as written by `state_dict`.

        Args:
            state_dict: The adapter state.
            strict: Raise when keys are missing or unexpected.
            assign: Passed to `nn.Module.load_state_dict`.
        """
        missing = sorted(self._adapter_keys - set(state_dict))
        unexpected = sorted(set(state_dict) - self._adapter_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"The adapter state does not fit this MaskModel: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}. Was it saved from a different base model?"
            )
        known = {k: v for k, v in state_dict.items() if k in self._adapter_keys}
        nn.Module.load_state_dict(self, known, strict=False, assign=assign)
        return _IncompatibleKeys(missing, unexpected)

    def save_pretrained(self, save_directory, repo_id: str | None = None) -> None:
        """Writes the mask adapter: its config, masks + head (safetensors) and a model card.

        Args:
            save_directory: The folder; an earlier adapter there is replaced all at once.
            repo_id: Hub id the card's loading snippet names (else a placeholder).
        """
        from .adapter import save_adapter

        save_adapter(self, save_directory, repo_id)

    @classmethod
    def from_pretrained(cls, model: nn.Module, adapter_path) -> MaskModel:
        """Wraps `model` and restores a saved mask adapter exactly.

        Args:
            model: The base model the adapter was trained on, freshly loaded.
            adapter_path: A folder written by `save_pretrained`.
        """
        from .adapter import load_adapter

        return load_adapter(model, adapter_path)

    def push_to_hub(
        self, repo_id: str, *, private: bool = False, token: str | None = None, **kwargs
    ):
        """Saves the mask adapter with its card and uploads it to the Hub.

        Args:
            repo_id: The Hub repository.
            private: Create the repository as private.
            token: Hub token; default: the one `hf auth login` stored.
            **kwargs: Passed to `HfApi.upload_folder`.
        """
        from .hub import push_folder

        return push_folder(
            lambda folder: self.save_pretrained(folder, repo_id), repo_id, private, token, **kwargs
        )


def get_mask_model(
    model: nn.Module, config: MaskConfig | None = None, example_inputs=None
) -> MaskModel:
    """Wraps a model for mask training: backbone frozen, masks and head trainable.

    Args:
        model: A transformers model of a supported type, or a plain PyTorch model with
            `example_inputs`; modified in place (see `MaskModel`).
        config: The `MaskConfig`; defaults to `MaskConfig()` (remove 50% of parameters).
        example_inputs: Plain PyTorch models only: inputs of one forward pass (a dict of keyword
            arguments, a tensor or a tuple of tensors).
    """
    return MaskModel(model, config if config is not None else MaskConfig(), example_inputs)
