"""`SparsityCallback`: target schedule, sparsity logging and mask checkpoints for `Trainer`.

Callbacks cannot change the loss; the penalty is added in `MaskModel.forward`. This callback only
moves the target the penalty pulls towards, reports where the masks are, and saves them.
"""

from __future__ import annotations

import os

from transformers import TrainerCallback

from .config import MaskConfig
from .model import MaskModel


def _mask_model(model) -> MaskModel:
    if not isinstance(model, MaskModel):
        raise TypeError(
            f"SparsityCallback needs Trainer(model=...) to be a MaskModel, got "
            f"{type(model).__name__}; wrap the model with get_mask_model(model, config) first."
        )
    return model


class SparsityCallback(TrainerCallback):
    """Schedules the sparsity target, logs realised sparsity and saves masks with checkpoints.

    Args:
        config: The `MaskConfig` the model was wrapped with; its `target_warmup_steps` sets a
            linear warm-up of the target to `target_sparsity`, from what the model removes with
            every unit kept (0, or the share of the layers `last_layer` dropped); with
            `train_backbone`, its `head_first_steps` hold the backbone's weights.
    """

    def __init__(self, config: MaskConfig):
        self.config = config
        #: Where the warm-up starts; set from the model when training begins.
        self.start = 0.0

    def target_at(self, step: int) -> float:
        """The sparsity target at optimizer step `step`.

        Args:
            step: The global step.
        """
        target = self.config.target_sparsity
        if self.config.target_warmup_steps <= 0:
            return target
        progress = min(1.0, step / self.config.target_warmup_steps)
        return self.start + (target - self.start) * progress

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        mm = _mask_model(model)
        # Starting below what dropped layers already remove, the penalty would first pull every
        # mask on, far past the threshold, for as long as the target stays below that share:
        # on GM instruments, Whisper base cut to layers 0-2 (47% of MACs) then fell 8 points of
        # MACs short of a 61% target.
        self.start = min(mm.budget.min_removed_fraction(), self.config.target_sparsity)
        if optimizer is not None:  # the masks' own rate, whichever optimizer Trainer built
            mm.match_mask_learning_rate(optimizer)
            mm.check_backbone_learning_rate(optimizer)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        _mask_model(model).current_target = self.target_at(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.config.train_backbone and state.global_step < self.config.head_first_steps:
            # The gradients are dropped, not switched off with requires_grad: DistributedDataParallel
            # waits for a gradient of every parameter that required one when it was wrapped.
            # (Trainer clipped the gradient norm with them counted, so the head's step is clipped
            # as in a step where everything trains.)
            _mask_model(model).drop_backbone_gradients()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is None or "loss" not in logs or model is None:
            return
        mm = _mask_model(model)
        total = mm.sparsity_report()["total"]
        extra = {
            "sparsity_penalty": float(mm.sparsity_penalty().detach()),
            "sparsity_target": mm.current_target,
            "removed_params": total["params_removed_fraction"],
            "removed_macs": total["macs_removed_fraction"],
            "removed_units": total["units_removed_fraction"],
        }
        if "latency_removed_fraction" in total:  # the table's prediction
            extra["removed_latency"] = total["latency_removed_fraction"]
        if mm.last_distillation_loss is not None:
            extra["distillation_loss"] = mm.last_distillation_loss
        logs.update(extra)
        # Trainer stored a copy of `logs` in the history before calling callbacks.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def on_save(self, args, state, control, model=None, **kwargs):
        mm = _mask_model(model)
        if not state.is_world_process_zero or not mm.is_transformers_model:
            return  # a plain module's masks are in Trainer's own checkpoint state
        if mm.mask_config.train_backbone:
            return  # trained weights: no adapter can hold them; Trainer's checkpoint does
        # Trainer already wrote the state (masks + head) it resumes from; the adapter files next
        # to it make every checkpoint loadable with MaskModel.from_pretrained.
        checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        mm.save_pretrained(checkpoint)
