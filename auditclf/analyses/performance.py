"""Performance on the clean test split: overall, per class, confusion, top-k.

Point estimates are scikit-learn's (``accuracy_score``, ``balanced_accuracy_score``,
``precision_recall_fscore_support``, ``f1_score``, ``confusion_matrix``,
``top_k_accuracy_score``); 95% intervals are percentile bootstrap intervals
over test rows (seeded), see :mod:`auditclf.analyses.bootstrap`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part
from auditclf.analyses.bootstrap import bootstrap_draws, percentile_interval
from auditclf.evidence import probabilities

WEAK_CLASS_GAP = 0.05  # a class whose recall trails accuracy by more than this is named


def _put_with_ci(
    section: Section, key: str, value: float, draws: np.ndarray | None, level: float
) -> tuple[float, float] | None:
    section.put(key, value)
    if draws is None:
        return None
    low, high = percentile_interval(draws, level)
    section.put(f"{key}.ci_low", low, reason="no bootstrap resample had this class")
    section.put(f"{key}.ci_high", high, reason="no bootstrap resample had this class")
    return low, high


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


@ANALYSES.register("performance", summary="accuracy, per-class metrics, confusion, top-k")
def performance(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    cfg, classes = ctx.config, ctx.classes
    labels = list(range(len(classes)))
    y_true = table["label"].to_numpy(np.int64)
    y_pred = table["pred"].to_numpy(np.int64)
    correct = (y_true == y_pred).astype(np.float64)
    section = Section("performance", "Performance")
    draws = (
        bootstrap_draws(y_true, correct, len(classes), n_boot=cfg.bootstrap, seed=ctx.seed)
        if cfg.bootstrap
        else None
    )
    level = cfg.confidence_level

    accuracy = accuracy_score(y_true, y_pred)
    acc_ci = _put_with_ci(
        section, "performance.accuracy", accuracy, draws.accuracy if draws else None, level
    )
    present = np.unique(y_true)
    balanced = balanced_accuracy_score(y_true, y_pred) if len(present) else float("nan")
    bal_ci = _put_with_ci(
        section,
        "performance.balanced_accuracy",
        balanced,
        draws.balanced_accuracy if draws else None,
        level,
    )
    section.put(
        "performance.f1_macro",
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
    )
    section.put(
        "performance.f1_weighted",
        f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
    )
    proba = probabilities(table)
    for k in cfg.top_k:
        if 1 < k < len(classes):
            section.put(
                f"performance.top_k_accuracy@{k}",
                top_k_accuracy_score(y_true, proba, k=k, labels=labels),
            )

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan
    )
    rows = []
    for i, name in enumerate(classes):
        prefix = f"performance.class.{key_part(name)}"
        section.put(
            f"{prefix}.precision", precision[i], reason=f"class {name!r} was never predicted"
        )
        section.put(f"{prefix}.recall", recall[i], reason=f"class {name!r} has no test images")
        section.put(f"{prefix}.f1", f1[i], reason=f"class {name!r}: precision or recall undefined")
        section.put(f"{prefix}.support", support[i])
        ci = (
            percentile_interval(draws.recall[:, i], level)
            if draws is not None and support[i]
            else None
        )
        rows.append([name, precision[i], recall[i], ci, f1[i], int(support[i])])
    section.tables["per_class"] = Table(
        ["class", "precision", "recall", f"recall {level:.0%} CI", "F1", "support"],
        rows,
        caption="Per-class precision, recall and F1 on the test split.",
    )

    valid = ~np.isnan(recall)
    worst = int(np.nanargmin(recall)) if valid.any() else None
    worst_ci = None
    if worst is not None:
        worst_ci = _put_with_ci(
            section,
            "performance.worst_class_recall",
            recall[worst],
            draws.worst_class_recall if draws else None,
            level,
        )
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts / counts.sum(axis=1, keepdims=True)
    section.figures["confusion"] = {
        "kind": "confusion",
        "labels": classes,
        "counts": counts.tolist(),
        "normalised": np.nan_to_num(normalised).tolist(),
    }
    section.headline = (
        f"The model classifies {accuracy:.1%}{_fmt_ci(acc_ci)} of the {len(y_true)} test images "
        f"correctly (balanced accuracy {balanced:.1%}{_fmt_ci(bal_ci)})"
        + (
            f"; its weakest class is {classes[worst]!r} with recall {recall[worst]:.1%}"
            f"{_fmt_ci(worst_ci)}."
            if worst is not None
            else "."
        )
    )
    for i in np.flatnonzero(valid & (recall < accuracy - WEAK_CLASS_GAP)):
        section.find(
            "warning",
            f"class {classes[i]!r} has recall {recall[i]:.1%}, "
            f"{accuracy - recall[i]:.1%} below overall accuracy; most often confused "
            f"with {_top_confusion(counts, i, classes)}",
            metric=f"performance.class.{key_part(classes[i])}.recall",
        )
    for i in np.flatnonzero(counts.sum(axis=0) == 0):
        section.find("warning", f"class {classes[i]!r} is never predicted on the test split")
    section.method = (
        f"scikit-learn metrics on {len(y_true)} test images; intervals are {level:.0%} "
        f"percentile bootstrap intervals over {cfg.bootstrap} resamples of test rows "
        f"(seed {ctx.seed}). Top-k accuracy counts a hit when the true class is among the k "
        "most probable. Precision of a class never predicted is undefined (null), not 0."
    )
    return section


def _top_confusion(counts: np.ndarray, row: int, classes: list[str]) -> str:
    off = counts[row].copy()
    off[row] = 0
    if off.sum() == 0:
        return "no other class"
    j = int(off.argmax())
    return f"{classes[j]!r} ({int(off[j])} of {int(counts[row].sum())})"
