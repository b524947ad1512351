"""`LatencyTable`: a measured latency model of one backbone on one runtime, what
`MaskConfig(budget="latency")` prices units with.

MACs are a poor proxy for time on the shapes pruning produces: at batch 1 on a CPU, layer norms,
residual adds, copies and every kernel call cost the same however narrow a layer is, and on a GPU
a short window's time is kernel launches. So the time of a pruned model is modelled as

    latency_ms = intercept + sum over unit kinds k of  ms_per_mmac[k] * MMACs kept of kind k
                           + sum over kinds k of     ms_per_group[k] * groups of kind k not empty
                           + ms_per_layer * layers not emptied

fitted by least squares to pruned variants timed on the runtime (`latency_profile`). The fixed
costs are what only removing a whole attention block, FFN or layer gives back, which a MACs budget
cannot see. The features are computed by `sparsity.CostModel.latency_features` from the same
`UnitGroup`s that prune, so the table and the pruned shapes cannot disagree.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The file `keepwhat profile-latency` writes by default.
LATENCY_FILE = "latency.json"


def feature_names(kinds: Sequence[str]) -> list[str]:
    """The latency model's features for the unit kinds `kinds`, in a fixed order.

    Args:
        kinds: Unit kinds (`"heads"`, `"ffn"`, `"conv"`).
    """
    kinds = sorted(kinds)
    return [f"mmacs_{k}" for k in kinds] + [f"groups_{k}" for k in kinds] + ["layers"]


@dataclass
class LatencyTable:
    """A fitted latency model of one backbone on one runtime, with where it was measured.

    Args:
        coefficients: Feature name (`feature_names`) -> milliseconds per unit of the feature;
            `"intercept"`: what no unit or layer removal changes (stem, final norm, head, call).
        unit_kinds: The unit kinds the variants were pruned over; a `MaskConfig` using the table
            must mask the same kinds (a kind left unmasked would be priced as removable).
        dense_ms: Measured latency of the dense model, milliseconds.
        dense_predicted_ms: The table's prediction for the dense model: what a latency budget's
            fractions are fractions of (so a target of 0.5 asks for half of it).
        dense_macs: Backbone MACs of the dense model at the profiled input, to check that a model
            priced with the table is the one profiled, at the same window.
        runtime: `"torch"` or `"onnxruntime"`.
        device: `"cpu"` or `"cuda"`.
        threads: Intra-op threads of the runtime.
        batch_size: Batch size timed.
        seconds: Input window timed, seconds of audio.
        model: What was profiled (the name or folder given).
        environment: Library versions and machine (`profiling.environment`, plus ONNX Runtime's).
        fit: How well it predicts: variants fitted on and held out, the held-out median and
            largest relative error of the latency and of its fraction of dense (what a budget
            asks for).
    """

    coefficients: dict[str, float]
    unit_kinds: list[str]
    dense_ms: float
    dense_predicted_ms: float
    dense_macs: int
    runtime: str
    device: str
    threads: int
    batch_size: int
    seconds: float
    model: str = ""
    environment: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)

    def predict(self, features: Mapping[str, object]):
        """Predicted latency in milliseconds (a tensor when the features are tensors, so a
        budget penalty can back-propagate through the MACs terms).

        Args:
            features: Feature name -> value, as `CostModel.latency_features` returns.
        """
        total = self.coefficients["intercept"]
        for name in feature_names(self.unit_kinds):
            total = total + self.coefficients.get(name, 0.0) * features[name]
        return total

    def describe(self) -> str:
        """`torch, cpu, 2 threads, batch 1, 1 s` for reports and logs."""
        return (
            f"{self.runtime}, {self.device}, {self.threads} threads, batch {self.batch_size}, "
            f"{self.seconds:g} s"
        )

    def to_dict(self) -> dict:
        """The table as a JSON-serialisable dict (what `MaskConfig.latency_table` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> LatencyTable:
        """Reads `to_dict()` output, or a whole `keepwhat profile-latency` file (its measured
        variants are ignored).

        Args:
            data: The dict.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in ("coefficients", "dense_predicted_ms") if n not in data)
        if missing:
            raise ValueError(
                f"Not a latency table: {missing} missing. Write one with `keepwhat "
                "profile-latency MODEL --out latency.json`."
            )
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        """Reads a table written by `keepwhat profile-latency`.

        Args:
            path: The JSON file.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No latency table at {path}. Measure one on the runtime you deploy on: "
                f"keepwhat profile-latency MODEL --runtime torch --out {LATENCY_FILE}"
            )
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def fit_coefficients(
    features: Sequence[Mapping[str, float]],
    measured_ms: Sequence[float],
    kinds: Sequence[str],
    reference: int | None = None,
) -> dict[str, float]:
    """Least-squares coefficients of the latency model, on the relative scale (each variant's
    error divided by its latency, so fast variants count as much as slow ones) and non-negative
    (scipy's NNLS): a negative cost would let a budget buy time by keeping units.

    Args:
        features: One feature dict per timed variant.
        measured_ms: Their measured latencies.
        kinds: The unit kinds (sets the features).
        reference: Index of the variant a budget's fractions are fractions of (the dense
            model). It weighs as much as all the others together: an error there moves every
            fraction (the torch tiny.en table refit so: held-out fractions of dense 2.3% off
            at the median instead of 4.3%; docs/results.md, "Latency tables").
    """
    import numpy as np
    from scipy.optimize import nnls

    names = feature_names(kinds)
    design = np.array([[1.0, *(float(f[n]) for n in names)] for f in features])
    measured = np.asarray(measured_ms, dtype=float)
    scale = design.max(axis=0)
    scale[scale == 0] = 1.0  # a feature no variant has (e.g. no layer can be emptied)
    # A row scaled by sqrt(w) weighs w in the squared error.
    weights = np.ones(len(measured))
    if reference is not None:
        weights[reference] = max(len(measured) - 1, 1) ** 0.5
    rows = design / scale / measured[:, None] * weights[:, None]
    # Columns scaled to [0, 1] so NNLS's tolerance means the same for MMACs and counts.
    solution, _ = nnls(rows, weights)
    solution = solution / scale
    values = [float(v) for v in solution]
    return {"intercept": values[0], **dict(zip(names, values[1:], strict=True))}


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """Median and largest `|predicted - measured| / measured` over variants.

    Args:
        predicted: Predicted latencies (or fractions of dense).
        measured: Measured latencies (or fractions), same order.
    """
    errors = sorted(abs(p - m) / m for p, m in zip(predicted, measured, strict=True))
    middle = len(errors) // 2
    median = errors[middle] if len(errors) % 2 else (errors[middle - 1] + errors[middle]) / 2
    return {"median_relative_error": median, "max_relative_error": errors[-1]}


def fit_errors(
    predicted: Sequence[float], measured: Sequence[float], fitted: Sequence[int]
) -> dict[str, float]:
    """How well a table predicts its timed variants: the held-out median and largest error of
    the latency and of its fraction of dense (what a budget asks for), and the fitted median.

    Args:
        predicted: Predicted latency of every variant, the dense model (index 0) first.
        measured: Their measured latencies, same order.
        fitted: Indices of the variants the table was fitted on; the others are held out.
    """
    held_out = [i for i in range(len(measured)) if i not in set(fitted)]
    fractions = relative_errors(
        [predicted[i] / predicted[0] for i in held_out],
        [measured[i] / measured[0] for i in held_out],
    )
    return {
        **relative_errors([predicted[i] for i in held_out], [measured[i] for i in held_out]),
        "median_fraction_relative_error": fractions["median_relative_error"],
        "max_fraction_relative_error": fractions["max_relative_error"],
        "fitted_median_relative_error": relative_errors(
            [predicted[i] for i in fitted], [measured[i] for i in fitted]
        )["median_relative_error"],
    }
