"""Performance on the clean test split: overall, per class, confusion, top-k.

Point estimates are scikit-learn's (``accuracy_score``, ``balanced_accuracy_score``,
``precision_recall_fscore_support``, ``f1_score``, ``confusion_matrix``,
``top_k_accuracy_score``); intervals are exact for proportions and seeded
draws for the composite metrics, see :mod:`auditclf.analyses.bootstrap`.
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
from auditclf.analyses.bootstrap import (
    clopper_pearson,
    percentile_interval,
    recall_posterior_draws,
)
from auditclf.evidence import probabilities
from auditclf.keys.families import TOP_K_ACCURACY

WEAK_CLASS_GAP = 0.05  # a class whose recall trails accuracy by more than this is named


def _put_interval(section: Section, key: str, interval: tuple[float, float] | None) -> None:
    if interval is not None:
        section.put_interval(key, interval, reason="no test images")


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


@ANALYSES.register("performance")
def performance(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    cfg, classes = ctx.config, ctx.classes
    level = cfg.confidence_level
    labels = list(range(len(classes)))
    y_true = table["label"].to_numpy(np.int64)
    y_pred = table["pred"].to_numpy(np.int64)
    section = Section("performance", "Performance")

    accuracy = accuracy_score(y_true, y_pred)
    hits = int((y_true == y_pred).sum())
    acc_ci = clopper_pearson(hits, len(y_true), level)
    section.put("performance.accuracy", accuracy)
    _put_interval(section, "performance.accuracy", acc_ci)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=np.nan
    )
    class_hits = np.rint(np.nan_to_num(recall) * support).astype(np.int64)
    draws = (
        recall_posterior_draws(support, class_hits, n_draws=cfg.bootstrap, seed=ctx.seed)
        if cfg.bootstrap
        else None
    )
    balanced = balanced_accuracy_score(y_true, y_pred) if len(y_true) else float("nan")
    bal_ci = percentile_interval(np.nanmean(draws, axis=1), level) if draws is not None else None
    section.put("performance.balanced_accuracy", balanced)
    _put_interval(section, "performance.balanced_accuracy", bal_ci)
    section.put(
        "performance.f1_macro",
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
    )
    section.put(
        "performance.f1_weighted",
        f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0),
    )
    proba = probabilities(table)
    top_k = [k for k in cfg.top_k if 1 < k < len(classes)]
    for k in top_k:
        section.put(
            TOP_K_ACCURACY.key(k=k), top_k_accuracy_score(y_true, proba, k=k, labels=labels)
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
        ci = clopper_pearson(int(class_hits[i]), int(support[i]), level) if support[i] else None
        _put_interval(section, f"{prefix}.recall", ci)
        rows.append([name, precision[i], recall[i], ci, f1[i], int(support[i])])
    section.tables["per_class"] = Table(
        ["class", "precision", "recall", f"recall {level:.0%} CI", "F1", "support"],
        rows,
        caption="Per-class precision, recall and F1 on the test split; recall intervals are "
        "exact (Clopper–Pearson).",
    )

    valid = ~np.isnan(recall)
    worst = int(np.nanargmin(recall)) if valid.any() else None
    worst_ci = None
    if worst is not None:
        section.put("performance.worst_class_recall", recall[worst])
        if draws is not None:
            worst_ci = percentile_interval(np.nanmin(draws, axis=1), level)
            _put_interval(section, "performance.worst_class_recall", worst_ci)
    section.tables["overall"] = Table(
        ["metric", "value", f"{level:.0%} CI", "key"],
        [
            ["accuracy", accuracy, acc_ci, "performance.accuracy"],
            ["balanced accuracy", balanced, bal_ci, "performance.balanced_accuracy"],
            [
                "worst-class recall",
                recall[worst] if worst is not None else None,
                worst_ci,
                "performance.worst_class_recall",
            ],
            [
                "F1, macro average",
                section.metrics["performance.f1_macro"],
                None,
                "performance.f1_macro",
            ],
            [
                "F1, weighted by support",
                section.metrics["performance.f1_weighted"],
                None,
                "performance.f1_weighted",
            ],
        ]
        + [
            [
                f"top-{k} accuracy",
                section.metrics[TOP_K_ACCURACY.key(k=k)],
                None,
                TOP_K_ACCURACY.key(k=k),
            ]
            for k in top_k
        ],
        caption="Overall metrics on the test split.",
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
            f"; its weakest class is {classes[worst]!r} with recall {recall[worst]:.1%} "
            f"({int(class_hits[worst])} of {int(support[worst])})."
            if worst is not None
            else "."
        )
    )
    for i in np.flatnonzero(valid & (recall < accuracy - WEAK_CLASS_GAP)):
        section.find(
            "warning",
            f"class {classes[i]!r} has recall {recall[i]:.1%}, "
            f"{100 * (accuracy - recall[i]):.1f} points below overall accuracy; most often "
            f"confused with {_top_confusion(counts, i, classes)}",
            metric=f"performance.class.{key_part(classes[i])}.recall",
        )
    for i in np.flatnonzero(counts.sum(axis=0) == 0):
        section.find("warning", f"class {classes[i]!r} is never predicted on the test split")
    draws_text = (
        f"Balanced accuracy and worst-class recall: {level:.0%} intervals from {cfg.bootstrap} "
        f"seeded draws (seed {ctx.seed}) of every class's recall from its Jeffreys posterior "
        "Beta(hits + ½, misses + ½), taking the mean or the minimum per draw; the minimum "
        "allows for not knowing in advance which class is worst, so that interval sits below "
        "the worst class's own. "
        if cfg.bootstrap
        else ""
    )
    section.method = (
        f"scikit-learn metrics on {len(y_true)} test images. Accuracy and per-class recall "
        f"carry exact {level:.0%} Clopper–Pearson intervals (they do not collapse at 0% or "
        f"100%). {draws_text}Top-k accuracy counts a hit when the true class is among the k "
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
