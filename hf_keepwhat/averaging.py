"""`WeightAverageCallback`: a run ends on the average of its last checkpoints' weights.

Choosing a checkpoint on a few dozen validation clips is noise; averaging the weights of the
checkpoints in a run's last part needs no choice (SWA, Izmailov et al. 2018; SWAD, Cha et al.
2021, for domains never trained on). torch's `get_swa_multi_avg_fn` updates the running mean;
`AveragedModel` is not used because it deep-copies the whole module (a MaskModel's hooks and
frozen tensors included) where only the trained tensors need a copy.

Mask logits are not averaged: a unit's mask is a choice, and the average of two choices may
keep a unit neither kept (or miss the budget). The masks stay the last checkpoint's.
"""

from __future__ import annotations

import logging
import os

import torch
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import get_swa_multi_avg_fn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

#: Written into each checkpoint folder, so that a resumed run continues the same average.
AVERAGE_FILE = "weight_average.safetensors"


def averaged_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters an average covers: every trained one except mask logits.

    Args:
        model: A MaskModel or any `nn.Module` being trained.
    """
    masks = getattr(model, "masks", None)
    skip = {id(p) for p in masks.parameters()} if isinstance(masks, torch.nn.Module) else set()
    return {
        name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in skip
    }


class WeightAverageCallback(TrainerCallback):
    """Averages the trained weights at every evaluation from `start` of the run on, saves the
    average with each checkpoint (a resumed run goes on with it), and loads it into the model
    when training ends.

    Use with `load_best_model_at_end=False` (Trainer would load a checkpoint over the average)
    and an evaluation strategy (the average is taken at evaluations).

    Args:
        start: The share of `max_steps` from which evaluations enter the average (0.5: the
            run's second half).
    """

    def __init__(self, start: float = 0.5):
        if not 0.0 <= start < 1.0:
            raise ValueError(f"start={start}: give the share of the run to skip, in [0, 1).")
        self.start = start
        self.average: dict[str, torch.Tensor] = {}
        self.count = 0
        self.loaded = False
        self.update = get_swa_multi_avg_fn()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.load_best_model_at_end:
            raise ValueError(
                "WeightAverageCallback with load_best_model_at_end=True: Trainer would load the "
                "best checkpoint over the average; set load_best_model_at_end=False."
            )
        self.average, self.count, self.loaded = {}, 0, False
        saved = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", AVERAGE_FILE)
        if state.global_step > 0 and os.path.isfile(saved):  # resuming: the same average
            tensors = load_file(saved)
            self.count = int(tensors.pop("__count__"))
            self.average = tensors

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if model is None or self.loaded or state.global_step < self.start * state.max_steps:
            return  # (once loaded, an evaluation scores the average; it is not a checkpoint)
        current = {name: p.detach().cpu() for name, p in averaged_parameters(model).items()}
        if not self.average:
            self.average = {name: t.clone().float() for name, t in current.items()}
        else:
            names = list(self.average)
            self.update(
                [self.average[n] for n in names], [current[n].float() for n in names], self.count
            )
        self.count += 1

    def on_save(self, args, state, control, **kwargs):
        if not self.average or not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        tensors = {n: t.contiguous() for n, t in self.average.items()}
        save_file(
            {**tensors, "__count__": torch.tensor(self.count)}, os.path.join(folder, AVERAGE_FILE)
        )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        if not self.average:
            logger.warning(
                "weight average: no evaluation in the last %.0f%% of the run, so the last state "
                "is kept; evaluate more often (eval_steps) to average.",
                100 * (1 - self.start),
            )
            return
        with torch.no_grad():
            for name, p in averaged_parameters(model).items():
                p.copy_(self.average[name].to(device=p.device, dtype=p.dtype))
        self.loaded = True
