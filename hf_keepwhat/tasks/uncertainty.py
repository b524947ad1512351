"""How sure an accuracy is: its 95% interval over the clips, the paired interval of a difference,
and how large a difference a split can tell apart.

A user's folder gives a few dozen validation clips, where one accuracy moves by +-13 points with
the clips drawn; reports state that instead of letting "0.61 against 0.49" read as a finding.
Wilson's interval is scipy's `binomtest(...).proportion_ci(method="wilson")`; the paired
bootstrap (clips and, where there are several, seeds resampled together) is not in scipy for
paired bit vectors, so it is written here.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

Z95 = 1.959964


def hex_bits(values) -> str:
    """Booleans (one per clip, in split order) as a compact hex string (`bits_of` reads it).

    Args:
        values: A sequence of booleans.
    """
    return np.packbits(np.asarray(values, dtype=bool)).tobytes().hex()


def bits_of(hex_string: str, count: int) -> np.ndarray:
    """The `count` booleans of a hex string written by `hex_bits`.

    Args:
        hex_string: The packed bits.
        count: How many clips they are for.
    """
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_string), dtype=np.uint8))[:count]
    return bits.astype(bool)


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """95% Wilson interval of an accuracy of `correct` out of `total` clips.

    Args:
        correct: Clips classified right.
        total: Clips scored (at least 1).
    """
    if total < 1:
        raise ValueError("An interval needs at least one clip.")
    interval = binomtest(int(correct), int(total)).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


def paired_interval(
    a: np.ndarray, b: np.ndarray, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of mean accuracy(a) - mean accuracy(b) on the same clips: the clips
    are resampled (the same draw for both sides) and, with several runs a side, the runs too.

    Args:
        a, b: Correctness, `(clips,)` or `(runs, clips)` booleans, the clips in the same order.
        resamples: Bootstrap draws.
        seed: The generator's seed (a report renders the same every time).
    """
    sides = [np.atleast_2d(np.asarray(x, dtype=float)) for x in (a, b)]
    clips = sides[0].shape[1]
    if sides[1].shape[1] != clips:
        raise ValueError(f"The two sides score {clips} and {sides[1].shape[1]} clips: pair them.")
    rng = np.random.default_rng(seed)
    gaps = np.empty(resamples)
    for i in range(resamples):
        chosen = rng.integers(0, clips, size=clips)
        means = [s[rng.integers(0, len(s), size=len(s))][:, chosen].mean() for s in sides]
        gaps[i] = means[0] - means[1]
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


def resolution_points(total: int, accuracy: float = 0.5) -> float:
    """Half the width, in accuracy points, of the 95% interval of one accuracy near `accuracy`
    on `total` clips: two accuracies closer than this are not told apart by these clips.

    Args:
        total: Clips in the split.
        accuracy: Where the accuracy lies (0.5, the widest, by default).
    """
    return 100 * Z95 * (accuracy * (1 - accuracy) / max(total, 1)) ** 0.5
