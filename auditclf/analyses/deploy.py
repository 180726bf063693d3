"""Deployment: what exporting the model cost (the deploy probe's columns and timings).

For each exported format (``export.formats``), over the same test images as the PyTorch
model: top-1 agreement with the PyTorch model (exact Clopper–Pearson interval), accuracy
(Clopper–Pearson), the accuracy drop PyTorch − exported (the two accuracies are measured on
the same images, so a paired difference: Newcombe's score interval for paired data, method
10 of Newcombe 1998), balanced accuracy and ECE (intervals as on the test split, see
:mod:`auditclf.analyses.shift`), per-class recall and per-group accuracy, the largest
logit and probability differences, latency at batch 1, throughput at batch 64 and file
size (measurements of this machine now: they vary from run to run). Keys
``deploy.<format>.*`` (:data:`auditclf.keys.families.DEPLOY`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part
from auditclf.analyses.bootstrap import (
    bootstrap_means,
    clopper_pearson,
    newcombe_paired_difference,
    percentile_interval,
)
from auditclf.analyses.shift import accuracy_scores
from auditclf.evidence import ATTR_PREFIX
from auditclf.keys import deploy_column
from auditclf.keys.families import DEPLOY_AGREEMENT, DEPLOY_DROP

TIMED = ("latency_p50_ms", "latency_p95_ms", "throughput")


def _put(section: Section, key: str, value: float, ci: tuple | None) -> None:
    section.put(key, value, reason="no test images")
    if ci is not None:
        section.put_interval(key, ci, reason="no test images")


def _exported_rows(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """``table`` with the exported model's prediction and confidence as its own."""
    return table.assign(
        pred=table[deploy_column(fmt, "pred")].to_numpy(np.int64),
        confidence=table[deploy_column(fmt, "confidence")].to_numpy(np.float64),
    )


def _paired(table: pd.DataFrame, fmt: str) -> dict:
    """Agreement and the 2 × 2 table of (PyTorch right, exported right) over the images."""
    labels = table["label"].to_numpy(np.int64)
    ours = table["pred"].to_numpy(np.int64)
    theirs = table[deploy_column(fmt, "pred")].to_numpy(np.int64)
    right_ours, right_theirs = ours == labels, theirs == labels
    return {
        "agree": int((ours == theirs).sum()),
        "n": len(labels),
        "cells": (
            int((right_ours & right_theirs).sum()),
            int((right_ours & ~right_theirs).sum()),
            int((~right_ours & right_theirs).sum()),
            int((~right_ours & ~right_theirs).sum()),
        ),
    }


def _groups(section: Section, prefix: str, rows: pd.DataFrame, level: float) -> None:
    correct = rows["pred"].to_numpy(np.int64) == rows["label"].to_numpy(np.int64)
    for column in (c for c in rows.columns if c.startswith(ATTR_PREFIX)):
        values = rows[column].astype(str).to_numpy()
        for value in sorted(pd.unique(values)):
            hits, n = int(correct[values == value].sum()), int((values == value).sum())
            key = f"{prefix}.group.{key_part(column[len(ATTR_PREFIX) :])}.{key_part(value)}"
            _put(section, f"{key}.accuracy", hits / n, clopper_pearson(hits, n, level))


def _one_format(section: Section, fmt: str, table: pd.DataFrame, ctx: AnalysisContext) -> list:
    """Keys of one format; → its row of the ledger."""
    level = ctx.config.confidence_level
    prefix = f"deploy.{fmt}"
    paired = _paired(table, fmt)
    n, cells = paired["n"], paired["cells"]
    agreement = paired["agree"] / n if n else float("nan")
    agreement_key = DEPLOY_AGREEMENT.key(format=fmt)
    _put(section, agreement_key, agreement, clopper_pearson(paired["agree"], n, level))
    rows = _exported_rows(table, fmt)
    scores = accuracy_scores(rows, ctx)
    accuracy, accuracy_ci = scores["accuracy"]
    _put(section, f"{prefix}.accuracy", accuracy, accuracy_ci)
    drop = (cells[1] - cells[2]) / n if n else float("nan")
    drop_key = DEPLOY_DROP.key(format=fmt)
    _put(section, drop_key, drop, newcombe_paired_difference(*cells, level))
    _put(section, f"{prefix}.balanced_accuracy", *scores["balanced_accuracy"])
    _put(section, f"{prefix}.ece", *scores["ece"])
    for i, class_name in enumerate(ctx.classes):
        key = f"{prefix}.class.{key_part(class_name)}.recall"
        section.put(key, scores["recall"][i], reason=f"class {class_name!r} has no test images")
        if scores["recall_ci"][i] is not None:
            section.put_interval(key, scores["recall_ci"][i])
    _groups(section, prefix, rows, level)
    logit_diff = float(table[deploy_column(fmt, "logit_diff")].max()) if n else float("nan")
    proba_diff = float(table[deploy_column(fmt, "proba_diff")].max()) if n else float("nan")
    section.put(f"{prefix}.max_logit_diff", logit_diff, reason="no test images")
    section.put(f"{prefix}.max_proba_diff", proba_diff, reason="no test images")
    record = ctx.artifacts["deploy"]["records"][fmt]
    for what in TIMED:
        section.put(f"{prefix}.{what}", record[what])
    section.put(f"{prefix}.size_mb", record["size_mb"])
    _transfer(section, fmt, table, ctx.artifacts["deploy"].get("transfer_eps"), level)
    _attacked(section, fmt, table, "square", ctx.artifacts["deploy"].get("square_eps"), level)
    _corruption(section, fmt, table, ctx)
    if agreement < 1.0 or drop > 0:
        section.find(
            "warning" if drop > 0 else "info",
            f"the {fmt} export disagrees with the PyTorch model on {n - paired['agree']} of "
            f"{n} test images (agreement {agreement:.2%}); accuracy drop {100 * drop:+.1f} "
            "points",
            metric=agreement_key,
        )
    return _ledger_row(fmt, record, paired, accuracy, drop, logit_diff, level)


def _corruption(section: Section, fmt: str, table: pd.DataFrame, ctx: AnalysisContext) -> None:
    """``deploy.<format>.corruption.accuracy`` (bootstrap interval over images, as the
    corruption analysis's mean) and ``.agreement``: the exported model under the corruption
    probe's images, per image over every corruption × severity, averaged over the images."""
    column = deploy_column(fmt, "corruption_accuracy")
    if column not in table.columns:
        return
    given = table[column].notna().to_numpy()
    accuracy = table[column].to_numpy()[given]
    agreement = table[deploy_column(fmt, "corruption_agreement")].to_numpy()[given]
    key = f"deploy.{fmt}.corruption.accuracy"
    draws = bootstrap_means(accuracy[:, None], ctx.config.bootstrap, ctx.seed, f"deploy.{fmt}")
    draws = draws[:, 0]
    interval = percentile_interval(draws, ctx.config.confidence_level) if len(draws) else None
    _put(section, key, float(accuracy.mean()) if len(accuracy) else float("nan"), interval)
    section.put(
        f"deploy.{fmt}.corruption.agreement",
        float(agreement.mean()) if len(agreement) else None,
        reason="no corrupted image",
    )


def _transfer(section: Section, fmt: str, table: pd.DataFrame, eps: str | None, level) -> None:
    """``deploy.<format>.transfer@<eps>.accuracy``: the exported model on the PyTorch model's
    adversarial images (the attacked subset's rows)."""
    _attacked(section, fmt, table, "transfer", eps, level)


def _under_stress(section: Section, formats: list[str], audited: dict) -> None:
    """One table: each file under the PyTorch model's PGD images, under Square against the
    file itself, and under the corruption probe's images (the columns this run has)."""
    metrics = section.metrics
    columns = {}
    if audited.get("transfer_eps"):
        columns[f"PGD-L∞ images @ {audited['transfer_eps']} (transferred)"] = (
            f"transfer@{audited['transfer_eps']}.accuracy"
        )
    if audited.get("square_eps"):
        columns[f"Square @ {audited['square_eps']} (on the file)"] = (
            f"square@{audited['square_eps']}.accuracy"
        )
    columns["accuracy under corruptions"] = "corruption.accuracy"
    columns["agreement under corruptions"] = "corruption.agreement"
    present = {
        title: key
        for title, key in columns.items()
        if any(f"deploy.{fmt}.{key}" in metrics for fmt in formats)
    }
    if not present:
        return
    section.tables["stress"] = Table(
        ["format", *present],
        [
            [fmt, *(metrics.get(f"deploy.{fmt}.{key}") for key in present.values())]
            for fmt in formats
        ],
        caption="Each exported file under attack and corruption: the PyTorch model's PGD-L∞ "
        "images at the reference eps (does the attack transfer to what ships?), black-box "
        "Square querying the file itself (its own robustness, comparable with the PyTorch "
        "model's robustness.square), and the corruption probe's images (accuracy, and "
        "agreement with the PyTorch model on them). Intervals are in the JSON.",
    )


def _attacked(
    section: Section, fmt: str, table: pd.DataFrame, what: str, eps: str | None, level
) -> None:
    """``deploy.<format>.<what>@<eps>.accuracy`` from the column ``<what>_pred`` (the rows
    the attack covered): ``transfer``, the PyTorch model's PGD images on the file;
    ``square``, black-box Square against the file itself."""
    column = deploy_column(fmt, f"{what}_pred")
    if eps is None or column not in table.columns:
        return
    given = table[column].notna().to_numpy()
    hits = int((table[column].to_numpy()[given] == table["label"].to_numpy()[given]).sum())
    n = int(given.sum())
    key = f"deploy.{fmt}.{what}@{eps}.accuracy"
    _put(section, key, hits / n if n else float("nan"), clopper_pearson(hits, n, level))


def _ledger_row(fmt, record, paired, accuracy, drop, logit_diff, level) -> list:
    """One format's row of the ledger (differences and timings as text: their scales)."""
    n, agree = paired["n"], paired["agree"]
    return [
        fmt,
        record["file"],
        agree / n if n else None,
        list(clopper_pearson(agree, n, level)),
        accuracy,
        drop,
        f"{logit_diff:.1e}",
        f"{record['latency_p95_ms']:.3g}",
        f"{record['throughput']:,.0f}",
        record["size_mb"],
        _how(record),
    ]


def _how(record: dict) -> str:
    """How a file was made: the quantization that ran, the ONNX opset, or the exporter."""
    if record.get("method"):
        return record["method"]
    return f"opset {record['opset']}" if "opset" in record else record.get("exporter", "")


def _present(table: pd.DataFrame, formats: list[str]) -> list[str]:
    """The formats whose columns this model's rows hold (the exported model's only)."""
    return [
        fmt
        for fmt in formats
        if deploy_column(fmt, "pred") in table.columns
        and table[deploy_column(fmt, "pred")].notna().all()
    ]


@ANALYSES.register("deploy")
def deploy(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("deploy", "Deployment")
    audited = ctx.artifacts.get("deploy")
    formats = _present(table, audited["formats"]) if audited else []
    if not formats:
        section.headline = "No exported model was audited (export.formats, --export)."
        return section
    pytorch = audited["records"]["pytorch"]
    ledger = [_one_format(section, fmt, table, ctx) for fmt in formats]
    section.tables["ledger"] = Table(
        [
            "format",
            "file",
            "agreement",
            f"{ctx.config.confidence_level:.0%} CI",
            "accuracy",
            "accuracy drop",
            "max |Δ logit|",
            "latency p95 (ms)",
            "images/s",
            "size (MB)",
            "how it was made",
        ],
        [
            ["pytorch", "(in memory)", 1.0, None, float(table["correct"].mean()), 0.0, "0"]
            + [f"{pytorch['latency_p95_ms']:.3g}", f"{pytorch['throughput']:,.0f}", None, ""],
            *ledger,
        ],
        caption="What deployment cost: each exported file against the PyTorch model it "
        "came from, on the same test images (latency at batch 1, throughput at batch 64, "
        "on this machine's CPU).",
    )
    _under_stress(section, formats, ctx.artifacts["deploy"])
    # the least faithful file: the lowest agreement, then the largest logit difference
    worst = min(ledger, key=lambda row: (row[2], -float(row[6])))
    section.headline = (
        f"{len(formats)} exported file(s) audited on {len(table)} test images; the least "
        f"faithful, {worst[0]}, agrees with the PyTorch model on {worst[2]:.2%} of them "
        f"(accuracy drop {100 * worst[5]:+.1f} points, largest logit difference "
        f"{worst[6]})."
    )
    section.method = (
        "Each exported file was run by its own runtime (onnxruntime's CPU provider for ONNX "
        "and int8 ONNX, the TorchScript interpreter for TorchScript) over the test images as "
        "the audit sees them ([0, 1] pixels; the normalisation is inside the file). "
        "Agreement and accuracy carry exact Clopper–Pearson intervals; the accuracy drop, "
        "two accuracies on the same images, Newcombe's score interval for paired data "
        "(method 10, 1998). Latency is the p50/p95 of single-image passes after warm-up, "
        "throughput that of batches of 64, both on the CPU of this run: they vary from run "
        "to run, unlike every other number here. Under attack: the PyTorch model's PGD-L∞ "
        "images at the reference eps (the attack probe's per-image seeds, so the very images "
        "it made) and torchattacks' Square querying each file through its runtime, on the "
        "images the attack probe's Square attacked; under corruption: the corruption probe's "
        "images (same seeds), each file's accuracy over every corruption × severity with a "
        "bootstrap interval over images."
    )
    return section
