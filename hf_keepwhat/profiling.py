"""Counting what a model costs: parameters and multiply-accumulates (MACs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU one that
# `scaled_dot_product_attention` dispatches to here, which would silently count attention as free.
_EXTRA_FLOP_FORMULAS = {}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOP_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


def count_params(module: nn.Module) -> int:
    """Returns the number of parameters of `module` (shared parameters counted once).

    Args:
        module: Any PyTorch module.
    """
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_macs(module: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """Counts the multiply-accumulates of one forward pass with torch's `FlopCounterMode`.

    Args:
        module: The module to run (put in eval mode for the count, then restored).
        inputs: Keyword arguments of `module.forward`.
    """
    was_training = module.training
    module.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
            module(**inputs)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2
