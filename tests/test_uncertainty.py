"""Reports say how sure they are: intervals of accuracies and of pruned-minus-dense gaps, and a
warning when validation is too small to choose on."""

import numpy as np
import pytest

from hf_keepwhat.tasks.reports import accuracy_intervals, markdown, resolution_warning
from hf_keepwhat.tasks.uncertainty import (
    bits_of,
    hex_bits,
    paired_interval,
    resolution_points,
    wilson_interval,
)


def test_bits_round_trip_and_wilson_matches_the_textbook_formula():
    values = np.random.default_rng(0).random(37) > 0.4
    assert np.array_equal(bits_of(hex_bits(values), 37), values)
    low, high = wilson_interval(30, 50)
    # Wilson: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), p = 0.6, n = 50.
    z, n, p = 1.959964, 50, 0.6
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert low == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-6)
    assert high == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-6)
    with pytest.raises(ValueError, match="at least one clip"):
        wilson_interval(0, 0)


def test_paired_interval_is_narrow_for_a_shared_error_and_centred_on_the_gap():
    rng = np.random.default_rng(1)
    a = rng.random(400) > 0.5
    b = a.copy()
    b[:40] = ~b[:40]  # b differs from a on 40 clips only
    low, high = paired_interval(a, b)
    gap = a.mean() - b.mean()
    assert low <= gap <= high and high - low < 0.1
    unpaired = 2 * 1.96 * np.sqrt(0.25 / 400) * np.sqrt(2)  # two independent accuracies
    assert high - low < unpaired  # pairing removes the clips both get right or wrong
    with pytest.raises(ValueError, match="pair them"):
        paired_interval(a, b[:10])


def test_resolution_and_warning_follow_the_validation_size():
    assert resolution_points(48) == pytest.approx(14.1, abs=0.1)
    assert resolution_warning(48).startswith(
        "Validation has 48 clips: accuracies within about +-14"
    )
    assert resolution_warning(1017) is None  # +-3.1 points


def _report(validation_bits, test_bits, dense_validation, dense_test):
    sizes = {"validation": len(validation_bits), "test": len(test_bits)}

    def side(v, t):
        return {
            "validation_metrics": {"accuracy": float(np.mean(v))},
            "metrics": {"accuracy": float(np.mean(t))},
            "correct": {"validation": hex_bits(v), "test": hex_bits(t)},
        }

    run = {**side(validation_bits, test_bits), "target_sparsity": 0.5}
    return {"validation_examples": sizes["validation"], "test_examples": sizes["test"],
            "metric": "accuracy", "dense": side(dense_validation, dense_test), "runs": [run]}  # fmt: skip


def test_a_report_carries_intervals_and_renders_them_with_the_warning():
    rng = np.random.default_rng(2)
    dense_v, dense_t = rng.random(48) > 0.5, rng.random(500) > 0.5
    report = _report(rng.random(48) > 0.4, rng.random(500) > 0.4, dense_v, dense_t)
    intervals = accuracy_intervals(report)
    (run,) = intervals["runs"]
    low, high = run["accuracy"]["test"]
    assert low < report["runs"][0]["metrics"]["accuracy"] < high
    gap_low, gap_high = run["minus_dense"]["validation"]
    assert gap_high - gap_low > 0.15  # 48 clips cannot tell a few points apart
    report |= {"intervals": intervals, "task": "t", "model": "m", "dataset": "d",
               "environment": {"machine": "x", "torch_threads": 2}, "latency_input": "one clip",
               "dense_kind": "linear probe"}  # fmt: skip
    figures = {
        "params": 10,
        "macs": 10,
        "disk_bytes": 10,
        "latency": {"median_s": 0.01, "repeats": 3},
    }
    report["dense"] |= figures
    report["runs"][0] |= figures | {"ratios": {"latency": 1.0}, "groups": [],
                                    "removed": {"params_removed_fraction": 0.5, "macs_removed_fraction": 0.5}}  # fmt: skip
    text = markdown(report)
    assert "**Warning.** Validation has 48 clips" in text
    assert f"[{low:.3f}, {high:.3f}]" in text
    assert "minus dense, in accuracy points (95% paired bootstrap over the clips)" in text
    assert accuracy_intervals({**report, "dense": {**report["dense"], "correct": None}}) == {}
