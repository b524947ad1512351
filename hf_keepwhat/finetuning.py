"""Fine-tuning a pruned model: every kept weight and the head train on the task.

Masks choose what to keep on a frozen backbone; on a small task from one source the kept weights
adapting to the task (and to their missing neighbours) is worth more than the frozen backbone's
saved training time (docs/research.md, "Training the weights"). This is what transformers'
audio-classification example does to a dense model, done to the pruned one: a plain `Trainer`,
with an optional distillation term towards a frozen teacher's backbone output, the way
transformers' documentation distils (a `Trainer` whose `compute_loss` adds the term). The
pruned model keeps its class, shapes and speed; its record says it was fine-tuned.
"""

from __future__ import annotations

from torch import nn
from transformers import Trainer

from .averaging import WeightAverageCallback
from .distillation import captured_output, relative_squared_error
from .layouts import get_layout
from .standalone import RECORD_KEY


def record_recovery(model: nn.Module, recovery: dict) -> None:
    """Writes what was trained after pruning into the model's record (`config.keepwhat` of a
    transformers model, `keepwhat_record` of a plain module), which its card states.

    Args:
        model: The pruned model.
        recovery: `{"method": "lora" | "finetune", ...}`.
    """
    if hasattr(model, "config"):
        record = dict(getattr(model.config, RECORD_KEY, None) or {})
        setattr(model.config, RECORD_KEY, {**record, "recovery": recovery})
    else:
        model.keepwhat_record = {**getattr(model, "keepwhat_record", {}), "recovery": recovery}


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss adds `distill_weight * relative_squared_error(student backbone
    output, teacher backbone output)` to the task loss. The teacher is frozen, in eval mode, and
    must give a backbone output of the student's shape (the same depth and hidden size).

    Args:
        teacher: The frozen teacher model (e.g. the base model cut to the student's depth).
        distill_weight: Weight of the distillation term.
        **kwargs: `Trainer`'s arguments.
    """

    def __init__(self, *args, teacher: nn.Module, distill_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.distill_weight = distill_weight
        self._teacher_backbone = get_layout(teacher).backbone
        self._student_backbone = get_layout(self.model).backbone

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The task loss (Trainer's), plus the weighted distillation term in training mode."""
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.teacher.to(next(model.parameters()).device)
        features = {k: v for k, v in inputs.items() if k != "labels"}
        with captured_output(self._teacher_backbone) as teacher_out:
            self.teacher(**features)
        with captured_output(self._student_backbone) as student_out:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        loss = loss + self.distill_weight * relative_squared_error(
            student_out[0], teacher_out[0].detach()
        )
        return (loss, outputs) if return_outputs else loss


def best_step(state) -> int | None:
    """The step of a Trainer state's best checkpoint (None when none was chosen).

    Args:
        state: `trainer.state`.
    """
    best = state.best_model_checkpoint
    return int(best.rsplit("-", 1)[1]) if best else None


def unfreeze_for_finetuning(model: nn.Module) -> int:
    """Makes every parameter trainable, but a wav2vec2-style convolutional feature encoder (kept
    frozen, as transformers' audio-classification example does by default); returns how many
    parameters train.

    Args:
        model: The model to fine-tune.
    """
    model.requires_grad_(True)
    freeze_features = getattr(model, "freeze_feature_encoder", None)
    if callable(freeze_features):
        freeze_features()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _kept(args, callbacks) -> str:
    """Which state fine-tuning returned: best, last, or the average of its last checkpoints."""
    if any(isinstance(c, WeightAverageCallback) for c in callbacks or []):
        return "average"
    return "best" if args.load_best_model_at_end else "last"


def finetune(
    model: nn.Module,
    args,
    train_dataset,
    *,
    eval_dataset=None,
    compute_metrics=None,
    teacher: nn.Module | None = None,
    distill_weight: float = 0.0,
    data_collator=None,
    compute_loss_func=None,
    callbacks=None,
    resume_from_checkpoint: str | bool | None = None,
) -> nn.Module:
    """Trains every weight of `model` (a pruned model, or any model of a supported family) on the
    task with `Trainer`, and returns it in eval mode with the fine-tuning recorded
    (`config.keepwhat["recovery"]`, shown on its card).

    With `args.load_best_model_at_end` and an `eval_dataset`, the checkpoint best on it is the one
    returned, as with any `Trainer` run; without, the last state, or the average of the last
    checkpoints with a `WeightAverageCallback` among `callbacks` (the record says which).

    Args:
        model: The model to fine-tune; trained in place.
        args: `TrainingArguments` (`max_steps`, `learning_rate`: transformers' example uses 5e-5
            with a 10% warm-up for every weight).
        train_dataset: The task's training data.
        eval_dataset: Validation data, for `Trainer`'s evaluation and best-checkpoint choice.
        compute_metrics: Passed to `Trainer`.
        teacher: A frozen model whose backbone output the student's is pulled towards (used only
            with `distill_weight > 0`); it must have the student's depth and hidden size.
        distill_weight: Weight of the distillation term (0: the task loss alone).
        data_collator: Passed to `Trainer`.
        compute_loss_func: Passed to `Trainer` (e.g. BCE for tagging).
        callbacks: Passed to `Trainer`.
        resume_from_checkpoint: Passed to `Trainer.train` (a killed fine-tuning continues).
    """
    if distill_weight < 0:
        raise ValueError(f"distill_weight={distill_weight}: give a weight of 0 or more.")
    if distill_weight > 0 and teacher is None:
        raise ValueError(
            "distill_weight > 0 needs a teacher: pass the frozen base model cut to the pruned "
            "model's depth (teacher=...), or set distill_weight=0."
        )
    trained = unfreeze_for_finetuning(model)
    kwargs = {"model": model, "args": args, "train_dataset": train_dataset}
    kwargs |= {"eval_dataset": eval_dataset, "compute_metrics": compute_metrics}
    kwargs |= {"data_collator": data_collator, "compute_loss_func": compute_loss_func}
    if distill_weight > 0:
        kwargs |= {"teacher": teacher, "distill_weight": distill_weight}
    trainer = (DistillationTrainer if distill_weight > 0 else Trainer)(
        callbacks=callbacks, **kwargs
    )
    if compute_loss_func is not None:
        trainer.loss_is_scaled_for_ga = False  # a mean loss: Trainer divides by GA steps
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    record_recovery(
        model,
        {
            "method": "finetune",
            "steps": trainer.state.global_step,
            "best_step": best_step(trainer.state),
            "kept": _kept(args, callbacks),
            "learning_rate": args.learning_rate,
            "parameters_trained": trained,
            "distill_weight": distill_weight,
        },
    )
    return model.eval()
