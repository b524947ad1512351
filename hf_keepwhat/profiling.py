"""Counting what a model costs: parameters and multiply-accumulates (MACs)."""

from __future__ import annotations

import os
import platform

import torch
import transformers
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


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    *,
    warmup: int = 3,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, float]:
    """Times forward passes: median and spread over `repeats` runs after `warmup` runs.

    Args:
        model: The model (put in eval mode for the measurement, then restored).
        inputs: Keyword arguments of `model.forward`, already on the model's device.
        warmup: Untimed runs first (allocator, caches, lazy init).
        repeats: Timed runs.
        threads: CPU threads for the measurement (restored afterwards); None leaves torch's.
    """
    import statistics
    import time

    device = next(model.parameters()).device
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        for _ in range(warmup):
            model(**inputs)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            sync()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_s": statistics.median(times),
        "iqr_s": quartiles[2] - quartiles[0],
        "min_s": min(times),
        "repeats": repeats,
        "threads": torch.get_num_threads() if threads is None else threads,
        "device": str(device),
    }


def disk_size(path: str) -> int:
    """Bytes of a saved model's weights (`*.safetensors` in a folder, or one file).

    Args:
        path: A folder written by `save_pretrained`, or a file.
    """
    import os

    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(path, name))
        for name in os.listdir(path)
        if name.endswith(".safetensors")
    )


def environment() -> dict:
    """Where the figures were measured: library versions, processor, threads."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
