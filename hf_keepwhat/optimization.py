"""How masks are optimised: their own learning rate and the Lagrange multipliers' ascent,
with `optimizer_cls_and_kwargs` (parameter groups) or with the optimizer a plain `Trainer` builds.

With parameter groups the masks get `mask_learning_rate` directly. With any other optimizer,
`match_mask_learning_rate` (called by `SparsityCallback` when training starts) sets each mask's
rate multiplier to `mask_learning_rate / the rate the optimizer gives it` (`masks.scaled`), which
for Adam-like optimizers gives the same steps as the parameter groups. The multipliers ascend
through a reversed gradient, so no optimizer needs `maximize=True`.
"""

from __future__ import annotations

import types
from functools import partial

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from .masks import scaled


def _forward_checkpointed_in_eval_mode(self, *args, **kwargs):
    """A transformers layer's forward that also checkpoints in eval mode (set per instance).

    transformers' `GradientCheckpointingLayer` checkpoints only when the layer is in training
    mode, and a MaskModel keeps its frozen backbone in eval mode (no dropout, LayerDrop or
    SpecAugment), so `gradient_checkpointing=True` would silently save nothing. Here the layer
    is checkpointed whenever gradients are recorded; in training mode transformers' own forward
    does it, so it is not done twice.
    """
    stock_forward = type(self).forward
    if self.gradient_checkpointing and not self.training and torch.is_grad_enabled():
        return self._gradient_checkpointing_func(partial(stock_forward, self, **kwargs), *args)
    return stock_forward(self, *args, **kwargs)


def _checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    # Layers only: encoders carry the same flag, and checkpointing them as well would run every
    # layer three times.
    return [
        m
        for m in model.modules()
        if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing
    ]


def mask_param_groups(mm, learning_rate: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups of a `MaskModel`: the trainable head, the backbone at
    `mask_config.backbone_learning_rate` when it trains (`train_backbone`), the mask logits at
    `mask_config.mask_learning_rate` (no weight decay: it would pull every logit towards 0, the
    on/off boundary) and the Lagrange multipliers, maximised.

    Args:
        mm: The `MaskModel`.
        learning_rate: Learning rate of the head (`TrainingArguments.learning_rate`).
        weight_decay: Weight decay of the head.
    """
    mask_params = list(mm.masks.parameters())
    backbone = [p for p in mm.layout.backbone.parameters() if p.requires_grad]
    special = {id(p) for p in [*mask_params, *backbone]} | {id(mm.lagrange)}
    head = [p for p in mm.parameters() if p.requires_grad and id(p) not in special]
    mask_lr = mm.mask_config.mask_learning_rate or learning_rate
    groups = [{"params": mask_params, "lr": mask_lr, "weight_decay": 0.0}]
    if backbone:  # MaskConfig.train_backbone: the weights train with the masks
        rate = mm.mask_config.backbone_learning_rate
        groups.insert(0, {"params": backbone, "lr": rate, "weight_decay": weight_decay})
    if head:
        groups.insert(0, {"params": head, "lr": learning_rate, "weight_decay": weight_decay})
    if mm.lagrange is not None:
        groups.append({"params": [mm.lagrange], "lr": mask_lr, "weight_decay": 0.0})
    return groups


def _group_of(optimizer, parameter: torch.Tensor) -> dict | None:
    groups = getattr(optimizer, "optimizer", optimizer).param_groups  # accelerate wraps it
    return next((g for g in groups if any(p is parameter for p in g["params"])), None)


def _rate(optimizer, parameter: torch.Tensor, wanted: float | None) -> float:
    """`wanted / the optimizer's learning rate for parameter` (its rate before any schedule)."""
    group = _group_of(optimizer, parameter)
    if wanted is None or group is None:
        return 1.0
    base = group.get("initial_lr", group["lr"])  # a scheduler may have set lr to 0 at step 0
    return wanted / base if base else 1.0


class OptimizationMixin:
    """The optimizer side of a `MaskModel`: its parameter groups for `Trainer`, the masks' own
    learning rate under any optimizer, and the Lagrange multipliers."""

    lagrange_rate = 1.0

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **options
    ):
        """Activation checkpointing in the wrapped model (`TrainingArguments(
        gradient_checkpointing=True)` calls it), non-reentrant: with a frozen backbone the
        reentrant variant would give the masks inside checkpointed layers no gradient. Layers
        are checkpointed although the frozen backbone runs in eval mode.

        Args:
            activation_checkpointing_kwargs: Passed to `torch.utils.checkpoint.checkpoint`.
            **options: Passed to the model's own method (`every_n_layers`, `offload`).
        """
        kwargs = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5.24
            self.model.activation_checkpointing_enable(kwargs, **options)
        else:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs=kwargs, **options
            )
        # A bound method, not a closure: `copy.deepcopy` (prune) rebinds it to the copied layer.
        for layer in _checkpointed_layers(self.model):
            layer.forward = types.MethodType(_forward_checkpointed_in_eval_mode, layer)
        self._undo.append(self.activation_checkpointing_disable)  # `unload()` gives it back plain

    def activation_checkpointing_disable(self) -> None:
        """Turns activation checkpointing off again."""
        for module in self.model.modules():
            forward = module.__dict__.get("forward")
            if getattr(forward, "__func__", None) is _forward_checkpointed_in_eval_mode:
                del module.forward
        if hasattr(self.model, "activation_checkpointing_disable"):
            self.model.activation_checkpointing_disable()
        else:
            self.model.gradient_checkpointing_disable()

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **options
    ):
        """The older name of `activation_checkpointing_enable` (transformers < 5.24 calls it).

        Args:
            gradient_checkpointing_kwargs: Passed to `torch.utils.checkpoint.checkpoint`.
            **options: Passed to the model's own method.
        """
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **options)

    def gradient_checkpointing_disable(self) -> None:
        """The older name of `activation_checkpointing_disable`."""
        self.activation_checkpointing_disable()

    def lagrange_multipliers(self) -> torch.Tensor | None:
        """The Lagrange multipliers `(l1, l2)`, ascending under a minimising optimizer."""
        if self.lagrange is None:
            return None
        return scaled(self.lagrange, self.lagrange_rate, ascend=True)

    def match_mask_learning_rate(self, optimizer) -> float:
        """Makes the masks (and multipliers) learn at `mask_config.mask_learning_rate` with this
        optimizer, whatever rate it gives their parameters; returns the rate multiplier.
        `SparsityCallback` calls it when training starts; call it yourself in a custom loop.

        Args:
            optimizer: The optimizer that trains this model (a `Trainer`'s, or your own).
        """
        wanted = self.mask_config.mask_learning_rate
        rate = _rate(optimizer, next(iter(self.masks.parameters())), wanted)
        for mask in self.masks.values():
            mask.set_rate(rate)
        if self.lagrange is not None:
            if (_group_of(optimizer, self.lagrange) or {}).get("maximize"):
                raise ValueError(
                    "The Lagrange multipliers already ascend through a reversed gradient; an "
                    "optimizer group with maximize=True would make them descend. Drop "
                    "maximize=True (mm.param_groups() builds the right groups)."
                )
            new = _rate(optimizer, self.lagrange, wanted)
            with torch.no_grad():
                self.lagrange.mul_(self.lagrange_rate / new)
            self.lagrange_rate = new
        return rate

    def check_backbone_learning_rate(self, optimizer) -> None:
        """With `mask_config.train_backbone`, refuses an optimizer that gives the backbone
        another rate than `backbone_learning_rate` (a plain `Trainer` gives it the head's, 20
        times higher at the recipes' defaults, which would wash the pretrained weights out).

        Args:
            optimizer: The optimizer that trains this model.
        """
        if not self.mask_config.train_backbone:
            return
        weight = next(p for p in self.layout.backbone.parameters() if p.requires_grad)
        group = _group_of(optimizer, weight) or {}
        rate = group.get("initial_lr", group.get("lr"))
        wanted = self.mask_config.backbone_learning_rate
        if rate is None or abs(rate - wanted) > 1e-12 * max(1.0, wanted):
            raise ValueError(
                f"MaskConfig.train_backbone: the optimizer trains the backbone at {rate}, not "
                f"backbone_learning_rate={wanted}. Build it from the model's parameter groups: "
                "Trainer(..., optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args))."
            )

    def param_groups(self, learning_rate: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer parameter groups (`mask_param_groups`).

        Args:
            learning_rate: Learning rate of the head.
            weight_decay: Weight decay of the head.
        """
        return mask_param_groups(self, learning_rate, weight_decay)

    def optimizer_cls_and_kwargs(self, args) -> tuple[type, dict]:
        """`Trainer(optimizer_cls_and_kwargs=...)` with `param_groups`, using the optimizer
        `args.optim` names with its usual arguments.

        Args:
            args: The `TrainingArguments` (its `learning_rate` and `weight_decay` are the head's).
        """
        from transformers import Trainer

        optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, self)
        groups = self.param_groups(args.learning_rate, args.weight_decay)
        return optimizer_cls, {**kwargs, "params": groups}
