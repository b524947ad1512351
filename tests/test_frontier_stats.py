"""The frontier benchmark's statistics and their rendering: which test clips each run got right,
stored as hex bits in its JSON, the bootstrap interval over the clips that the docs quote, the
JSON's summary over seeds, the speedup cell's mean over the seeds timed, and the FSDD reference
section."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# The benchmark scripts import each other by module name, as they do when run as scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from frontier import bits_of, hex_bits, summarize  # noqa: E402
from render_frontier import _speedups, paired_interval  # noqa: E402

CLIPS = 400


def _row(*correct_by_seed: np.ndarray) -> dict:
    return {
        "seeds": list(range(len(correct_by_seed))),
        "correct_by_seed": {s: hex_bits(c) for s, c in enumerate(correct_by_seed)},
    }


def _first(n: int) -> np.ndarray:
    return np.arange(CLIPS) < n


@pytest.mark.parametrize("count", [1, 7, 8, 9, 507])
def test_hex_bits_round_trip(count):
    bits = np.random.default_rng(count).random(count) < 0.5
    assert hex_bits(bits) == hex_bits(bits_of(hex_bits(bits), count))
    assert (bits_of(hex_bits(bits), count) == bits).all()


def test_paired_interval_is_exact_where_every_clip_agrees():
    assert paired_interval(_row(_first(300)), _row(_first(300)), CLIPS) == (0.0, 0.0)
    assert paired_interval(_row(_first(CLIPS)), _row(_first(0)), CLIPS) == (1.0, 1.0)
    # Each side's clips are averaged over its seeds first: right in one seed of two is half.
    assert paired_interval(_row(_first(CLIPS), _first(0)), _row(_first(0)), CLIPS) == (0.5, 0.5)


def test_paired_interval_covers_the_gap_and_counts_only_disagreements():
    # 300 vs 200 right, the 200 among the 300: the gap is 0.25 and only 100 clips disagree.
    low, high = paired_interval(_row(_first(300)), _row(_first(200)), CLIPS)
    assert 0.15 < low < 0.25 < high < 0.35
    # The same accuracies, the reference right on the last 200 clips instead: 300 clips
    # disagree, so the same gap is less certain.
    wide_low, wide_high = paired_interval(_row(_first(300)), _row(~_first(200)), CLIPS)
    assert wide_low < 0.25 < wide_high and wide_high - wide_low > 1.5 * (high - low)


def test_paired_interval_needs_every_seed_clips():
    partial = {**_row(_first(300), _first(100)), "seeds": [0, 1, 2]}
    assert paired_interval(partial, _row(_first(200)), CLIPS) is None
    assert paired_interval(_row(_first(300)), {"seeds": [0], "correct_by_seed": {}}, CLIPS) is None


def _timed(b1: float, b8: float) -> dict:
    return {"latency": {"batch_1": {"speedup": b1}, "batch_8": {"speedup": b8}}}


def test_speedup_cell_is_the_mean_over_the_seeds_timed():
    latency = {"rows": {"s0": _timed(2.0, 3.0), "s2": _timed(3.0, 5.0)}}
    # s1 was not timed: it is left out of the mean instead of counting as zero.
    assert _speedups({"keys": ["s0", "s1", "s2"]}, latency) == "2.50 | 4.00"
    assert _speedups({"keys": ["s1"]}, latency) == "- | -"
    assert _speedups({"keys": ["s0"]}, None) == "- | -"


def test_summary_gives_mean_and_spread_over_the_seeds_of_each_point():
    def run(seed, test, target=0.5, lora=None):
        key = json.dumps({"method": "mask_macs", "seed": seed, "target": target}, sort_keys=True)
        out = {
            "key": key,
            "seed": seed,
            "accuracy": {"test": test, "validation": test + 0.1},
            "macs_removed_fraction": target,
        }
        return {**out, "lora": {"accuracy": {"test": lora}}} if lora is not None else out

    runs = [run(0, 0.5, lora=0.7), run(1, 0.7, lora=0.8), run(0, 0.4, target=0.9)]
    runs.append({**run(2, 0.0), "error": "RuntimeError()"})  # failed runs are left out
    by_target = {s["point"]["target"]: s for s in summarize(runs)}
    fifty = by_target[0.5]
    assert fifty["seeds"] == [0, 1] and "seed" not in fifty["point"]
    assert fifty["test"]["mean"] == pytest.approx(0.6)
    assert fifty["test"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert fifty["test"]["spread"] == pytest.approx(0.2)  # max - min over the seeds
    assert fifty["validation"]["mean"] == pytest.approx(0.7)
    assert fifty["lora_test"] == pytest.approx(0.75)
    assert by_target[0.9]["test"]["std"] is None and by_target[0.9]["lora_test"] is None


def test_out_of_source_section_pairs_every_setting_with_its_probe_and_names_flips():
    from render_sources import paired_interval as paired_over_seeds
    from render_sources import sources_section

    rng = np.random.default_rng(0)
    splits = ("validation_in_source", "test_in_source", "validation", "test")

    def run(method, seed, rate_in, rate_out, last_layer=None):
        key = {
            "model": "m",
            "method": method,
            "seed": seed,
            "target": 0.5,
            "last_layer": last_layer,
        }
        correct = {
            s: rng.random(CLIPS) < (rate_in if s.endswith("in_source") else rate_out)
            for s in splits
        }
        return {
            "key": json.dumps(key, sort_keys=True),
            "seed": seed,
            "macs_removed_fraction": 0.0 if method == "linear_probe" else 0.5,
            "accuracy": {s: float(c.mean()) for s, c in correct.items()},
            "correct": {s: hex_bits(c) for s, c in correct.items()},
        }

    # The masks win in source and lose out of source: the ranking flips.
    runs = [run("linear_probe", s, 0.6, 0.5) for s in range(3)]
    runs += [run("mask_macs", s, 0.8, 0.3) for s in range(3)]
    frontier = {
        "runs": runs,
        "examples": {"train": 10, **dict.fromkeys(splits, CLIPS)},
        "window_s": 1,
        "batch_size": 8,
        "learning_rate": 1e-3,
    }
    text = "\n".join(sources_section(frontier))
    assert "| m linear_probe | 3 | 0.0% |" in text and "| m mask_macs 0.5 | 3 | 50.0% |" in text
    masks_row = next(line for line in text.splitlines() if line.startswith("| m mask_macs 0.5 | +"))
    in_source, out_val, _ = (cell.strip() for cell in masks_row.split("|")[2:5])
    assert in_source.startswith("+2") and out_val.startswith("-2")  # +20 and -20 points
    assert "Pairs whose order flips out of source: 1." in text
    low, high = paired_over_seeds(runs[3:], runs[:3], "validation", CLIPS)
    assert low < -0.2 < high and high - low < 0.2
