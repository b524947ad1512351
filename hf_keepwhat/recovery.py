"""Recovery after mask training: refit the task head on the units the masks keep, and LoRA.

The head trains together with the masks, so it ends fitted to representations that kept changing
under it, at a learning rate that has decayed with the masks'. `refit_head` trains it again with
the masks frozen; the backbone is untouched, so the adapter stays masks + head.

Mask training never changes a backbone weight; once units are deleted, the remaining weights can
adapt to their missing neighbours. LoRA does that with few trainable parameters, and merging
(`merge_and_unload`) folds the update into the weights: nothing of peft remains at inference.
"""

from __future__ import annotations

from torch import nn

from .finetuning import record_recovery
from .layouts import get_layout
from .model import DEFAULT_MODULES_TO_SAVE


def train_with_trainer(model, args, train_dataset, data_collator, compute_loss_func, callbacks):
    """One `Trainer` run with its default optimizer; returns the trainer (its state has the steps
    taken).

    Args:
        model: What `Trainer` trains (a `MaskModel`, a peft model).
        args: `TrainingArguments`.
        train_dataset: The training data.
        data_collator: Passed to `Trainer`.
        compute_loss_func: Passed to `Trainer`; its mean loss is not scaled again for gradient
            accumulation.
        callbacks: Passed to `Trainer`.
    """
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        compute_loss_func=compute_loss_func,
        callbacks=callbacks,
    )
    if compute_loss_func is not None:
        trainer.loss_is_scaled_for_ga = False  # a mean loss: Trainer divides by GA steps
    trainer.train()
    return trainer


def refit_head(
    mm,
    args,
    train_dataset,
    *,
    data_collator=None,
    compute_loss_func=None,
    callbacks=None,
):
    """Trains the task head of a `MaskModel` again with `Trainer`, its masks frozen at their hard
    values, so the head is fitted to exactly the units pruning keeps.

    The backbone stays frozen (and in eval mode, as while the masks trained); the sparsity penalty
    is then a constant and distillation is off. To prune to exactly the target, call
    `meet_target(mm)` first, so the head fits the final units. Prune afterwards: `mm.prune()` and
    the adapter (`mm.save_pretrained`) record the refit (`config.keepwhat["head_refit"]`, shown on
    their cards).

    Args:
        mm: A trained `MaskModel`.
        args: `TrainingArguments` of the refit (`max_steps`, `learning_rate`, ...).
        train_dataset: The task's training data, as for the mask training.
        data_collator: Passed to `Trainer`.
        compute_loss_func: Passed to `Trainer`, for a task loss the model does not compute (e.g.
            BCE for tagging).
        callbacks: Passed to `Trainer`.
    """
    trained = [*mm.masks.parameters(), *([mm.lagrange] if mm.lagrange is not None else [])]
    trained = [p for p in trained if p.requires_grad]
    for param in trained:
        param.requires_grad_(False)
    try:
        trainer = train_with_trainer(
            mm, args, train_dataset, data_collator, compute_loss_func, callbacks
        )
    finally:
        for param in trained:
            param.requires_grad_(True)
    mm.head_refit = {"steps": trainer.state.global_step, "learning_rate": args.learning_rate}
    return mm.eval()


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full paths of the backbone's `nn.Linear` layers that still have width: LoRA's targets.

    A projection pruned to zero width (an FFN with no neuron left) gets no adapter: a rank-r
    update of an empty matrix is empty.

    Args:
        model: A pruned transformers model (or any model of a supported family).
    """
    backbone = get_layout(model).backbone_path
    prefix = f"{backbone}." if backbone else ""
    return [
        path
        for path, module in model.named_modules()
        if path.startswith(prefix)
        and isinstance(module, nn.Linear)
        and module.in_features > 0
        and module.out_features > 0
    ]


def default_lora_config(model: nn.Module, r: int = 8, lora_alpha: int = 16, dropout: float = 0.05):
    """A `peft.LoraConfig` on every backbone linear layer with width, the task head fully trained.

    Args:
        model: The pruned model.
        r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by `lora_alpha / r`).
        dropout: Dropout on the adapters' input.
    """
    from peft import LoraConfig

    head = [name for name in DEFAULT_MODULES_TO_SAVE if hasattr(model, name)]  # the task head
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=dropout,
        target_modules=lora_target_modules(model),
        modules_to_save=head or None,
    )


def recover_with_lora(
    pruned: nn.Module,
    args,
    train_dataset,
    *,
    lora_config=None,
    data_collator=None,
    compute_loss_func=None,
    callbacks=None,
) -> nn.Module:
    """Trains LoRA adapters on a pruned model with `Trainer`, merges them, and returns the model.

    The returned model is `pruned` itself (same class, same shapes, same speed), its weights
    updated, in eval mode; its pruning record (`config.keepwhat["recovery"]`, shown on the model
    card) says that LoRA recovery was applied and how.

    Args:
        pruned: A model returned by `MaskModel.prune()` (or loaded from a saved pruned folder).
        args: `TrainingArguments` of the recovery run (`max_steps`, `learning_rate`, ...).
        train_dataset: The task's training data, as for the mask training.
        lora_config: A `peft.LoraConfig`; default `default_lora_config(pruned)`.
        data_collator: Passed to `Trainer`.
        compute_loss_func: Passed to `Trainer` (e.g. BCE for tagging).
        callbacks: Passed to `Trainer`.
    """
    from peft import get_peft_model

    config = lora_config if lora_config is not None else default_lora_config(pruned)
    if not config.target_modules:
        raise ValueError(
            f"{type(pruned).__name__} has no backbone linear layer with width left: there is "
            "nothing for LoRA to adapt."
        )
    peft_model = get_peft_model(pruned, config)
    trainer = train_with_trainer(
        peft_model, args, train_dataset, data_collator, compute_loss_func, callbacks
    )
    merged = peft_model.merge_and_unload()
    recovery = {
        "method": "lora",
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": len(config.target_modules),
        "steps": trainer.state.global_step,
        "learning_rate": args.learning_rate,
    }
    record_recovery(merged, recovery)
    return merged.eval()
