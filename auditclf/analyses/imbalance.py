"""Class balance, split sizes and duplicates, beside per-class test recall.

The imbalance ratio is the training count of the largest class over that of
the smallest (1 = perfectly balanced). Duplicates are exact pixel copies
found by content hash (see :mod:`auditclf.data.duplicates`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part


@ANALYSES.register("imbalance")
def imbalance(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    summary, classes = ctx.data_summary, ctx.classes
    dist = summary["class_distribution"]
    section = Section("imbalance", "Class balance and data hygiene")
    for split, count in summary["split_counts"].items():
        section.put(f"data.split.{split}.count", count)
    train = np.array([dist["train"][c] for c in classes], dtype=np.float64)
    empty = [c for c, n in zip(classes, train, strict=True) if n == 0]
    if not train.any():  # a checkpoint audited on test images only: nothing to weigh
        why = "no training images in this run (a checkpoint audited on test images only)"
        section.put("data.imbalance_ratio", None, reason=why)
        ratio = float("nan")
    elif empty:
        section.put(
            "data.imbalance_ratio",
            None,
            reason=f"class(es) {', '.join(empty)} have no training images",
        )
        section.find(
            "error",
            f"class(es) {', '.join(map(repr, empty))} have no training "
            "images; the model cannot learn them",
            metric="data.imbalance_ratio",
        )
        ratio = float("inf")
    else:
        ratio = float(train.max() / train.min())
        section.put("data.imbalance_ratio", ratio)
    for i, name in enumerate(classes):
        share = train[i] / train.sum() if train.any() else None
        section.put(
            f"data.class.{key_part(name)}.train_share",
            share,
            reason=None if train.any() else "no training images in this run",
        )
    threshold = ctx.config.imbalance_threshold
    largest, smallest = classes[int(train.argmax())], classes[int(train.argmin())]
    if np.isfinite(ratio) and ratio > threshold:
        section.find(
            "warning",
            f"classes are imbalanced: {largest!r} has {int(train.max())} "
            f"training images, {smallest!r} only {int(train.min())} (ratio {ratio:.1f} "
            f"> {threshold:g}); consider train.class_weighted or train.oversample and "
            "read balanced accuracy and per-class recall, not accuracy alone",
            metric="data.imbalance_ratio",
        )

    recall = table.groupby("label")["correct"].mean() if "correct" in table else pd.Series()
    rows = [
        [
            name,
            dist["train"][name],
            dist["val"][name],
            dist["test"][name],
            float(recall[i]) if i in recall.index else None,
        ]
        for i, name in enumerate(classes)
    ]
    section.tables["distribution"] = Table(
        ["class", "train", "val", "test", "test recall"],
        rows,
        caption="Images per class and split, beside the class's recall on the test split.",
    )
    section.figures["distribution"] = {
        "kind": "class_distribution",
        "classes": classes,
        "splits": {s: [dist[s][c] for c in classes] for s in ("train", "val", "test")},
    }

    dup = summary["duplicates"]
    within = sum(dup["within"].values())
    leakage = sum(dup["across"].values())
    section.put("data.duplicates.within", within)
    section.put("data.duplicates.leakage", leakage)
    section.put("data.duplicates.label_conflicts", dup["label_conflicts"])
    section.tables["duplicates"] = Table(
        ["check", "count", "examples"],
        [[f"copies within {s}", n, dup["examples"].get(s, [])] for s, n in dup["within"].items()]
        + [
            [
                f"{pair.split('-')[1]} images also in {pair.split('-')[0]} (leakage)",
                n,
                dup["examples"].get(pair, []),
            ]
            for pair, n in dup["across"].items()
        ]
        + [
            [
                "same image, different labels",
                dup["label_conflicts"],
                dup["examples"].get("label_conflicts", []),
            ]
        ],
        caption="Exact duplicates by content hash of the decoded pixels.",
    )
    if dup["across"]["train-test"]:
        section.find(
            "warning",
            f"{dup['across']['train-test']} test image(s) also occur in "
            "the training split: test metrics are optimistic",
            "data.duplicates.leakage",
        )
    if dup["label_conflicts"]:
        section.find(
            "warning",
            f"{dup['label_conflicts']} image(s) occur with different labels",
            "data.duplicates.label_conflicts",
        )
    if np.isnan(ratio):
        balance = "not weighed (no training images in this run)"
    elif not np.isfinite(ratio):
        balance = "missing classes"
    elif ratio > threshold:
        balance = f"imbalanced (largest/smallest {ratio:.2f} > {threshold:g})"
    else:
        balance = f"balanced (largest/smallest {ratio:.2f} ≤ {threshold:g})"
    section.headline = (
        f"Training classes are {balance}; {summary['split_counts']['train']}/"
        f"{summary['split_counts']['val']}/{summary['split_counts']['test']} images in "
        f"train/val/test; {within} exact duplicate(s) within splits and {leakage} across "
        "splits."
    )
    section.method = (
        "Counts from the split actually used"
        + (
            " (given by the data)"
            if summary["split_given"]
            else " (stratified by class from the run seed)"
        )
        + "; imbalance ratio = largest / smallest training class; duplicates by BLAKE2b hash "
        "of decoded pixels (exact copies only, near-duplicates are not detected)."
    )
    if "audited" in summary:  # reports written before auditclf said which images it audited
        section.method += f" Images audited: {summary['audited']}."
    return section
