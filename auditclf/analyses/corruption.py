"""Accuracy, calibration and prediction flips under common corruptions, by severity.

Reads the corruption probe's columns (``cor.<name>@<severity>.pred`` and ``.confidence``) on
the corrupted rows. Every image is seen clean and under every corruption × severity, so the
numbers are paired: the drop from clean, the flips against the clean prediction, the change
from one severity to the next are per image, not between two samples.

Intervals: a corruption at one severity is a proportion (exact Clopper-Pearson); the means
over severities and corruptions are per-image means, with the percentile bootstrap over
images (``analyses.bootstrap`` draws, seeded from the run seed), so the dependence between
one image's corrupted versions is kept. The mean corruption error (``corruption.mce``, after
Hendrycks & Dietterich 2019) is a retrained model's error under each corruption, summed over
severities, divided by the baseline's on the same images, averaged over corruptions: the
baseline is the reference (ImageNet-C's AlexNet), so it is computed across models
(:func:`reference_errors`), not here.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
from scipy.stats import norm

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part
from auditclf.analyses.bootstrap import bootstrap_means, clopper_pearson, percentile_interval
from auditclf.analyses.calibration import expected_calibration_error
from auditclf.analyses.robustness import Check
from auditclf.catalog import CATALOG
from auditclf.evidence import ATTR_PREFIX
from auditclf.keys import corruption_check_column, corruption_column, parse_corruption_column
from auditclf.keys.families import (
    CORRUPTION_ACCURACY,
    CORRUPTION_CE,
    CORRUPTION_CLASS_ACCURACY,
    CORRUPTION_GROUP_ACCURACY,
    CORRUPTION_MCE,
    CORRUPTION_MEAN_ACCURACY,
    CORRUPTION_RELIABLE,
    CORRUPTION_SEVERITY_ACCURACY,
    CORRUPTION_WORST_ACCURACY,
)

CONFIDENCE_TOLERANCE = 1e-6  # the batch-size check: confidences agree to float64 noise
# checks that make the section unreliable when they fail; the others are findings
BLOCKING = ("severity_zero_is_clean", "images_in_range", "batch_size_invariant")


def corruption_grid(table: pd.DataFrame) -> dict[str, list[int]]:
    """{corruption: [severities]} from the table's ``cor.<name>@<severity>.pred`` columns,
    in the order the probe wrote them."""
    grid: dict[str, list[int]] = defaultdict(list)
    for column in table.columns:
        parsed = parse_corruption_column(column)
        if parsed and parsed[2] == "pred":
            grid[parsed[0]].append(parsed[1])
    return {name: sorted(severities) for name, severities in grid.items()}


class Outcomes:
    """The corrupted rows as arrays: ``correct`` and ``confidence`` (n, C, S), ``flipped``
    (n, C, S) against the clean prediction, ``per_image`` (n, C): each image's accuracy
    under each corruption, mean over severities, and the clean answers (n,)."""

    def __init__(self, rows: pd.DataFrame, grid: dict[str, list[int]]) -> None:
        self.names = list(grid)
        self.severities = grid[self.names[0]]
        self.labels = rows["label"].to_numpy()
        self.clean_pred = rows["pred"].to_numpy()
        self.clean_correct = self.clean_pred == self.labels
        self.clean_confidence = rows["confidence"].to_numpy(dtype=np.float64)

        def stack(what: str) -> np.ndarray:
            return np.stack(
                [
                    np.stack(
                        [rows[corruption_column(n, s, what)].to_numpy(np.float64) for s in grid[n]],
                        axis=1,
                    )
                    for n in self.names
                ],
                axis=1,
            )

        pred = stack("pred")
        self.correct = pred == self.labels[:, None, None]
        self.flipped = pred != self.clean_pred[:, None, None]
        self.confidence = stack("confidence")
        self.per_image = self.correct.mean(axis=2)


def _severity_rises(correct: np.ndarray, z: float) -> list[tuple[int, int, int, int]]:
    """Consecutive severity pairs (i, i + 1) where accuracy rises beyond sampling error,
    by the paired sign test: images right only at the higher severity (b) against images
    right only at the lower (c), a rise when b − c > z √(b + c) → [(i, i + 1, b, c)]."""
    rises = []
    for i in range(correct.shape[1] - 1):
        b = int((~correct[:, i] & correct[:, i + 1]).sum())
        c = int((correct[:, i] & ~correct[:, i + 1]).sum())
        if b - c > z * np.sqrt(b + c):
            rises.append((i, i + 1, b, c))
    return rises


@ANALYSES.register("corruption")
def corruption(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("corruption", "Common corruptions")
    grid = corruption_grid(table)
    if not grid or "corrupted" not in table:
        section.headline = "No corruption was applied (corruptions.enabled is false)."
        return section
    rows = table[table["corrupted"] == 1].reset_index(drop=True)
    level = ctx.config.confidence_level
    out = Outcomes(rows, grid)
    n = len(rows)
    section.put("corruption.samples", n)
    clean = float(out.clean_correct.mean()) if n else float("nan")
    section.put("corruption.clean_accuracy", clean, reason="no image was corrupted")
    section.put_interval(
        "corruption.clean_accuracy", clopper_pearson(int(out.clean_correct.sum()), n, level)
    )
    per_corruption = _accuracies(section, out, ctx, clean)
    _calibration_and_flips(section, out, ctx)
    _per_class(section, out, ctx.classes)
    _per_group(section, rows, out, per_corruption)
    checks = _checks(rows, out, level)
    failed = [c for c in checks if c.passed is False and c.name in BLOCKING]
    section.put(CORRUPTION_RELIABLE.key(), 0.0 if failed else 1.0)
    for check in checks:
        if check.passed is not None:
            section.put(f"corruption.check.{check.name}", 1.0 if check.passed else 0.0)
    section.tables["checks"] = Table(
        ["check", "outcome", "measured", "what it means"],
        [[c.name, _outcome(c), c.measured, c.meaning] for c in checks],
        caption="Blocking checks (a failure makes every corruption number unreliable): "
        + ", ".join(BLOCKING)
        + ". The severity check is a finding only: a corruption whose accuracy rises with "
        "severity is worth a look, not a broken measurement.",
    )
    for check in checks:
        if check.passed is False and check.name in BLOCKING:
            section.find(
                "error",
                f"corruption sanity check {check.name} failed: {check.measured} (the "
                "corruption numbers are unreliable)",
                f"corruption.check.{check.name}",
            )
        elif check.passed is False:  # a property of the model or the corruption, not a fault
            section.find(
                "info",
                f"accuracy rises with severity beyond sampling error ({check.measured}, paired "
                "sign test): for this model those severities are not ordered by difficulty; "
                "the numbers stand",
                f"corruption.check.{check.name}",
            )
    section.headline = _headline(section, out, clean, per_corruption, failed)
    section.method = _method(ctx, out, n)
    return section


def _accuracies(
    section: Section, out: Outcomes, ctx: AnalysisContext, clean: float
) -> dict[str, float]:
    """Accuracy per corruption × severity, per corruption, mean and worst, with intervals;
    the heat map and the table → {corruption: mean accuracy over its severities}."""
    level = ctx.config.confidence_level
    n = len(out.labels)
    per_image = out.per_image
    draws = bootstrap_means(
        np.column_stack([per_image, per_image.mean(axis=1)]),
        ctx.config.bootstrap,
        ctx.seed,
        "corruption",
    )
    matrix, rows, means = [], [], {}
    for c, name in enumerate(out.names):
        cells = []
        for s, severity in enumerate(out.severities):
            hits = int(out.correct[:, c, s].sum())
            key = CORRUPTION_SEVERITY_ACCURACY.key(corruption=name, severity=severity)
            section.put(key, hits / n if n else None, reason="no image was corrupted")
            section.put_interval(key, clopper_pearson(hits, n, level))
            cells.append(hits / n if n else None)
        mean = float(per_image[:, c].mean()) if n else float("nan")
        means[name] = mean
        key = CORRUPTION_ACCURACY.key(corruption=name)
        section.put(key, mean)
        ci = percentile_interval(draws[:, c], level) if len(draws) else (None, None)
        section.put_interval(key, ci, reason="no bootstrap draws (analyses.bootstrap is 0)")
        drop = 1 - mean / clean if clean else None
        section.put(f"corruption.{name}.relative_drop", drop, reason="clean accuracy is 0")
        matrix.append(cells)
        rows.append([name, CATALOG["corruption"].get(name, ""), *cells, mean, ci])
    overall = float(per_image.mean()) if n else float("nan")
    section.put(CORRUPTION_MEAN_ACCURACY.key(), overall, reason="no image was corrupted")
    ci = percentile_interval(draws[:, -1], level) if len(draws) else (None, None)
    section.put_interval(CORRUPTION_MEAN_ACCURACY.key(), ci, reason="no bootstrap draws")
    section.put(
        "corruption.mean.relative_drop",
        1 - overall / clean if clean else None,
        reason="clean accuracy is 0",
    )
    worst = min(means, key=means.get)
    section.put(CORRUPTION_WORST_ACCURACY.key(), means[worst])
    w = out.names.index(worst)
    worst_ci = percentile_interval(draws[:, w], level) if len(draws) else (None, None)
    section.put_interval(CORRUPTION_WORST_ACCURACY.key(), worst_ci, reason="no bootstrap draws")
    section.notes[CORRUPTION_WORST_ACCURACY.key()] = f"under {worst}"
    section.tables["accuracy"] = Table(
        ["corruption", "what it models"]
        + [f"severity {s}" for s in out.severities]
        + ["mean", f"{level:.0%} CI"],
        sorted(rows, key=lambda r: r[-2]),
        caption="Accuracy on the corrupted images, most damaging corruption first; clean "
        f"accuracy of the same images {clean:.1%}. Severity intervals in the JSON "
        "(Clopper-Pearson); the mean's interval is a bootstrap over images.",
    )
    section.figures["heatmap"] = {
        "kind": "corruption_heatmap",
        "names": out.names,
        "severities": out.severities,
        "accuracy": matrix,
        "clean": clean,
    }
    return means


def _calibration_and_flips(section: Section, out: Outcomes, ctx: AnalysisContext) -> None:
    """ECE and mean confidence per corruption (severities pooled), flip rates, and a finding
    where the model grows more confident while it gets more wrong."""
    bins = ctx.config.ece_bins
    clean_ece, _ = expected_calibration_error(out.clean_confidence, out.clean_correct, bins)
    eces, flips, rows = [], [], []
    for c, name in enumerate(out.names):
        confidence = out.confidence[:, c].ravel()
        correct = out.correct[:, c].ravel()
        ece, _ = expected_calibration_error(confidence, correct, bins)
        flip = float(out.flipped[:, c].mean())
        section.put(f"corruption.{name}.ece", ece)
        section.put(f"corruption.{name}.mean_confidence", float(confidence.mean()))
        section.put(f"corruption.{name}.flip_rate", flip)
        eces.append(ece)
        flips.append(flip)
        top_conf = float(out.confidence[:, c, -1].mean())
        top_acc = float(out.correct[:, c, -1].mean())
        rows.append([name, float(confidence.mean()), float(correct.mean()), ece, flip])
        clean_conf, clean_acc = float(out.clean_confidence.mean()), float(out.clean_correct.mean())
        if top_conf > clean_conf and top_acc < clean_acc - 0.05:
            section.find(
                "warning",
                f"under {name} at severity {out.severities[-1]} the model is more confident "
                f"({top_conf:.1%} mean confidence, clean {clean_conf:.1%}) while it is more "
                f"often wrong ({top_acc:.1%} accuracy, clean {clean_acc:.1%}): its confidence "
                "cannot warn of this shift",
                f"corruption.{name}.mean_confidence",
            )
    section.put("corruption.mean.ece", float(np.mean(eces)))
    section.put("corruption.mean.flip_rate", float(np.mean(flips)))
    section.tables["calibration"] = Table(
        ["corruption", "mean confidence", "accuracy", "ECE", "flip rate"],
        rows,
        caption=f"Severities pooled. Clean on the same images: mean confidence "
        f"{out.clean_confidence.mean():.1%}, ECE {clean_ece:.3f}. Flip rate: share of "
        "corrupted images whose prediction differs from the clean prediction.",
    )


def _per_class(section: Section, out: Outcomes, classes: list[str]) -> None:
    rows = []
    for k, name in enumerate(classes):
        mine = out.labels == k
        cells = []
        for c, corruption in enumerate(out.names):
            acc = float(out.per_image[mine, c].mean()) if mine.any() else None
            key = CORRUPTION_CLASS_ACCURACY.key(corruption=corruption, **{"class": key_part(name)})
            section.put(key, acc, reason=f"no corrupted image of class {name!r}")
            cells.append(acc)
        rows.append([name, int(mine.sum()), *cells])
    section.tables["per_class"] = Table(
        ["class", "images", *out.names],
        rows,
        caption="Accuracy per true class under each corruption, mean over severities.",
    )


def _per_group(
    section: Section, rows: pd.DataFrame, out: Outcomes, means: dict[str, float]
) -> None:
    """Accuracy per group under each corruption; a table and a finding for the worst group
    under the most damaging corruption."""
    worst = min(means, key=means.get)
    w = out.names.index(worst)
    table_rows, worst_groups = [], []
    for column in (c for c in rows.columns if c.startswith(ATTR_PREFIX)):
        attribute = column[len(ATTR_PREFIX) :]
        for value, members in rows.groupby(column, sort=True):
            mask = rows.index.isin(members.index)
            for c, corruption in enumerate(out.names):
                key = CORRUPTION_GROUP_ACCURACY.key(
                    corruption=corruption, attribute=key_part(attribute), value=key_part(value)
                )
                section.put(key, float(out.per_image[mask, c].mean()))
            acc = float(out.per_image[mask, w].mean())
            clean = float(out.clean_correct[mask].mean())
            table_rows.append([attribute, value, int(mask.sum()), clean, acc])
            worst_groups.append((acc, attribute, value, int(mask.sum())))
    if table_rows:
        section.tables["per_group"] = Table(
            ["attribute", "group", "images", "clean accuracy", f"accuracy under {worst}"],
            table_rows,
            caption=f"Per group under the most damaging corruption ({worst}, mean over "
            "severities); every corruption's group accuracy is in the JSON.",
        )
        acc, attribute, value, size = min(worst_groups)
        tied = [f"{a} = {v} ({n} images)" for low, a, v, n in worst_groups if low == acc]
        named = (
            f"{attribute} = {value} at {acc:.1%} ({size} images)"
            if len(tied) == 1
            else f"tie at {acc:.1%} between {', '.join(tied)}"
        )
        section.find(
            "info",
            f"worst group under the most damaging corruption ({worst}): {named}",
            CORRUPTION_GROUP_ACCURACY.key(
                corruption=worst, attribute=key_part(attribute), value=key_part(value)
            ),
        )


def _checks(rows: pd.DataFrame, out: Outcomes, level: float) -> list[Check]:
    same = rows[corruption_check_column("severity0_pred")].to_numpy() == out.clean_pred
    bad = rows[corruption_check_column("out_of_range")].to_numpy()
    diff = rows[corruption_check_column("batch_confidence_diff")].dropna().to_numpy()
    changed = rows[corruption_check_column("batch_pred_changed")].dropna().to_numpy()
    z = float(norm.ppf(1 - (1 - level) / 2))
    rises = [
        f"{name} {out.severities[i]}→{out.severities[j]} (+{b - c} images)"
        for c_idx, name in enumerate(out.names)
        for i, j, b, c in _severity_rises(out.correct[:, c_idx], z)
    ]
    return [
        Check(
            "severity_zero_is_clean",
            bool(same.all()),
            f"{int((~same).sum())} of {len(same)} images predicted differently",
            "severity 0 (the image unchanged) run through the corruption path gives the clean "
            "probe's prediction",
        ),
        Check(
            "images_in_range",
            bool((bad == 0).all()),
            f"{int(bad.sum())} corrupted images not finite or outside [0, 1]",
            "every corrupted image is a valid image in [0, 1]",
        ),
        Check(
            "batch_size_invariant",
            bool(len(diff)) and bool((changed == 0).all() and diff.max() <= CONFIDENCE_TOLERANCE),
            f"{len(diff)} images re-run in blocks of 5: largest confidence change "
            f"{diff.max() if len(diff) else float('nan'):.1e}, "
            f"{int(changed.sum()) if len(changed) else 0} predictions changed",
            "an image's corruption and prediction do not depend on the images beside it",
        ),
        Check(
            "accuracy_falls_with_severity",
            not rises,
            "rises: " + "; ".join(rises) if rises else "no rise beyond sampling error",
            f"accuracy does not rise from one severity to the next beyond sampling error "
            f"(paired sign test, {level:.0%})",
        ),
    ]


def _outcome(check: Check) -> str:
    """pass, FAIL (a blocking check) or warn (a finding only)."""
    if check.passed:
        return "pass"
    return "FAIL" if check.name in BLOCKING else "warn"


def _headline(
    section: Section, out: Outcomes, clean: float, means: dict[str, float], failed: list
) -> str:
    if failed:
        return (
            "UNRELIABLE: a corruption sanity check failed ("
            + ", ".join(c.name for c in failed)
            + "); the numbers below may not measure the model."
        )
    overall = section.metrics[CORRUPTION_MEAN_ACCURACY.key()]
    order = sorted(means, key=means.get)
    worst = ", ".join(f"{name} ({means[name]:.1%})" for name in order[:3])
    return (
        f"Under {len(out.names)} common corruptions at severities "
        f"{out.severities[0]}–{out.severities[-1]}, accuracy falls from {clean:.1%} to "
        f"{overall:.1%} on average; most damaging: {worst}."
    )


def _method(ctx: AnalysisContext, out: Outcomes, n: int) -> str:
    run = ctx.artifacts.get("corruption", {})
    return (
        f"{n} test images (class-stratified subset; corruptions.samples) corrupted by "
        f"{len(out.names)} corruptions at severities {', '.join(map(str, out.severities))} "
        "on the model's device (torchvision.transforms.v2 ops where torchvision has the "
        "operation), each image's random draws seeded by (run seed "
        f"{ctx.seed}, 'corruption', sample id), the same for every model and severity. "
        "Severity parameters in [0, 1] pixel units: the report's severity table. Accuracy per "
        f"severity with exact {ctx.config.confidence_level:.0%} intervals; means over "
        f"severities with a {ctx.config.bootstrap}-draw bootstrap over images. ECE: "
        f"{ctx.config.ece_bins} equal-width bins over all severities' predictions. "
        f"Blocks of {run.get('passes', {}).get('batch_size', '?')} images, model passes of "
        f"{run.get('passes', {}).get('forward_chunk', '?')}."
    )


def reference_errors(base: dict, other: dict) -> dict[str, float | None]:
    """A retrained model's corruption errors relative to the baseline's, from the two
    models' metrics: ``corruption.<name>.ce`` = Σ_s error(model) / Σ_s error(baseline) per
    corruption and ``corruption.mce``, their mean (Hendrycks & Dietterich 2019, with the
    baseline as the reference model); {} when either model has no corruption numbers."""
    errors: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for key, value in base.items():
        found = CORRUPTION_SEVERITY_ACCURACY.match(key)
        if found is None or value is None or other.get(key) is None:
            continue
        errors[found["corruption"]][0] += 1 - other[key]
        errors[found["corruption"]][1] += 1 - value
    metrics: dict[str, float | None] = {}
    for name, (mine, reference) in errors.items():
        metrics[CORRUPTION_CE.key(corruption=name)] = mine / reference if reference else None
    ratios = [v for v in metrics.values() if v is not None]
    if errors:
        metrics[CORRUPTION_MCE.key()] = float(np.mean(ratios)) if ratios else None
    return metrics


def add_reference_errors(models: dict) -> None:
    """Give every retrained model (not ``baseline``) its :func:`reference_errors`, in its
    metrics and its corruption section (``models``: name → ModelResult)."""
    base = models.get("baseline")
    for name, model in models.items():
        if name == "baseline" or base is None:
            continue
        extra = reference_errors(base.metrics, model.metrics)
        model.metrics.update(extra)
        for section in model.sections:
            if section["name"] == "corruption":
                section["metrics"].update(extra)
                if extra.get(CORRUPTION_MCE.key()) is not None:
                    section["headline"] += (
                        f" Mean corruption error {extra[CORRUPTION_MCE.key()]:.2f} × the "
                        "baseline's (below 1: more robust to corruptions than the baseline)."
                    )
