"""Calibration: do confidences match how often the model is right?

ECE and MCE (Guo et al., "On Calibration of Modern Neural Networks", 2017):
the top-class confidence is binned into ``ece_bins`` equal-width bins
(0, 1/B], (1/B, 2/B], ...; ECE is the count-weighted mean of
|accuracy − mean confidence| over the bins, MCE the largest such gap over
non-empty bins. Brier score is scikit-learn's multiclass ``brier_score_loss``
(sum over classes of squared error, range [0, 2]); NLL is ``log_loss``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table
from auditclf.analyses.bootstrap import percentile_interval, resampled_rows
from auditclf.evidence import probabilities

WELL_CALIBRATED_ECE = 0.05


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence in (0, 1]: bin b covers (b/B, (b+1)/B]; 0 goes to bin 0."""
    # Compare with the edges themselves: ceil(confidence * B) puts a value on an edge in the
    # bin above when the product rounds up (0.28 * 25 = 7.000000000000001).
    inner_edges = np.arange(1, n_bins) / n_bins
    return np.searchsorted(inner_edges, confidence, side="left")


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> dict:
    """Per-bin count, mean confidence and accuracy (NaN for empty bins)."""
    bins = bin_index(confidence, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    return {"count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[float, float]:
    """(ECE, MCE) with equal-width bins; both in [0, 1]."""
    stats = reliability_bins(confidence, correct, n_bins)
    filled = stats["count"] > 0
    gaps = np.abs(stats["accuracy"][filled] - stats["confidence"][filled])
    ece = float(np.sum(stats["count"][filled] / len(confidence) * gaps))
    return ece, float(gaps.max()) if gaps.size else float("nan")


def ece_bootstrap(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int, *, n_boot: int, seed: int
) -> np.ndarray:
    """ECE of ``n_boot`` row resamples (seeded), all at once.

    Uses ECE = Σ_b |Σ correct_b − Σ confidence_b| / N, the same sum as
    :func:`expected_calibration_error` written without per-bin means.
    """
    bins = bin_index(confidence, n_bins)
    n = len(confidence)
    draws = []
    for idx in resampled_rows(n, n_boot=n_boot, seed=seed, stream="ece"):
        b = idx.shape[0]
        cells = (np.arange(b)[:, None] * n_bins + bins[idx]).ravel()
        total = b * n_bins
        conf_sum = np.bincount(cells, weights=confidence[idx].ravel(), minlength=total)
        hit_sum = np.bincount(cells, weights=correct[idx].ravel(), minlength=total)
        draws.append(np.abs(hit_sum - conf_sum).reshape(b, n_bins).sum(axis=1) / n)
    return np.concatenate(draws) if draws else np.empty(0)


@ANALYSES.register("calibration")
def calibration(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    n_bins = ctx.config.ece_bins
    labels = list(range(len(ctx.classes)))
    y_true = table["label"].to_numpy(np.int64)
    proba = probabilities(table)
    confidence = table["confidence"].to_numpy(np.float64)
    correct = (table["pred"].to_numpy(np.int64) == y_true).astype(np.float64)
    section = Section("calibration", "Calibration")
    ece, mce = expected_calibration_error(confidence, correct, n_bins)
    section.put("performance.ece", ece)
    level = ctx.config.confidence_level
    ece_ci = None
    if ctx.config.bootstrap:
        draws = ece_bootstrap(
            confidence, correct, n_bins, n_boot=ctx.config.bootstrap, seed=ctx.seed
        )
        ece_ci = percentile_interval(draws, level)
        section.put_interval("performance.ece", ece_ci)
    section.put("performance.mce", mce, reason="no test images")
    section.put(
        "performance.brier", brier_score_loss(y_true, proba, labels=labels, scale_by_half=False)
    )
    section.put("performance.nll", log_loss(y_true, np.clip(proba, 1e-15, 1.0), labels=labels))
    mean_conf, accuracy = float(confidence.mean()), float(correct.mean())
    section.put("performance.mean_confidence", mean_conf)
    stats = reliability_bins(confidence, correct, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    section.figures["reliability"] = {
        "kind": "reliability",
        "edges": edges.tolist(),
        "count": stats["count"].tolist(),
        "confidence": np.nan_to_num(stats["confidence"], nan=-1).tolist(),
        "accuracy": np.nan_to_num(stats["accuracy"], nan=-1).tolist(),
    }
    section.figures["confidence_histogram"] = {
        "kind": "confidence_histogram",
        "edges": edges.tolist(),
        "correct": np.bincount(
            bin_index(confidence[correct == 1], n_bins), minlength=n_bins
        ).tolist(),
        "wrong": np.bincount(
            bin_index(confidence[correct == 0], n_bins), minlength=n_bins
        ).tolist(),
    }
    section.tables["summary"] = Table(
        ["metric", "value", f"{level:.0%} CI", "key"],
        [
            ["expected calibration error (ECE)", ece, ece_ci, "performance.ece"],
            ["maximum calibration error (MCE)", mce, None, "performance.mce"],
            [
                "Brier score (0 best, 2 worst)",
                section.metrics["performance.brier"],
                None,
                "performance.brier",
            ],
            [
                "negative log-likelihood",
                section.metrics["performance.nll"],
                None,
                "performance.nll",
            ],
            ["mean confidence", mean_conf, None, "performance.mean_confidence"],
        ],
        caption="Calibration metrics on the test split.",
    )
    section.tables["bins"] = Table(
        ["confidence bin", "images", "mean confidence", "accuracy", "gap"],
        [
            [
                f"({edges[b]:.2f}, {edges[b + 1]:.2f}]",
                int(stats["count"][b]),
                stats["confidence"][b],
                stats["accuracy"][b],
                stats["accuracy"][b] - stats["confidence"][b],
            ]
            for b in range(n_bins)
            if stats["count"][b]
        ],
        caption="Non-empty confidence bins; gap = accuracy − mean confidence.",
    )
    filled = stats["count"] > 0
    gaps = np.where(filled, np.abs(stats["accuracy"] - stats["confidence"]), -1.0)
    worst_bin_count = int(stats["count"][int(np.argmax(gaps))]) if filled.any() else 0
    direction = "over-confident" if mean_conf > accuracy else "under-confident"
    # Judge on the interval when there is one: a high ECE from a handful of images is noise.
    clearly_off = ece > WELL_CALIBRATED_ECE and (ece_ci is None or ece_ci[0] > WELL_CALIBRATED_ECE)
    if ece <= WELL_CALIBRATED_ECE:
        quality = "well calibrated"
    elif clearly_off:
        quality = direction
    else:
        quality = f"possibly {direction} (the interval includes {WELL_CALIBRATED_ECE})"
    section.headline = (
        f"The model is {quality}: expected calibration error {ece:.3f}"
        + (f" [{ece_ci[0]:.3f}, {ece_ci[1]:.3f}]" if ece_ci else "")
        + f" (mean confidence {mean_conf:.1%} vs accuracy {accuracy:.1%}); "
        f"the largest gap in one bin is {mce:.3f}"
        f" (a bin of {worst_bin_count} image{'s' if worst_bin_count != 1 else ''})."
    )
    if clearly_off:
        section.find(
            "warning",
            f"confidences are {direction}: ECE {ece:.3f} exceeds "
            f"{WELL_CALIBRATED_ECE}; probabilities should not be read as chances "
            "without recalibration (e.g. temperature scaling)",
            metric="performance.ece",
        )
    section.method = (
        f"Top-class confidence binned into {n_bins} equal-width bins; ECE = Σ (n_b/N)·|acc_b − "
        "conf_b|, MCE = max_b |acc_b − conf_b| (Guo et al. 2017). Brier: scikit-learn "
        "brier_score_loss, multiclass sum of squares (range 0–2). NLL: scikit-learn log_loss."
        + (
            f" ECE interval: {level:.0%} percentile bootstrap over {ctx.config.bootstrap} "
            f"resamples of test rows (seed {ctx.seed})."
            if ece_ci
            else ""
        )
    )
    return section
