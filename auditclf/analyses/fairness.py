"""Fairness: the same metrics per group of each attribute, their gaps, and intervals on them.

For each audited attribute (``attr.<name>`` columns of the sample table; see
:mod:`auditclf.data.attributes`), and for their intersection on request,
fairlearn's ``MetricFrame`` computes per group and overall:

- accuracy; balanced accuracy (scikit-learn's: mean recall over the classes
  present in the group); macro recall (mean recall over *all* classes, so
  every group is scored on the same classes; undefined for a group that lacks
  a class);
- ECE (equal-width confidence bins, as in the Calibration section);
- per class k, one-vs-rest: TPR_k = P(pred = k | true = k), FPR_k =
  P(pred = k | true ≠ k), selection rate_k = P(pred = k) (fairlearn's
  ``true_positive_rate``, ``false_positive_rate``, ``selection_rate``);
  a rate whose denominator is empty in a group (no image of class k: TPR;
  only images of class k: FPR) is undefined, never 0;
- robust accuracy for every attack × eps column of the table, on the images
  that attack ran on.

MetricFrame runs over each attribute's sufficient statistics rather than the
rows: one row per (group, true class, predicted class) cell with its count as
the sample weight (ECE: per (group, bin, correct) with the cell's confidence
sum). Every metric above depends on the rows only through these sums, so the
values are those of the row-level MetricFrame, at a cost that does not grow
with the number of rows.

A group with fewer than ``min_group_size`` test images (attacked images, for
robust accuracy) is "insufficient data": its metrics are null with that reason
and it is left out of the aggregates. Over the remaining groups with a defined
value: min, max, difference = max − min and ratio = min / max (fairlearn's
``between_groups`` aggregates), and the worst group. Multiclass parity:

- equalized-odds difference = max over classes k of the larger of the TPR_k
  and FPR_k differences;
- demographic-parity difference = max over classes k of the selection-rate_k
  difference.

Intervals: group accuracy, exact Clopper–Pearson; differences, the percentile
interval of ``n_boot`` seeded bootstrap resamples of the test rows. A row
resample's cell counts are one multinomial draw over the cells, so the draws
are made on the counts directly (the same distribution as resampling rows,
and what keeps a million rows fast; fairlearn's own ``n_boot`` re-evaluates
every metric on every resampled frame). For ECE, the confidences of a
(group, correct, bin) cell are taken at their mean in a resample, which
ignores their spread within one bin. The difference is a maximum
minus a minimum, so noise alone makes it positive; a gap becomes a warning
only when it exceeds ``GAP_THRESHOLD`` and the worst group's exact interval
lies below the overall accuracy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from itertools import product

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, key_part
from auditclf.analyses.calibration import bin_index
from auditclf.analyses.cells import (
    GroupMetric,
    confusion_rates,
    ece_from_cells,
    multinomial_draws,
)
from auditclf.analyses.fairness_report import (
    GAP_THRESHOLD,
    METHOD,
    RATES,
    TITLES,
    AttributeReport,
    FairnessSection,
    section_headline,
    summary_table,
)
from auditclf.analyses.robustness import attack_columns
from auditclf.data.attributes import MISSING, audited_attributes, sorted_values
from auditclf.errors import DataError
from auditclf.evidence import ATTR_PREFIX
from auditclf.keys import adv_column, class_metric, robust_metric
from auditclf.seeding import numpy_rng

LOWER_IS_BETTER = ("ece", "fpr")


@dataclass
class Grouping:
    """One audited attribute (or intersection): a group code per row and the groups' names."""

    name: str
    key: str
    labels: list[str]
    keys: list[str]
    codes: np.ndarray
    definition: str

    @property
    def size(self) -> int:
        return len(self.labels)


# --- groupings ---------------------------------------------------------------------------


def _unique_keys(labels: list[str]) -> list[str]:
    """key_part of each label; a clash gets the first free ``_2``, ``_3``, ...

    Single attributes never clash (the data loaders refuse such values); the
    combinations of an intersection can (``a_x`` × ``b`` and ``a`` × ``x_b``).
    """
    keys: list[str] = []
    taken: set[str] = set()
    for label in labels:
        base = key = key_part(label)
        suffix = 1
        while key in taken:
            suffix += 1
            key = f"{base}_{suffix}"
        keys.append(key)
        taken.add(key)
    return keys


def _group_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(a group code per row, the groups' names): values stripped, empty or NaN → (missing).

    Distinct values are found once (``pd.factorize``) and cleaned, so a million
    rows cost one hash pass, not a million string operations.
    """
    raw_codes, uniques = pd.factorize(column, use_na_sentinel=True)
    cleaned = [str(v).strip() or MISSING for v in uniques]
    labels = sorted_values([*cleaned, *([MISSING] if (raw_codes < 0).any() else [])])
    position = {label: i for i, label in enumerate(labels)}
    # The last entry serves NaN (factorize's code -1); it is unused when nothing is missing.
    lookup = np.array([position.get(v, -1) for v in [*cleaned, MISSING]], dtype=np.int64)
    return lookup[raw_codes], labels


def groupings(table: pd.DataFrame, ctx: AnalysisContext) -> list[Grouping]:
    """The attributes to audit (``fairness.groups`` or all) and, on request, their intersection."""
    available = [c[len(ATTR_PREFIX) :] for c in table.columns if c.startswith(ATTR_PREFIX)]
    chosen = audited_attributes(ctx.fairness, available)
    missing = [name for name in chosen if name not in available]
    if missing:
        raise DataError(
            f"no attribute column {missing[0]!r} in the sample table; "
            f"available: {', '.join(available) or 'none'}"
        )
    definitions = ctx.data_summary.get("attribute_definitions", {})
    found = []
    for name in chosen:
        codes, labels = _group_codes(table[ATTR_PREFIX + name])
        found.append(
            Grouping(
                name,
                key_part(name),
                labels,
                _unique_keys(labels),
                codes,
                definitions.get(name, "an attribute column of the sample table"),
            )
        )
    if ctx.fairness["intersect"] and len(found) >= 2:
        found.append(_intersection(found))
    return found


def _intersection(parts: list[Grouping]) -> Grouping:
    """Every combination of the parts' values, empty ones included (they show n = 0)."""
    combos = list(product(*(p.labels for p in parts)))
    codes = np.zeros(len(parts[0].codes), dtype=np.int64)
    for part in parts:
        codes = codes * part.size + part.codes
    labels = [" × ".join(combo) for combo in combos]
    keys = _unique_keys(["_x_".join(key_part(v) for v in combo) for combo in combos])
    names = [p.name for p in parts]
    return Grouping(
        " × ".join(names),
        "_x_".join(p.key for p in parts),
        labels,
        keys,
        codes,
        f"every combination of {', '.join(names)} (combinations without test images: n = 0)",
    )


# --- metrics of one group, as MetricFrame evaluates them ----------------------------------


def _accuracy(y_true, y_pred, sample_weight) -> float:
    if not np.sum(sample_weight) > 0:
        return float("nan")
    return float(accuracy_score(y_true, y_pred, sample_weight=sample_weight))


def _balanced_accuracy(y_true, y_pred, sample_weight) -> float:
    with warnings.catch_warnings():
        # Classes predicted but absent from the group are left out: that is the definition.
        # A group holding one class, always predicted right, has a 1×1 confusion matrix.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred, sample_weight=sample_weight))


def _macro_recall(y_true, y_pred, sample_weight, *, classes: int) -> float:
    recalls = recall_score(
        y_true,
        y_pred,
        labels=list(range(classes)),
        average=None,
        sample_weight=sample_weight,
        zero_division=np.nan,
    )
    return float("nan") if np.isnan(recalls).any() else float(np.mean(recalls))


def _tpr(y_true, y_pred, sample_weight, *, cls: int) -> float:
    positive = y_true == cls
    if not np.sum(sample_weight[positive]) > 0:
        return float("nan")  # fairlearn would return 0 for a group without positives
    return float(
        true_positive_rate(
            positive.astype(int), (y_pred == cls).astype(int), sample_weight, pos_label=1
        )
    )


def _fpr(y_true, y_pred, sample_weight, *, cls: int) -> float:
    negative = y_true != cls
    if not np.sum(sample_weight[negative]) > 0:
        return float("nan")
    return float(
        false_positive_rate(
            (~negative).astype(int), (y_pred == cls).astype(int), sample_weight, pos_label=1
        )
    )


def _selection_rate(y_true, y_pred, sample_weight, *, cls: int) -> float:
    return float(
        selection_rate(
            y_true, (y_pred == cls).astype(int), pos_label=1, sample_weight=sample_weight
        )
    )


def _ece(y_true, y_pred, sample_weight, confidence_sum) -> float:
    """ECE from cells: y_true 1 if their predictions are correct, y_pred the confidence bin,
    ``confidence_sum`` the cells' summed confidences. Σ_bins |hits − Σ confidence| / images."""
    hits = np.bincount(y_pred, weights=sample_weight * y_true)
    confidence = np.bincount(y_pred, weights=confidence_sum)
    return float(np.abs(hits - confidence).sum() / np.sum(sample_weight))


def confusion_metrics(num_classes: int) -> dict:
    """The MetricFrame metrics over (true, predicted) cells, named as in the metric keys."""
    metrics = {
        "accuracy": _accuracy,
        "balanced_accuracy": _balanced_accuracy,
        "macro_recall": partial(_macro_recall, classes=num_classes),
    }
    for c in range(num_classes):
        metrics[f"class.{c}.tpr"] = partial(_tpr, cls=c)
        metrics[f"class.{c}.fpr"] = partial(_fpr, cls=c)
        metrics[f"class.{c}.selection_rate"] = partial(_selection_rate, cls=c)
    return metrics


def _cells(counts: np.ndarray, **sums: np.ndarray) -> dict[str, np.ndarray]:
    """The non-empty cells of (G, A, B) counts as columns group, y_true (A), y_pred (B), weight.

    ``sums`` are arrays shaped like ``counts`` (per-cell sums) carried along as columns.
    """
    group, y_true, y_pred = np.nonzero(counts)
    cells = {
        "group": group,
        "y_true": y_true,
        "y_pred": y_pred,
        "weight": counts[group, y_true, y_pred].astype(np.float64),
    }
    cells.update({name: values[group, y_true, y_pred] for name, values in sums.items()})
    return cells


def _frame(metrics: dict, cells: dict[str, np.ndarray], params: dict | None = None) -> MetricFrame:
    """fairlearn's MetricFrame over weighted cells; each metric gets the weights by default."""
    return MetricFrame(
        metrics=metrics,
        y_true=cells["y_true"],
        y_pred=cells["y_pred"],
        sensitive_features=pd.Series(cells["group"], name="group"),
        sample_params=params or {name: {"sample_weight": cells["weight"]} for name in metrics},
    )


def _by_group(frame: MetricFrame, n_groups: int) -> pd.DataFrame:
    """by_group with a row for every group code (groups without cells are NaN)."""
    return frame.by_group.reindex(range(n_groups))


# --- one attribute -----------------------------------------------------------------------


def _stack(parts: list[dict], name: str, c: int | None = None) -> np.ndarray | None:
    if not parts:
        return None
    stacked = np.concatenate([part[name] for part in parts])
    return stacked if c is None else stacked[..., c]


class AttributeAudit:
    """Every metric of one grouping over one model's rows (computed in the constructor)."""

    def __init__(self, grouping: Grouping, table: pd.DataFrame, ctx: AnalysisContext) -> None:
        self.g, self.ctx = grouping, ctx
        self.classes = ctx.classes
        self.min_size = int(ctx.fairness["min_group_size"])
        self.n_boot = int(ctx.fairness["n_boot"])
        self.labels = table["label"].to_numpy(np.int64)
        self.pred = table["pred"].to_numpy(np.int64)
        self.sizes = np.bincount(grouping.codes, minlength=grouping.size)
        self.eligible = self.sizes >= self.min_size
        self.metrics: dict[str, GroupMetric] = {}
        self.robust: list[tuple[str, str]] = []
        self.counts = self._clean()
        self._calibration(table["confidence"].to_numpy(np.float64))
        self._robustness(table)

    def _rng(self, *family: str) -> np.random.Generator:
        return numpy_rng(self.ctx.seed, "fairness", self.g.key, *family)

    def too_small(self, n: int, what: str = "test images") -> str:
        return f"insufficient data (n = {n} < {self.min_size} {what})"

    def _add(self, metric: GroupMetric) -> None:
        self.metrics[metric.key] = metric

    def _clean(self) -> np.ndarray:
        """Accuracy, balanced accuracy, macro recall and the per-class rates; (G, K, K) counts."""
        k, size = len(self.classes), self.g.size
        flat = (self.g.codes * k + self.labels) * k + self.pred
        counts = np.bincount(flat, minlength=size * k * k).reshape(size, k, k)
        by_group, overall = None, {}
        if counts.sum():
            frame = _frame(confusion_metrics(k), _cells(counts))
            by_group, overall = _by_group(frame, size), frame.overall
        resamples = multinomial_draws(counts, self.n_boot, self._rng("confusion"))
        draws = [confusion_rates(d) for d in resamples]

        def column(name: str) -> np.ndarray:
            return np.full(size, np.nan) if by_group is None else by_group[name].to_numpy(float)

        for name in ("accuracy", "balanced_accuracy", "macro_recall"):
            reasons = [self._reason(name, counts[i]) for i in range(size)]
            self._add(
                GroupMetric(
                    name,
                    TITLES[name],
                    column(name),
                    self.eligible,
                    reasons,
                    _stack(draws, name),
                    overall=float(overall.get(name, np.nan)),
                )
            )
        for c, cls in enumerate(self.classes):
            for rate in RATES:
                reasons = [self._reason(rate, counts[i], c) for i in range(size)]
                self._add(
                    GroupMetric(
                        class_metric(key_part(cls), rate),
                        f"{TITLES[rate]} of class {cls}",
                        column(f"class.{c}.{rate}"),
                        self.eligible,
                        reasons,
                        _stack(draws, rate, c),
                        lower_is_better=rate in LOWER_IS_BETTER,
                        overall=float(overall.get(f"class.{c}.{rate}", np.nan)),
                    )
                )
        return counts

    def _reason(self, metric: str, counts: np.ndarray, c: int | None = None) -> str:
        """Why a group's value is null: too small, or a rate whose denominator is empty."""
        n = int(counts.sum())
        if n < self.min_size:
            return self.too_small(n)
        if metric == "tpr" and counts[c].sum() == 0:
            return f"no test image of class {self.classes[c]!r} in the group: TPR is undefined"
        if metric == "fpr" and counts[c].sum() == n:
            return (
                f"every test image in the group is of class {self.classes[c]!r}: FPR is undefined"
            )
        if metric == "macro_recall":
            absent = [self.classes[i] for i in np.flatnonzero(counts.sum(axis=1) == 0)]
            return (
                f"class(es) {', '.join(absent)} have no test image in the group; macro "
                "recall averages over every class"
            )
        return "undefined"

    def _calibration(self, confidence: np.ndarray) -> None:
        """ECE per group from (group, correct, bin) cells with their confidence sums."""
        bins, size = self.ctx.config.ece_bins, self.g.size
        correct = (self.labels == self.pred).astype(np.int64)
        flat = (self.g.codes * 2 + correct) * bins + bin_index(confidence, bins)
        counts = np.bincount(flat, minlength=size * 2 * bins).reshape(size, 2, bins)
        sums = np.bincount(flat, weights=confidence, minlength=counts.size).reshape(counts.shape)
        values, overall = np.full(size, np.nan), float("nan")
        if counts.sum():
            cells = _cells(counts, confidence_sum=sums)
            params = {
                "ece": {"sample_weight": cells["weight"], "confidence_sum": cells["confidence_sum"]}
            }
            frame = _frame({"ece": _ece}, cells, params)
            values = _by_group(frame, size)["ece"].to_numpy(float)
            overall = float(frame.overall["ece"])
        mean_confidence = sums / np.maximum(counts, 1)
        draws = [
            ece_from_cells(d, mean_confidence)
            for d in multinomial_draws(counts, self.n_boot, self._rng("ece"))
        ]
        reasons = [self.too_small(int(n)) if n < self.min_size else "undefined" for n in self.sizes]
        self._add(
            GroupMetric(
                "ece",
                "ECE",
                values,
                self.eligible,
                reasons,
                np.concatenate(draws) if draws else None,
                lower_is_better=True,
                overall=overall,
            )
        )

    def _robustness(self, table: pd.DataFrame) -> None:
        """Robust accuracy per group for every attack × eps column, on the attacked images.

        One MetricFrame over all columns: cells (column, group, true, adversarial
        prediction); each column's metric sees only its own cells' weights.
        """
        k, size = len(self.classes), self.g.size
        columns = [(a, e) for a, radii in attack_columns(table).items() for e in radii]
        if not columns:
            return
        metrics, params, cells = {}, {}, []
        per_column = []
        for j, (attack, eps) in enumerate(columns):
            adv = table[adv_column(attack, eps, "pred")].to_numpy(np.float64)
            ran = np.isfinite(adv)
            adv_pred = np.where(ran, adv, 0).astype(np.int64)
            flat = (self.g.codes[ran] * k + self.labels[ran]) * k + adv_pred[ran]
            counts = np.bincount(flat, minlength=size * k * k).reshape(size, k, k)
            part = _cells(counts)
            part["column"] = np.full(len(part["group"]), j)
            cells.append(part)
            # Resampling states per group: not attacked, attacked and correct, attacked and wrong.
            hits = np.diagonal(counts, axis1=1, axis2=2).sum(axis=1)
            attacked = counts.sum(axis=(1, 2))
            per_column.append(np.stack([self.sizes - attacked, hits, attacked - hits], axis=1))
        merged = {name: np.concatenate([c[name] for c in cells]) for name in cells[0]}
        for j in range(len(columns)):
            name = f"column{j}"
            metrics[name] = _accuracy
            params[name] = {"sample_weight": np.where(merged["column"] == j, merged["weight"], 0.0)}
        frame = _frame(metrics, merged, params) if merged["weight"].size else None
        by_group = None if frame is None else _by_group(frame, size)
        for j, (attack, eps) in enumerate(columns):
            states = per_column[j]
            attacked = states[:, 1] + states[:, 2]
            eligible = attacked >= self.min_size
            draws = []
            for d in multinomial_draws(states, self.n_boot, self._rng("robust", attack, eps)):
                with np.errstate(invalid="ignore", divide="ignore"):
                    draws.append(d[..., 1] / (d[..., 1] + d[..., 2]))
            values = np.full(size, np.nan)
            if by_group is not None:
                values = by_group[f"column{j}"].to_numpy(float)
            reasons = [
                self.too_small(int(n), "attacked images") if n < self.min_size else "undefined"
                for n in attacked
            ]
            self._add(
                GroupMetric(
                    robust_metric(attack, eps),
                    f"robust accuracy, {attack} @ {eps}",
                    values,
                    eligible,
                    reasons,
                    np.concatenate(draws) if draws else None,
                    unit="attacked images",
                    overall=np.nan if frame is None else float(frame.overall[f"column{j}"]),
                )
            )
            self.robust.append((attack, eps))


@ANALYSES.register("fairness")
def fairness(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = FairnessSection("fairness", "Fairness")
    if not ctx.fairness["enabled"]:
        section.headline = "Not checked (fairness.enabled is false)."
        return section
    found = groupings(table, ctx)
    if not found:
        section.headline = "The data carries no group attributes; no subgroup was audited."
        return section
    reports = [AttributeReport(section, AttributeAudit(g, table, ctx), ctx) for g in found]
    section.attributes = [report.block() for report in reports]
    section.tables = {"summary": summary_table(reports), **section.tables}
    section.headline = section_headline(reports, len(table))
    section.method = METHOD.format(
        bins=ctx.config.ece_bins,
        min_size=ctx.fairness["min_group_size"],
        level=ctx.config.confidence_level,
        n_boot=ctx.fairness["n_boot"],
        seed=ctx.seed,
        gap=GAP_THRESHOLD,
    )
    return section
