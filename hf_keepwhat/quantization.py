"""Dynamic int8 quantization of a pruned model for CPU inference."""

from __future__ import annotations

import torch
from torch import nn


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """torch's dynamic int8 quantization of every `nn.Linear` that still has weights.

    Weights are stored in int8, activations are quantized per call: the usual CPU deployment
    of a transformer encoder. A pruned model can hold zero-width `nn.Linear`s (the FFN of a
    post-LN layer that lost every neuron keeps its output bias); torch's `quantize_dynamic`
    turns their empty weight into an invalid quantization range and the model's outputs into
    NaN, so they stay in float here. Convolutions stay in float too (dynamic quantization
    covers linear layers only).

    Args:
        model: A model on the CPU (pruned or dense); it is copied, not changed.

    Returns:
        The quantized copy, in eval mode.
    """
    # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency of
    # this project; this is the API torch itself still ships for dynamic int8 on the CPU.
    from torch.ao.quantization import quantize_dynamic

    with_weights = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight.numel() > 0
    }
    return quantize_dynamic(model, with_weights, dtype=torch.qint8, inplace=False).eval()
