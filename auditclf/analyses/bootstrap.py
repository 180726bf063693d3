"""Confidence intervals: exact for proportions, seeded resampling for the rest.

- A proportion (accuracy, one class's recall) gets the exact Clopper–Pearson
  interval: it never collapses to zero width at 0% or 100%, where the
  percentile bootstrap would (50 of 50 correct is not proof of 100%).
- Balanced accuracy and worst-class recall combine per-class recalls. Their
  intervals come from ``n_draws`` seeded draws of every class's recall from its
  Jeffreys posterior Beta(hits + ½, misses + ½) (a parametric bootstrap), taking
  the mean or the minimum per draw. The minimum accounts for not knowing in
  advance which class is worst, so its interval sits below the worst class's
  own interval.
- Statistics that are not built from proportions (ECE) use the percentile
  bootstrap over test rows, all resamples at once with one ``np.bincount``.
- The difference of two independent proportions (test accuracy − shift-set
  accuracy) gets Newcombe's hybrid score interval (Newcombe 1998, method 10),
  built from the two Wilson score intervals: closed form, no draws, and it
  stays inside [−1, 1] at 0% and 100%.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta, norm

from auditclf.seeding import numpy_rng

CHUNK_CELLS = 20_000_000  # resample indices held at once (B × n)


def clopper_pearson(hits: int, n: int, level: float) -> tuple[float, float]:
    """Exact binomial interval for ``hits`` successes in ``n`` trials; NaNs when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(1.0 - tail, hits + 1, n - hits))
    return low, high


def recall_posterior_draws(
    support: np.ndarray, hits: np.ndarray, *, n_draws: int, seed: int
) -> np.ndarray:
    """(n_draws, K) draws of each class's recall from Beta(hits + ½, misses + ½).

    Classes without test images (support 0) are NaN in every draw.
    """
    rng = numpy_rng(seed, "recall-posterior")
    support = np.asarray(support, dtype=np.float64)
    hits = np.asarray(hits, dtype=np.float64)
    present = support > 0
    draws = np.full((n_draws, len(support)), np.nan)
    draws[:, present] = rng.beta(
        hits[present] + 0.5,
        support[present] - hits[present] + 0.5,
        size=(n_draws, int(present.sum())),
    )
    return draws


def resampled_rows(n: int, *, n_boot: int, seed: int, stream: str):
    """Yield (B, n) index arrays of rows drawn with replacement, ``n_boot`` rows in all."""
    rng = numpy_rng(seed, "bootstrap", stream)
    per_chunk = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, n_boot, per_chunk):
        yield rng.integers(0, n, size=(min(per_chunk, n_boot - start), n))


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``samples`` (NaNs ignored)."""
    tail = (1.0 - level) / 2.0 * 100.0
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def wilson(hits: int, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval of ``hits`` successes in ``n`` trials; NaNs when n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(1.0 - (1.0 - level) / 2.0))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def newcombe_difference(
    hits_a: int, n_a: int, hits_b: int, n_b: int, level: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p_a − p_b, two independent proportions (method
    10 of Newcombe, "Interval estimation for the difference between independent
    proportions", Statistics in Medicine 1998); NaNs when either has no trials."""
    if n_a == 0 or n_b == 0:
        return float("nan"), float("nan")
    p_a, p_b = hits_a / n_a, hits_b / n_b
    low_a, high_a = wilson(hits_a, n_a, level)
    low_b, high_b = wilson(hits_b, n_b, level)
    difference = p_a - p_b
    low = difference - np.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + np.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return float(low), float(high)


def newcombe_paired_difference(
    both: int, only_a: int, only_b: int, neither: int, level: float
) -> tuple[float, float]:
    """Newcombe's score interval of p_a − p_b for two proportions measured on the same
    trials (method 10 of Newcombe, "Improved confidence intervals for the difference between
    binomial proportions based on paired data", Statistics in Medicine 1998): each
    proportion's Wilson interval, combined with the correlation ``phi`` of the 2 × 2 table
    (``both`` hits, hits of ``a`` only, of ``b`` only, ``neither``); NaNs without trials."""
    n = both + only_a + only_b + neither
    if n == 0:
        return float("nan"), float("nan")
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    low_a, high_a = wilson(both + only_a, n, level)
    low_b, high_b = wilson(both + only_b, n, level)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / np.sqrt(margins) if margins > 0 else 0.0
    difference = p_a - p_b
    below = (p_a - low_a) ** 2 - 2 * phi * (p_a - low_a) * (high_b - p_b) + (high_b - p_b) ** 2
    above = (high_a - p_a) ** 2 - 2 * phi * (high_a - p_a) * (p_b - low_b) + (p_b - low_b) ** 2
    low, high = difference - np.sqrt(max(below, 0.0)), difference + np.sqrt(max(above, 0.0))
    return float(low), float(high)


def bootstrap_means(values: np.ndarray, n_boot: int, seed: int, stream: str) -> np.ndarray:
    """(n_boot, columns): the column means of ``values`` (n, columns) over ``n_boot`` seeded
    resamples of its rows, each resample as counts per row (one product per chunk)."""
    n = len(values)
    rng = numpy_rng(seed, "bootstrap", stream)
    per_chunk = max(1, 2_000_000 // max(n, 1))
    draws = []
    for start in range(0, n_boot, per_chunk):
        b = min(per_chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        weights = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n)
        # einsum's own loops, not BLAS: a BLAS product sums in an order that depends on its
        # threads, and the intervals must not change with the machine's (or torchrun's) count
        counts = weights.reshape(b, n).astype(values.dtype)
        draws.append(np.einsum("bn,nc->bc", counts, values, optimize=False) / n)
    return np.concatenate(draws) if draws else np.empty((0, values.shape[1]))
