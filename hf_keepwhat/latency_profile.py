"""Measuring a `LatencyTable`: time pruned variants of a model on a runtime, fit the latency
model, and check it on variants it was not fitted on.

No profiler of torch or ONNX Runtime predicts the time of a model that has not been built, and
timing every candidate during mask training is impossible, so this builds a few dozen real pruned
variants (random widths per group, some attention blocks, FFNs and whole layers removed: the
shapes mask training produces), times them interleaved (each round visits every variant in a new
order, so drift in the machine's speed spreads over all of them), and fits `latency.py`'s model.

    keepwhat profile-latency openai/whisper-tiny.en --runtime onnxruntime --threads 2 \\
        --seconds 1 --out latency.json
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .config import UNIT_KINDS, MaskConfig
from .latency import LatencyTable, feature_names, fit_coefficients, fit_errors
from .layouts import get_layout
from .model import get_mask_model
from .profiling import environment
from .pruning import pruned_copy
from .units import KeptUnits

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")


def sample_variants(mm, count: int, seed: int = 0) -> list[KeptUnits]:
    """The dense model, then `count - 1` random pruned shapes: each emptiable layer emptied with
    probability 1/4, else each group emptied with probability 1/10 (where it can be) or kept at a
    uniform random width. Which units stay does not matter to the time, only how many.

    Args:
        mm: The `MaskModel` whose groups are sampled.
        count: Variants to return, the dense one included.
        seed: Seed of the sampling.
    """
    rng = random.Random(seed)
    variants = [KeptUnits({g.name: torch.arange(g.num_units) for g in mm.unit_groups})]
    for _ in range(count - 1):
        emptied = {name for e in mm.emptiable_layers if rng.random() < 0.25 for name in e.groups}
        kept = {}
        for group in mm.unit_groups:
            if group.name in emptied or (group.min_kept == 0 and rng.random() < 0.1):
                width = 0
            else:
                width = round(rng.uniform(0.05, 1.0) * group.num_units)
                width = max(group.min_kept, 1, width)
            kept[group.name] = torch.arange(width)
        variants.append(KeptUnits(kept))
    return variants


def variant_features(mm, kept: KeptUnits) -> dict[str, float]:
    """The latency model's features of one pruned shape (a group keeps at least its
    `min_kept` units physically, as pruning does).

    Args:
        mm: The `MaskModel`.
        kept: The shape.
    """
    fractions = [max(len(kept[g.name]), g.min_kept) / g.num_units for g in mm.unit_groups]
    return {k: float(v) for k, v in mm.costs.latency_features(fractions).items()}


def runtime_call(
    model: nn.Module, inputs: dict, runtime: str, threads: int, folder: str, device: str = "cpu"
) -> Callable[[], None]:
    """A zero-argument callable that runs `model` on `inputs` once on `runtime`, for timing.

    Args:
        model: The (pruned) model, in eval mode.
        inputs: Its one input tensor by name, batch included.
        runtime: `"torch"` (eager, inference mode) or `"onnxruntime"` (exported to
            `folder/model.onnx`, run on the CPU provider with spinning off).
        threads: ONNX Runtime's intra-op threads (torch uses its current setting).
        folder: Where the ONNX export goes (unused for torch).
        device: torch's device (`"cuda"` synchronises after each call).
    """
    if runtime == "torch":
        place = torch.device(device)

        @torch.inference_mode()
        def call():
            model(**inputs)
            if place.type == "cuda":
                torch.cuda.synchronize(place)

        return call
    from .export import export_onnx, onnx_session

    ((name, tensor),) = inputs.items()
    export_onnx(model, folder, {name: tensor})
    # Models take turns, so spinning is off (what the table then assumes; `onnx_session`).
    session = onnx_session(os.path.join(folder, "model.onnx"), threads, spinning=False)
    feed = {name: tensor.numpy()}
    return lambda: session.run(None, feed)


def interleaved_ms(
    calls: Sequence[Callable[[], None]], rounds: int, repeats: int, seed: int = 0
) -> list[float]:
    """Milliseconds per call of each callable: every round times `repeats` calls of each, in a
    new random order; the median over rounds of the per-round mean. Each timed block follows an
    untimed call of the same callable: switching models is not what a deployment pays (ONNX
    Runtime's idle sessions keep their threads spinning for a while, which would slow the next
    model down).

    Args:
        calls: Zero-argument callables (one model each).
        rounds: Rounds over all callables.
        repeats: Timed calls per callable per round.
        seed: Seed of the visiting order.
    """
    rng = random.Random(seed)
    times = [[] for _ in calls]
    order = list(range(len(calls)))
    for _ in range(rounds):
        rng.shuffle(order)
        for index in order:
            calls[index]()
            start = time.perf_counter()
            for _ in range(repeats):
                calls[index]()
            times[index].append((time.perf_counter() - start) / repeats * 1e3)
    return [statistics.median(t) for t in times]


def _runtime_environment(runtime: str) -> dict:
    found = environment()
    if runtime == "onnxruntime":
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
        found["onnxruntime_session"] = {"session.intra_op.allow_spinning": "0"}
    return found


def profile_latency(
    model: nn.Module,
    *,
    runtime: str = "torch",
    threads: int | None = None,
    batch_size: int = 1,
    seconds: float = 1.0,
    device: str = "cpu",
    unit_kinds: Sequence[str] = UNIT_KINDS,
    variants: int = 48,
    rounds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    name: str = "",
) -> dict:
    """Times pruned variants of `model` on a runtime and fits a `LatencyTable` on half of them;
    the other half measures its error.

    Args:
        model: A transformers model hf_keepwhat supports (the class you deploy: its head is
            timed too). Its weights do not matter, only its shapes.
        runtime: `"torch"` (eager) or `"onnxruntime"` (each variant exported with
            `export.export_onnx`, run on ONNX Runtime's CPU provider with spinning off:
            deploy with `session.intra_op.allow_spinning=0` for the table to hold).
        threads: Intra-op threads (default: torch's current setting).
        batch_size: Batch size to time.
        seconds: Input window in seconds (Whisper's window is cut to it, as
            `MaskConfig.max_input_seconds` does).
        device: `"cpu"` or `"cuda"` (torch only).
        unit_kinds: The unit kinds the masks will prune.
        variants: Variants timed, the dense model included; every second one is held out.
        rounds: Interleaved rounds over all variants.
        repeats: Timed calls per variant per round.
        seed: Seed of the shapes and of the visiting order.
        name: What to call the model in the table (its Hub id or folder).

    Returns:
        The table's dict (`LatencyTable.to_dict()`) plus `"variants"`: each variant's features,
        measured and predicted milliseconds, and whether it was fitted on.
    """
    _check_profile_arguments(runtime, device, variants)
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        mm = _profiling_mask_model(model, unit_kinds, seconds)
        inputs = _random_inputs(mm, batch_size, seed, device)
        shapes = sample_variants(mm, variants, seed)
        features = [variant_features(mm, kept) for kept in shapes]
        timing = {"threads": threads, "device": device, "rounds": rounds, "repeats": repeats}
        measured = _time_variants(mm, shapes, inputs, runtime, seed, **timing)
        table = LatencyTable(
            coefficients={},
            unit_kinds=sorted({g.kind for g in mm.unit_groups}),
            dense_ms=measured[0],
            dense_predicted_ms=0.0,
            dense_macs=int(mm.costs.totals["macs"]),
            **{"runtime": runtime, "device": device, "threads": threads},
            **{"batch_size": batch_size, "seconds": seconds},
            model=name or getattr(model, "name_or_path", "") or type(model).__name__,
            environment={**_runtime_environment(runtime), "torch_threads": threads},
        )
        rows = _fit_on_half(table, features, measured, rounds, repeats)
        mm.unload()
        return {**table.to_dict(), "variants": rows}
    finally:
        torch.set_num_threads(previous_threads)


def _random_inputs(mm, batch_size: int, seed: int, device: str) -> dict:
    """A seeded random batch shaped like the model's reference input (only shapes matter)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn((batch_size, *v.shape[1:]), generator=generator).to(device)
        for k, v in mm.reference_inputs.items()
    }


def _check_profile_arguments(runtime: str, device: str, variants: int) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}; choose from {RUNTIMES}.")
    if runtime == "onnxruntime" and device != "cpu":
        raise ValueError("The onnxruntime runtime is timed on the CPU provider; use device='cpu'.")
    if variants < 8:
        raise ValueError(f"variants={variants}: fitting needs at least 8 (4 held out).")


def _profiling_mask_model(model: nn.Module, unit_kinds: Sequence[str], seconds: float):
    """`model` wrapped with every unit kept, at the profiled window: the variants are its
    pruned copies, and its cost model gives their features."""
    window = seconds if get_layout(model, MaskConfig()).shortens_input_window else None
    config = MaskConfig(
        unit_kinds=list(unit_kinds),
        budget="macs",
        target_sparsity=0.0,
        max_input_seconds=window,
        macs_input_seconds=seconds,
    )
    return get_mask_model(model.eval(), config)


def _time_variants(mm, shapes, inputs, runtime, seed, *, threads, device, rounds, repeats):
    """Milliseconds per call of each pruned variant (`shapes`), timed interleaved."""
    with tempfile.TemporaryDirectory() as folder:
        calls = []
        for index, kept in enumerate(shapes):
            pruned = pruned_copy(mm, kept)[0].to(device).eval()
            variant_folder = os.path.join(folder, str(index))
            calls.append(runtime_call(pruned, inputs, runtime, threads, variant_folder, device))
        logger.info("timing %d variants on %s, %d rounds", len(calls), runtime, rounds)
        return interleaved_ms(calls, rounds, repeats, seed)


def _fit_on_half(table: LatencyTable, features, measured, rounds: int, repeats: int) -> list:
    """Fits `table`'s coefficients on every second variant (anchored at the dense one, the
    first), records the held-out errors in `table.fit`, and returns one row per variant."""
    fitted = list(range(0, len(measured), 2))
    table.coefficients = fit_coefficients(
        [features[i] for i in fitted], [measured[i] for i in fitted], table.unit_kinds, reference=0
    )
    predicted = [float(table.predict(f)) for f in features]
    table.dense_predicted_ms = predicted[0]
    table.fit = {
        "fitted": len(fitted),
        "held_out": len(measured) - len(fitted),
        "rounds": rounds,
        "repeats": repeats,
        **fit_errors(predicted, measured, fitted),
    }
    return [
        {
            "features": {n: features[i][n] for n in feature_names(table.unit_kinds)},
            "measured_ms": measured[i],
            "predicted_ms": predicted[i],
            "fitted": i in fitted,
        }
        for i in range(len(measured))
    ]
