"""Distillation from the dense model while masks train (CoFi, DPHuBERT).

The teacher costs nothing to hold: it is the frozen backbone itself with the mask hooks off. The
student is the same backbone with its masks; both read the same batch, and the loss is the
relative squared error between their outputs. Its gradient reaches only the masks (the backbone
is frozen, the head does not feed the backbone): it pulls them towards the representation the
dense model computes. On GM instruments (Whisper tiny.en, 50% of MACs removed) it changed
nothing; the frontier diagnostics in docs/results.md have the figures.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _first_tensor(output):
    """A module's main output: the tensor itself, `last_hidden_state`, or the first element."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"Cannot distil from a module whose output is a {type(output).__name__}: it needs a "
        "tensor, a ModelOutput with last_hidden_state, or a tuple starting with a tensor."
    )


@contextlib.contextmanager
def captured_output(module: nn.Module):
    """Records `module`'s main output (see `_first_tensor`) while the block runs.

    Args:
        module: The module to record, e.g. the backbone (`layout.backbone`).

    Yields:
        A list holding the output of the module's last call once the block has run.
    """
    seen: list[torch.Tensor] = []

    def hook(_module, _args, output):
        seen[:] = [_first_tensor(output)]

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def relative_squared_error(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """`||student - teacher||^2 / ||teacher||^2` over the batch: 0 when the masked model computes
    the dense function, about 1 when its output has nothing left of it; free of the hidden size
    and of the output's scale, so one weight suits every model.

    Args:
        student: The masked backbone's output.
        teacher: The dense backbone's output (no gradient).
    """
    teacher = teacher.detach().to(student.dtype)
    return (student - teacher).pow(2).sum() / teacher.pow(2).sum().clamp_min(1e-12)


class DistillationMixin:
    """The teacher side of a `MaskModel` (`MaskConfig.distill_weight`): when to distil, and the
    dense backbone's output (the same backbone with the mask hooks off)."""

    def distilling(self) -> bool:
        """Whether `forward` adds the distillation term now: `distill_weight > 0`, in training
        mode, with gradients enabled and masks that train (evaluation, and a dense baseline with
        frozen masks, run the masked model alone)."""
        return (
            self.mask_config.distill_weight > 0
            and self.training
            and torch.is_grad_enabled()
            and any(p.requires_grad for p in self.masks.parameters())
        )

    def _dense_backbone_output(self, args, kwargs) -> torch.Tensor:
        """The teacher: the backbone's output on the same batch with the masks off."""
        with torch.no_grad(), self.hooks_removed(), captured_output(self.layout.backbone) as out:
            self.model(*args, **kwargs)
        return out[0]
