"""Distribution shift: the model on a second test set from another source, beside the test split.

The shift set (``shift.dataset``: another scanner, site or camera, with the same
classes) is audited whole. Its accuracy carries an exact Clopper–Pearson interval,
as ``performance.accuracy`` does; balanced accuracy the interval of seeded draws of
every class's recall from its Jeffreys posterior, and ECE (equal-width bins, Guo et
al. 2017) a percentile bootstrap over its rows, as on the test split
(:mod:`auditclf.analyses.bootstrap`). The gap, test accuracy − shift accuracy, is a
difference of two independent proportions: its interval is Newcombe's hybrid score
interval (Newcombe 1998); when it excludes 0, the gap is beyond sampling error and
is a finding. Keys: ``shift.<name>.*`` (:data:`auditclf.keys.families.SHIFT`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses.base import (
    ANALYSES,
    AnalysisContext,
    Section,
    Table,
    check_table_names,
    key_part,
)
from auditclf.analyses.bootstrap import (
    clopper_pearson,
    newcombe_difference,
    percentile_interval,
    recall_posterior_draws,
)
from auditclf.analyses.calibration import ece_bootstrap, expected_calibration_error
from auditclf.evidence import ATTR_PREFIX
from auditclf.keys.families import SHIFT_ACCURACY, SHIFT_GAP


def accuracy_scores(rows: pd.DataFrame, ctx: AnalysisContext) -> dict:
    """Accuracy, balanced accuracy, ECE and per-class recall of ``rows``, with intervals."""
    cfg, level = ctx.config, ctx.config.confidence_level
    labels = rows["label"].to_numpy(np.int64)
    correct = (rows["pred"].to_numpy(np.int64) == labels).astype(np.float64)
    support = np.bincount(labels, minlength=len(ctx.classes))
    class_hits = np.bincount(labels, weights=correct, minlength=len(ctx.classes)).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, class_hits / support, np.nan)
    hits, n = int(correct.sum()), len(labels)
    confidence = rows["confidence"].to_numpy(np.float64)
    scores = {
        "n": n,
        "hits": hits,
        "accuracy": (hits / n if n else float("nan"), clopper_pearson(hits, n, level)),
        "recall": recall,
        "support": support,
        "recall_ci": [
            clopper_pearson(int(h), int(s), level) if s else None
            for h, s in zip(class_hits, support, strict=True)
        ],
        "balanced_accuracy": (float(np.nanmean(recall)), None),
        "ece": (expected_calibration_error(confidence, correct, cfg.ece_bins)[0], None),
    }
    if cfg.bootstrap:
        draws = recall_posterior_draws(support, class_hits, n_draws=cfg.bootstrap, seed=ctx.seed)
        scores["balanced_accuracy"] = (
            scores["balanced_accuracy"][0],
            percentile_interval(np.nanmean(draws, axis=1), level),
        )
        ece_draws = ece_bootstrap(
            confidence, correct, cfg.ece_bins, n_boot=cfg.bootstrap, seed=ctx.seed
        )
        scores["ece"] = (scores["ece"][0], percentile_interval(ece_draws, level))
    return scores


def _put(section: Section, key: str, value_ci: tuple, reason: str = "no images") -> None:
    value, ci = value_ci
    section.put(key, value, reason=reason)
    if ci is not None:
        section.put_interval(key, ci, reason=reason)


def _group_accuracy(rows: pd.DataFrame, column: str) -> dict[str, tuple[int, int]]:
    """{group value: (hits, images)} of one attribute column."""
    correct = rows["pred"].to_numpy(np.int64) == rows["label"].to_numpy(np.int64)
    values = rows[column].astype(str).to_numpy()
    return {
        value: (int(correct[values == value].sum()), int((values == value).sum()))
        for value in sorted(pd.unique(values))
    }


def _groups(
    section: Section, name: str, test: pd.DataFrame, rows: pd.DataFrame, level: float
) -> list[list]:
    """The shift set's per-group keys; → the per-group table's rows (with the test split's
    accuracy of the same group where the test rows have that attribute)."""
    table = []
    for column in (c for c in rows.columns if c.startswith(ATTR_PREFIX)):
        attribute = column[len(ATTR_PREFIX) :]
        in_test = _group_accuracy(test, column) if column in test.columns else {}
        for value, (hits, n) in _group_accuracy(rows, column).items():
            key = f"shift.{name}.group.{key_part(attribute)}.{key_part(value)}.accuracy"
            ci = clopper_pearson(hits, n, level)
            _put(section, key, (hits / n, ci))
            test_hits, test_n = in_test.get(value, (0, 0))
            table.append(
                [attribute, value, n, hits / n, ci, test_hits / test_n if test_n else None]
            )
    return table


def _one_set(
    section: Section, name: str, test: pd.DataFrame, rows: pd.DataFrame, ctx: AnalysisContext
) -> str:
    """Keys, tables and findings of the shift set ``name``; → its headline sentence."""
    level = ctx.config.confidence_level
    before, after = accuracy_scores(test, ctx), accuracy_scores(rows, ctx)
    prefix = f"shift.{name}"
    accuracy_key, gap_key = SHIFT_ACCURACY.key(name=name), SHIFT_GAP.key(name=name)
    _put(section, accuracy_key, after["accuracy"])
    _put(section, f"{prefix}.balanced_accuracy", after["balanced_accuracy"])
    _put(section, f"{prefix}.ece", after["ece"])
    section.put(f"{prefix}.samples", after["n"])
    gap = before["accuracy"][0] - after["accuracy"][0]
    gap_ci = newcombe_difference(before["hits"], before["n"], after["hits"], after["n"], level)
    _put(section, gap_key, (gap, gap_ci), reason="no test images")
    for i, class_name in enumerate(ctx.classes):
        ci = after["recall_ci"][i]
        _put(
            section,
            f"{prefix}.class.{key_part(class_name)}.recall",
            (after["recall"][i], ci),
            reason=f"class {class_name!r} has no images in the shift set",
        )
    section.tables[f"{name}.overall"] = Table(
        ["metric", "test split", f"{level:.0%} CI", f"shift set {name}", f"{level:.0%} CI", "key"],
        [
            ["accuracy", *before["accuracy"], *after["accuracy"], accuracy_key],
            [
                "balanced accuracy",
                *before["balanced_accuracy"],
                *after["balanced_accuracy"],
                f"{prefix}.balanced_accuracy",
            ],
            ["expected calibration error (ECE)", *before["ece"], *after["ece"], f"{prefix}.ece"],
            ["images", before["n"], None, after["n"], None, f"{prefix}.samples"],
            ["accuracy gap (test − shift)", None, None, gap, gap_ci, gap_key],
        ],
        caption=f"The test split beside the shift set {name!r}, one model.",
    )
    section.tables[f"{name}.per_class"] = Table(
        ["class", "test recall", "shift recall", f"shift recall {level:.0%} CI", "shift images"],
        [
            [
                c,
                before["recall"][i],
                after["recall"][i],
                after["recall_ci"][i],
                int(after["support"][i]),
            ]
            for i, c in enumerate(ctx.classes)
        ],
        caption=f"Recall per class on the test split and on the shift set {name!r}.",
    )
    groups = _groups(section, name, test, rows, level)
    if groups:
        section.tables[f"{name}.per_group"] = Table(
            [
                "attribute",
                "group",
                "shift images",
                "shift accuracy",
                f"{level:.0%} CI",
                "test accuracy",
            ],
            groups,
            caption=f"Accuracy per group of the shift set {name!r}; the test split's in the "
            "same group where the test images have that attribute.",
        )
    beyond = gap_ci[0] > 0 or gap_ci[1] < 0
    shown = round(100 * gap, 1) + 0.0  # never "-0.0"
    points = f"{100 * abs(gap):.1f} points"
    interval = f"[{100 * gap_ci[0]:+.1f}, {100 * gap_ci[1]:+.1f}]"
    if gap_ci[0] > 0:
        section.find(
            "warning",
            f"accuracy on the shift set {name!r} is {points} below the test split's "
            f"({after['accuracy'][0]:.1%} vs {before['accuracy'][0]:.1%}; gap interval "
            f"{interval} points excludes 0): the model does not carry over to that source",
            metric=gap_key,
        )
    elif gap_ci[1] < 0:
        section.find(
            "info",
            f"accuracy on the shift set {name!r} is {points} above the test split's "
            f"(gap interval {interval} points excludes 0)",
            metric=gap_key,
        )
    low, high = after["accuracy"][1]
    return (
        f"On the shift set {name!r} ({after['n']} images) the model classifies "
        f"{after['accuracy'][0]:.1%} [{low:.1%}, {high:.1%}] correctly, against "
        f"{before['accuracy'][0]:.1%} on the test split: a gap of {shown:+.1f} points "
        f"{interval}, {'beyond' if beyond else 'within'} sampling error; ECE "
        f"{after['ece'][0]:.3f} against {before['ece'][0]:.3f}."
    )


@ANALYSES.register("shift")
def shift(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("shift", "Distribution shift")
    if not ctx.shift:
        section.headline = "No shift set was given (shift.dataset, --shift-dataset)."
        return section
    headlines = []
    for name, rows in ctx.shift.items():
        check_table_names(rows, ctx.classes)
        headlines.append(_one_set(section, name, table, rows, ctx))
    level = ctx.config.confidence_level
    section.headline = " ".join(headlines)
    draws = (
        f"balanced accuracy the interval of {ctx.config.bootstrap} seeded draws (seed "
        f"{ctx.seed}) of every class's recall from its Jeffreys posterior, and ECE a "
        "percentile bootstrap over the rows, as on the test split"
        if ctx.config.bootstrap
        else "balanced accuracy and ECE none (analyses.bootstrap is 0)"
    )
    section.method = (
        "Every image of the shift set went through the same clean pass as the test split "
        "(no attack, no explanation). Accuracy, per-class and per-group accuracy carry "
        f"exact {level:.0%} Clopper–Pearson intervals; {draws}. ECE bins the top-class "
        f"confidence in {ctx.config.ece_bins} equal-width bins. The gap is test accuracy − "
        "shift accuracy, with Newcombe's hybrid score interval for a difference of two "
        "independent proportions (Newcombe 1998); a gap whose interval excludes 0 is beyond "
        "sampling error."
    )
    return section
