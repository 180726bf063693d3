"""Group × cell counts: the sufficient statistics of the fairness analysis.

Every fairness metric of a group depends on its rows only through counts:
(true class, predicted class) pairs for accuracy, recalls and one-vs-rest
rates; (correct, confidence bin) pairs with their confidence sums for ECE;
(not attacked, attacked and right, attacked and wrong) for robust accuracy.
The functions here compute the metrics from such counts, vectorised over
leading axes (bootstrap draws, groups), and draw the counts of row resamples:
resampling N rows with replacement gives cell counts distributed
Multinomial(N, observed counts / N), so a bootstrap needs no rows at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditclf.analyses.bootstrap import percentile_interval

CHUNK_CELLS = 5_000_000  # bootstrap counts held at once (draws × cells)


def confusion_rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of (..., K, K) confusion counts (rows true, columns predicted), NaN if undefined.

    The same values as the MetricFrame metrics of :mod:`auditclf.analyses.fairness` (a test
    checks it); the bootstrap evaluates this on every draw.
    """
    counts = counts.astype(np.float64)
    n = counts.sum(axis=(-2, -1))
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    support = counts.sum(axis=-1)
    predicted = counts.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / support
        present = support > 0
        balanced = np.where(present, recall, 0.0).sum(axis=-1) / present.sum(axis=-1)
        return {
            "accuracy": tp.sum(axis=-1) / n,
            "balanced_accuracy": balanced,
            "macro_recall": np.where(present.all(axis=-1), recall.mean(axis=-1), np.nan),
            "tpr": recall,
            "fpr": (predicted - tp) / (n[..., None] - support),
            "selection_rate": predicted / n[..., None],
        }


def ece_from_cells(counts: np.ndarray, mean_confidence: np.ndarray) -> np.ndarray:
    """ECE of (..., 2, bins) counts of (wrong, correct) per bin, given each cell's mean
    confidence: Σ_bins |hits − Σ confidence| / images."""
    counts = counts.astype(np.float64)
    hits = counts[..., 1, :]
    confidence = (counts * mean_confidence).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(hits - confidence).sum(axis=-1) / counts.sum(axis=(-2, -1))


def spread(values: np.ndarray, eligible: np.ndarray) -> dict[str, np.ndarray]:
    """min, max, difference and ratio over the last axis (groups), eligible and defined only.

    NaN where no group (min, max) or fewer than two groups (difference, ratio) qualify.
    """
    kept = np.where(eligible, values, np.nan)
    defined = np.isfinite(kept).sum(axis=-1)
    low = np.fmin.reduce(kept, axis=-1)
    high = np.fmax.reduce(kept, axis=-1)
    two = defined >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "min": low,
            "max": high,
            "difference": np.where(two, high - low, np.nan),
            "ratio": np.where(two & (high > 0), low / high, np.nan),
        }


def multinomial_draws(counts: np.ndarray, n_boot: int, rng: np.random.Generator):
    """Yield (b, *counts.shape) cell counts of row resamples, ``n_boot`` in all."""
    total = int(counts.sum())
    if total == 0 or n_boot == 0:
        return
    p = counts.ravel() / total
    per_chunk = max(1, CHUNK_CELLS // max(p.size, 1))
    for start in range(0, n_boot, per_chunk):
        b = min(per_chunk, n_boot - start)
        yield rng.multinomial(total, p, size=b).reshape(b, *counts.shape)


@dataclass
class GroupMetric:
    """One metric of one grouping: per-group values, why a value is missing, bootstrap draws.

    ``values`` is (G,) and NaN where undefined; ``eligible`` marks the groups
    large enough to report and aggregate; ``draws`` is (B, G) or None.
    """

    key: str  # after ``fairness.<attribute>.``: "accuracy", "class.3.tpr", "fgsm@0.1.accuracy"
    title: str
    values: np.ndarray
    eligible: np.ndarray
    reasons: list[str]
    draws: np.ndarray | None
    lower_is_better: bool = False
    unit: str = "test images"
    overall: float = float("nan")
    aggregates: dict = field(default_factory=dict)
    interval: tuple[float, float] = (float("nan"), float("nan"))

    def summarise(self, level: float) -> None:
        """Fill ``aggregates`` (min, max, difference, ratio) and the difference's interval."""
        self.aggregates = {k: float(v) for k, v in spread(self.values, self.eligible).items()}
        if self.draws is not None:
            drawn = spread(self.draws, self.eligible)["difference"]
            self.interval = percentile_interval(drawn, level)

    def worst(self) -> int | None:
        """Index of the worst eligible group with a value; None if there is none, or if
        every such group has the same value (no group is worse)."""
        kept = np.where(self.eligible & np.isfinite(self.values), self.values, np.nan)
        finite = kept[np.isfinite(kept)]
        if finite.size == 0 or (finite.size > 1 and finite.max() == finite.min()):
            return None
        return int(np.nanargmax(kept) if self.lower_is_better else np.nanargmin(kept))

    def best(self) -> int | None:
        """Index of the best eligible group with a value (the other end of the gap); None
        when :meth:`worst` is (no group differs)."""
        if self.worst() is None:
            return None
        kept = np.where(self.eligible & np.isfinite(self.values), self.values, np.nan)
        return int(np.nanargmin(kept) if self.lower_is_better else np.nanargmax(kept))

    def tied_with_worst(self) -> list[int]:
        """Every eligible group at the worst group's value (more than one: a tie, and no
        single group is "the lowest"); [] when :meth:`worst` is None."""
        worst = self.worst()
        if worst is None:
            return []
        kept = self.eligible & np.isfinite(self.values)
        return [int(i) for i in np.flatnonzero(kept & (self.values == self.values[worst]))]
