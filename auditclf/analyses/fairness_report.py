"""The fairness section as a reviewer reads it: metric keys, tables, bar chart data, sentences.

Everything here formats what :mod:`auditclf.analyses.fairness` computed; no
metric is computed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from auditclf.analyses.base import AnalysisContext, Section, Table, key_part
from auditclf.analyses.bootstrap import clopper_pearson, percentile_interval
from auditclf.analyses.cells import GroupMetric, spread
from auditclf.keys import class_metric, fairness_key, robust_metric

if TYPE_CHECKING:
    from auditclf.analyses.fairness import AttributeAudit

GAP_THRESHOLD = 0.05  # accuracy difference (share of images) that can raise a finding
RATES = ("tpr", "fpr", "selection_rate")
TITLES = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "macro_recall": "macro recall",
    "ece": "ECE",
    "tpr": "TPR",
    "fpr": "FPR",
    "selection_rate": "selection rate",
}
MAX_GROUP_COLUMNS = 6  # robust table: one column per group up to this many groups
INSUFFICIENT = "insufficient data"
# which images of a group each one-vs-rest rate of class k is measured on
RATE_IMAGES = {"tpr": "images of class", "fpr": "images not of class", "selection_rate": "images"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class FairnessSection(Section):
    """A Section with one block per attribute for the report (``attributes``)."""

    attributes: list[dict] = field(default_factory=list)


def _interval(values: tuple[float, float]) -> tuple[float, float] | None:
    return values if all(np.isfinite(values)) else None


class AttributeReport:
    """Writes one grouping's metrics into the section and builds its report block."""

    def __init__(self, section: FairnessSection, audit: AttributeAudit, ctx: AnalysisContext):
        self.section, self.audit, self.g = section, audit, audit.g
        self.attr = audit.g.key  # the attribute as a key part
        self.level = ctx.config.confidence_level
        self.reference = ctx.artifacts.get("robustness", {}).get("reference_eps")
        for metric in audit.metrics.values():
            metric.summarise(self.level)

    def none_qualify(self, metric: GroupMetric, how_many: str) -> str:
        return (
            f"{how_many} with at least {self.audit.min_size} {metric.unit} and a defined "
            f"{metric.title}"
        )

    def record(self) -> None:
        put, audit = self.section.put, self.audit
        for i, key in enumerate(self.g.keys):
            put(fairness_key(self.attr, "size", group=key), float(audit.sizes[i]))
        for metric in audit.metrics.values():
            for i, key in enumerate(self.g.keys):
                value = metric.values[i] if metric.eligible[i] else None
                put(fairness_key(self.attr, metric.key, group=key), value, reason=metric.reasons[i])
            base = fairness_key(self.attr, metric.key)
            aggregates = metric.aggregates
            none = self.none_qualify(metric, "no group")
            for stat in ("min", "max"):
                put(f"{base}.{stat}", aggregates[stat], reason=none)
            too_few = self.none_qualify(metric, "fewer than two groups")
            put(f"{base}.difference", aggregates["difference"], reason=too_few)
            ratio_reason = (
                "the largest group value is 0" if np.isfinite(aggregates["difference"]) else too_few
            )
            put(f"{base}.ratio", aggregates["ratio"], reason=ratio_reason)
            reason = self._interval_reason(aggregates["difference"], too_few)
            self.section.put_interval(f"{base}.difference", metric.interval, reason=reason)
        self._accuracy_intervals()
        self._parity()

    def _interval_reason(self, difference: float, too_few: str) -> str:
        if self.audit.n_boot == 0:
            return "no bootstrap draws (fairness.n_boot is 0)"
        return too_few if not np.isfinite(difference) else "undefined in every bootstrap draw"

    def _accuracy_intervals(self) -> None:
        hits = np.diagonal(self.audit.counts, axis1=1, axis2=2).sum(axis=1)
        self.accuracy_ci: list[tuple[float, float] | None] = []
        for i, key in enumerate(self.g.keys):
            n = int(self.audit.sizes[i])
            eligible = bool(self.audit.eligible[i])
            ci = clopper_pearson(int(hits[i]), n, self.level) if eligible else (None, None)
            reason = self.audit.too_small(n)
            self.section.put_interval(
                fairness_key(self.attr, "accuracy", group=key), ci, reason=reason
            )
            self.accuracy_ci.append(ci if eligible else None)

    def small_cells(self, rates: tuple[str, ...]) -> list[str]:
        """The class × group cells under ``min_group_size`` that a parity difference over
        ``rates`` is computed on: each eligible group's images of class k (TPR_k), its other
        images (FPR_k), all its images (selection rate); an empty cell computes nothing."""
        support = self.audit.counts.sum(axis=2)  # (G, K): images of class k in group g
        small = []
        for g in np.flatnonzero(self.audit.eligible):
            size = int(self.audit.sizes[g])
            for k, cls in enumerate(self.audit.classes):
                measured = {"tpr": support[g, k], "fpr": size - support[g, k]}
                for rate in rates:
                    n = int(measured.get(rate, size))
                    if 0 < n < self.audit.min_size:
                        small.append(
                            f"{self.g.labels[g]}, {RATE_IMAGES[rate]} {cls} ({TITLES[rate]}): {n}"
                        )
        return small

    def _insufficient_note(self, key: str, small: list[str]) -> None:
        """The note that marks a parity number resting on too-small cells (report.json keeps
        the number and its interval; the tables show "insufficient data")."""
        listed = "; ".join(small[:4]) + (f"; and {len(small) - 4} more" if len(small) > 4 else "")
        self.section.notes[key] = (
            f"{INSUFFICIENT}: computed on {_count(len(small), 'class × group cell')} with fewer "
            f"than {self.audit.min_size} test images ({listed}), so the number is mostly noise"
        )

    def _parity(self) -> None:
        """Multiclass equalized odds and demographic parity: the largest per-class difference,
        and the too-small class × group cells it rests on (:meth:`small_cells`)."""
        self.parity = {}
        classes = [key_part(c) for c in self.audit.classes]
        for name, rates in (
            ("equalized_odds_difference", ("tpr", "fpr")),
            ("demographic_parity_difference", ("selection_rate",)),
        ):
            chosen = [self.audit.metrics[class_metric(c, r)] for c in classes for r in rates]
            value = float(np.fmax.reduce([m.aggregates["difference"] for m in chosen]))
            interval = (float("nan"), float("nan"))
            if all(m.draws is not None for m in chosen):
                per_draw = np.fmax.reduce(
                    np.stack([spread(m.draws, m.eligible)["difference"] for m in chosen]), axis=0
                )
                interval = percentile_interval(per_draw, self.level)
            too_few = (
                f"no class has a {'/'.join(TITLES[r] for r in rates)} difference: fewer than "
                f"two groups with at least {self.audit.min_size} test images"
            )
            key = fairness_key(self.attr, name)
            self.section.put(key, value, reason=too_few)
            reason = self._interval_reason(value, too_few)
            self.section.put_interval(key, interval, reason=reason)
            small = self.small_cells(rates) if np.isfinite(value) else []
            if small:
                self._insufficient_note(key, small)
            self.parity[name] = (value, interval, small)

    def parity_cells(self, name: str) -> tuple:
        """A parity difference and its interval as the tables show them: "insufficient data"
        and no interval when it rests on a too-small class × group cell."""
        value, interval, small = self.parity[name]
        return (INSUFFICIENT, None) if small else (value, _interval(interval))

    # --- what the reader sees ---

    def _group_cell(self, metric: GroupMetric, i: int):
        if not metric.eligible[i]:
            return "insufficient data" if metric.key == "accuracy" else None
        value = metric.values[i]
        return float(value) if np.isfinite(value) else None

    def _largest_class(self, counts: np.ndarray) -> str:
        support = counts.sum(axis=1)
        if not support.sum():
            return "—"
        top = int(np.argmax(support))
        return f"{self.audit.classes[top]} ({support[top] / support.sum():.0%})"

    def worst_label(self, metric: GroupMetric) -> str:
        """The worst group's name; "tie: a, b" when several groups share the worst value;
        — when there is no gap (fewer than two groups, or every group equal)."""
        worst = metric.worst()
        if worst is None or not np.isfinite(metric.aggregates["difference"]):
            return "—"
        return self.tied_label(metric) or self.g.labels[worst]

    def tied_label(self, metric: GroupMetric) -> str | None:
        """The tie, "tie: a, b", when several groups share the worst value; else None."""
        tied = metric.tied_with_worst()
        if len(tied) < 2:
            return None
        return "tie: " + ", ".join(self.g.labels[i] for i in tied)

    def tables(self) -> list[str]:
        """The block's tables: by group, gaps, per class, robust accuracy; their names."""
        key = self.g.key
        tables = {
            f"{key}.groups": self._groups_table(),
            f"{key}.gaps": self._gaps_table(),
            f"{key}.classes": self._classes_table(),
        }
        if self.audit.robust:
            tables[f"{key}.robust"] = self._robust_table()
        self.section.tables.update(tables)
        return list(tables)

    def _groups_table(self) -> Table:
        audit, metrics = self.audit, self.audit.metrics
        reference = robust_metric("pgd_linf", self.reference)
        robust = [metrics[reference]] if reference in metrics else []
        shown = [metrics[k] for k in ("balanced_accuracy", "macro_recall", "ece")] + robust
        hits = int(np.trace(audit.counts.sum(axis=0)))
        rows = [
            [
                "all test images",
                int(audit.sizes.sum()),
                metrics["accuracy"].overall,
                clopper_pearson(hits, int(audit.sizes.sum()), self.level),
                *[m.overall for m in shown],
                self._largest_class(audit.counts.sum(axis=0)),
            ]
        ]
        for i, label in enumerate(self.g.labels):
            rows.append(
                [
                    label,
                    int(audit.sizes[i]),
                    self._group_cell(metrics["accuracy"], i),
                    self.accuracy_ci[i],
                    *[self._group_cell(m, i) for m in shown],
                    self._largest_class(audit.counts[i]),
                ]
            )
        return Table(
            [
                "group",
                "images",
                "accuracy",
                f"{self.level:.0%} CI",
                "balanced accuracy",
                "macro recall",
                "ECE",
                *[f"robust accuracy, PGD-L∞ @ {self.reference}" for _ in robust],
                "largest class (share)",
            ],
            rows,
            caption=f"Per group of {self.g.name}. Groups with fewer than {audit.min_size} test "
            "images are insufficient data and left out of every gap. Balanced accuracy averages "
            "recall over the classes present in the group, so a group is not rewarded for "
            "holding easy classes; macro recall averages over every class and is undefined (—) "
            "when the group lacks one.",
        )

    def _gap_row(self, metric: GroupMetric) -> list:
        aggregates = metric.aggregates
        return [
            metric.title,
            aggregates["min"],
            aggregates["max"],
            aggregates["difference"],
            _interval(metric.interval),
            aggregates["ratio"],
            self.worst_label(metric),
        ]

    def _gaps_table(self) -> Table:
        metrics = self.audit.metrics
        rows = [
            self._gap_row(metrics[k])
            for k in ("accuracy", "balanced_accuracy", "macro_recall", "ece")
        ]
        for name, title in (
            ("equalized_odds_difference", "equalized odds (largest TPR or FPR difference)"),
            ("demographic_parity_difference", "demographic parity (largest selection-rate diff.)"),
        ):
            rows.append([title, None, None, *self.parity_cells(name), None, "—"])
        per_class = self.audit.counts.sum(axis=2)[self.audit.eligible]
        typical = f" (a median of {np.median(per_class):.0f} here)" if per_class.size else ""
        return Table(
            ["metric", "min", "max", "difference", f"{self.level:.0%} CI", "ratio", "worst group"],
            rows,
            caption="Over the groups with enough images: difference = max − min, ratio = min / "
            f"max; intervals from {self.audit.n_boot} bootstrap resamples of the test rows. The "
            "parity rows take the largest difference over the classes, each measured on the "
            f"images of one class in one group{typical}, so they are large by chance alone "
            f"in small test sets: {PARITY_RULE.format(min_size=self.audit.min_size)}",
        )

    def _thin(self, k: int, rate: str) -> bool:
        """Whether class ``k``'s difference in ``rate`` rests on a class × group cell under
        ``min_group_size`` (the rule of :meth:`small_cells`, for one class)."""
        support = self.audit.counts.sum(axis=2)[:, k]
        for g in np.flatnonzero(self.audit.eligible):
            size = int(self.audit.sizes[g])
            n = int({"tpr": support[g], "fpr": size - support[g]}.get(rate, size))
            if 0 < n < self.audit.min_size:
                return True
        return False

    def _classes_table(self) -> Table:
        rows = []
        for k, cls in enumerate(self.audit.classes):
            row = [cls]
            for rate in RATES:
                metric = self.audit.metrics[class_metric(key_part(cls), rate)]
                if self._thin(k, rate):  # noise, not a headline (the rule in the caption)
                    row += [INSUFFICIENT, None]
                    continue
                row += [metric.aggregates["difference"], _interval(metric.interval)]
            row.append(self.worst_label(self.audit.metrics[class_metric(key_part(cls), "tpr")]))
            rows.append(row)
        interval = f"{self.level:.0%} CI"
        return Table(
            [
                "class",
                "TPR difference",
                interval,
                "FPR difference",
                interval,
                "selection-rate difference",
                interval,
                "lowest-TPR group",
            ],
            rows,
            caption="One-vs-rest per class, differences between groups: TPR = share of the "
            "class's images predicted as it, FPR = share of the other images predicted as it, "
            "selection rate = share of all images predicted as it. — : fewer than two groups "
            "with a defined rate (a group without images of the class has no TPR). "
            + PARITY_RULE.format(min_size=self.audit.min_size),
        )

    def _robust_table(self) -> Table:
        """Robust accuracy per group for each attack × eps; all-zero rows are only named."""
        eligible = [i for i in range(self.g.size) if self.audit.eligible[i]]
        wide = len(eligible) <= MAX_GROUP_COLUMNS
        rows, all_zero = [], []
        for attack, eps in self.audit.robust:
            metric = self.audit.metrics[robust_metric(attack, eps)]
            if metric.aggregates["max"] == 0:
                all_zero.append(f"{attack} @ {eps}")
                continue
            values = [self._group_cell(metric, i) for i in eligible] if wide else []
            extra = [] if wide else [metric.aggregates["min"], metric.aggregates["max"]]
            rows.append(
                [
                    f"{attack} @ {eps}",
                    *values,
                    *extra,
                    metric.aggregates["difference"],
                    _interval(metric.interval),
                    self.worst_label(metric),
                ]
            )
        groups = [self.g.labels[i] for i in eligible] if wide else ["min", "max"]
        zero = ""
        if all_zero:
            zero = f" Robust accuracy is 0 in every group under {', '.join(all_zero)}."
        return Table(
            ["attack @ eps", *groups, "difference", f"{self.level:.0%} CI", "lowest group"],
            rows,
            caption="Robust accuracy per group on the images each attack ran on (eps in [0, 1] "
            f"pixel units); groups with fewer than {self.audit.min_size} attacked images are "
            f"left out (—).{zero}",
        )

    def figure(self) -> dict:
        accuracy = self.audit.metrics["accuracy"]
        return {
            "kind": "fairness_bars",
            "title": f"Accuracy per group of {self.g.name}, with {self.level:.0%} intervals and "
            "the overall accuracy",
            "attribute": self.g.name,
            "groups": list(self.g.labels),
            "values": [self._group_cell(accuracy, i) for i in range(self.g.size)],
            "ci": [list(ci) if ci else None for ci in self.accuracy_ci],
            "sizes": [int(n) for n in self.audit.sizes],
            "overall": accuracy.overall,
            "worst": accuracy.tied_with_worst(),  # every group tied at the lowest
            "min_group_size": self.audit.min_size,
            "level": self.level,
        }

    def headline(self) -> str:
        """One plain sentence: the lowest group against overall, and the gap with its interval."""
        accuracy, name = self.audit.metrics["accuracy"], self.g.name
        difference = accuracy.aggregates["difference"]
        eligible = np.flatnonzero(self.audit.eligible)
        if len(eligible) == 0:
            return f"No group of {name} has {self.audit.min_size} test images or more."
        if not np.isfinite(difference):
            only = self.g.labels[eligible[0]]
            return (
                f"Only {name} = {only} has {self.audit.min_size} test images or more "
                f"({len(eligible)} of {self.g.size} groups), so no gap can be measured."
            )
        if accuracy.worst() is None:
            return f"Every group of {name} has the same accuracy, {accuracy.aggregates['min']:.3f}."
        worst = accuracy.worst()
        best = int(np.nanargmax(np.where(self.audit.eligible, accuracy.values, np.nan)))
        low, high = accuracy.interval
        interval = f" ({self.level:.0%} CI {low:.3f}–{high:.3f})" if np.isfinite(low) else ""
        tied = accuracy.tied_with_worst()
        lowest = (
            f"{name} = {self.g.labels[worst]} has the lowest accuracy"
            if len(tied) == 1
            else f"{' and '.join(f'{name} = {self.g.labels[i]}' for i in tied)} tie for the "
            "lowest accuracy"
        )
        sentence = (
            f"{lowest}, "
            f"{accuracy.values[worst]:.3f} against {accuracy.overall:.3f} overall; the gap to "
            f"the best group ({self.g.labels[best]}, {accuracy.values[best]:.3f}) is "
            f"{difference:.3f}{interval}."
        )
        balanced = self.audit.metrics["balanced_accuracy"].aggregates["difference"]
        if np.isfinite(balanced):
            sentence += (
                f" Balanced accuracy, which weighs every class equally, differs by {balanced:.3f}."
            )
        return sentence

    def findings(self) -> None:
        """A warning for a gap beyond sampling error, an info for one within it, and the
        groups too small to judge."""
        accuracy = self.audit.metrics["accuracy"]
        difference = accuracy.aggregates["difference"]
        worst = accuracy.worst()
        if worst is not None and np.isfinite(difference) and difference > GAP_THRESHOLD:
            self._gap_finding(accuracy, worst)
        small = [
            f"{label} (n = {n})"
            for label, n, ok in zip(
                self.g.labels, self.audit.sizes, self.audit.eligible, strict=True
            )
            if not ok
        ]
        if small:
            more = f" and {len(small) - 6} more" if len(small) > 6 else ""
            listed = ", ".join(small[:6]) + more
            self.section.find(
                "info",
                f"{self.g.name}: {_count(len(small), 'group')} with fewer than "
                f"{self.audit.min_size} test images, {listed}: insufficient data, left out of "
                "min, max, difference and ratio",
                metric=fairness_key(self.attr, "group"),
            )

    def _gap_finding(self, accuracy: GroupMetric, worst: int) -> None:
        """The gap finding; of groups tied at the lowest value, the one whose interval
        reaches highest is tested, and the others are named beside it."""
        tied = accuracy.tied_with_worst()
        worst = max(tied, key=lambda i: self.accuracy_ci[i][1])
        label, value = self.g.labels[worst], accuracy.values[worst]
        others = [self.g.labels[i] for i in tied if i != worst]
        if others:
            label += f" (tied with {', '.join(others)})"
        low, high = self.accuracy_ci[worst]
        gap_low, gap_high = accuracy.interval
        gap = f"{accuracy.aggregates['difference']:.3f}"
        if np.isfinite(gap_low):
            gap += f" ({self.level:.0%} CI {gap_low:.3f}–{gap_high:.3f})"
        key = fairness_key(self.attr, "accuracy.difference")
        if high < accuracy.overall:
            self.section.find(
                "warning",
                f"{self.g.name} = {label}: accuracy {value:.3f} "
                f"({self.level:.0%} CI {low:.3f}–{high:.3f}) is below the "
                f"{accuracy.overall:.3f} overall by more than sampling error explains; "
                f"the gap to the best group is {gap}",
                metric=key,
            )
        else:
            self.section.find(
                "info",
                f"{self.g.name}: accuracy differs by {gap} between groups, but the lowest "
                f"group's interval ({label}: {low:.3f}–{high:.3f}) reaches the "
                f"{accuracy.overall:.3f} overall: it may be sampling noise",
                metric=key,
            )

    def block(self) -> dict:
        self.record()
        tables = self.tables()
        self.section.figures[self.g.key] = self.figure()
        self.findings()
        return {
            "name": self.g.name,
            "key": self.g.key,
            "prefix": fairness_key(self.attr, ""),
            "definition": self.g.definition,
            "groups": [
                {"label": label, "key": key}
                for label, key in zip(self.g.labels, self.g.keys, strict=True)
            ],
            "headline": self.headline(),
            "figure": self.g.key,
            "tables": tables,
        }


METHOD = (
    "fairlearn's MetricFrame over the sample table, per attribute, through each attribute's "
    "sufficient statistics (one row per group × true class × predicted class, its count as "
    "the sample weight; the values equal those over the rows). Accuracy; balanced accuracy "
    "= mean recall over the classes present in the group (scikit-learn); macro recall = "
    "mean recall over every class; ECE with {bins} equal-width bins; per class k, "
    "one-vs-rest TPR_k = P(pred = k | true = k), FPR_k = P(pred = k | true ≠ k) and "
    "selection rate_k = P(pred = k), undefined (never 0) when the group has no image of "
    "class k (TPR) or only images of class k (FPR); robust accuracy per attack × eps on the "
    "images the attack ran on. Groups with fewer than {min_size} images are insufficient "
    "data and left out of min, max, difference = max − min and ratio = min / max. "
    "Multiclass parity: equalized-odds difference = the largest TPR_k or FPR_k difference "
    "over the classes k (0: every class is recognised and confused equally often in every "
    "group); demographic-parity difference = the largest selection-rate_k difference. "
    "Intervals: group accuracy, exact {level:.0%} Clopper–Pearson; differences, "
    "percentile intervals of {n_boot} bootstrap resamples of the test rows (seed {seed}), "
    "drawn as multinomial counts over the same cells, which is the distribution of a row "
    "resample (ECE takes each cell's confidences at their mean). A difference is a maximum minus a "
    "minimum, so noise alone makes it positive: a gap above {gap:g} is a warning only when "
    "the lowest group's exact interval lies below the overall accuracy. Groups tied at the "
    "lowest value are named together, never one of them as the lowest. A parity difference "
    "computed on a class × group cell with fewer than {min_size} test images reads "
    "insufficient data in the tables; its number stays in report.json with a note."
)


PARITY_RULE = (
    "A parity difference computed on a class × group cell with fewer than {min_size} test "
    "images (a group's images of one class for TPR, its other images for FPR, all of them "
    "for the selection rate) reads insufficient data: report.json keeps its number and "
    "interval, with a note naming the small cells."
)


def summary_table(reports: list[AttributeReport]) -> Table:
    """One row per audited attribute: groups compared, the lowest group, gap, parity."""
    rows = []
    for report in reports:
        accuracy = report.audit.metrics["accuracy"]
        rows.append(
            [
                report.g.name,
                f"{int(report.audit.eligible.sum())} of {report.g.size}",
                report.worst_label(accuracy),
                accuracy.aggregates["difference"],
                _interval(accuracy.interval),
                report.parity_cells("equalized_odds_difference")[0],
                report.parity_cells("demographic_parity_difference")[0],
            ]
        )
    level = reports[0].level
    return Table(
        [
            "attribute",
            "groups with enough images",
            "lowest-accuracy group",
            "accuracy difference",
            f"{level:.0%} CI",
            "equalized-odds difference",
            "demographic-parity difference",
        ],
        rows,
        caption="One row per audited attribute; each has its own block below. "
        + PARITY_RULE.format(min_size=reports[0].audit.min_size),
    )


def section_headline(reports: list[AttributeReport], n: int) -> str:
    """The section's opening sentence: what was audited, the largest gap, how many matter."""
    names = ", ".join(r.g.name for r in reports)
    opening = f"{_count(len(reports), 'attribute')} audited on {n} test images ({names})"
    measured = [
        r for r in reports if np.isfinite(r.audit.metrics["accuracy"].aggregates["difference"])
    ]
    if not measured:
        return (
            f"{opening}; no attribute has two groups with {reports[0].audit.min_size} test "
            "images or more, so no gap is measured."
        )
    largest = max(measured, key=lambda r: r.audit.metrics["accuracy"].aggregates["difference"])
    accuracy = largest.audit.metrics["accuracy"]
    worst = accuracy.worst()
    best = accuracy.best() if worst is not None else None
    where = (
        ""
        if worst is None or best is None
        else f" ({largest.tied_label(accuracy) or largest.g.labels[worst]} "
        f"{accuracy.values[worst]:.3f} against {largest.g.labels[best]} "
        f"{accuracy.values[best]:.3f}; {accuracy.overall:.3f} overall)"
    )
    warnings = sum(
        f.severity == "warning" for f in reports[0].section.findings if f.metric is not None
    )
    verdict = (
        f"{_count(warnings, 'gap')} {'exceeds' if warnings == 1 else 'exceed'} what sampling "
        "error explains (warnings below)."
        if warnings
        else "No accuracy gap exceeds what sampling error explains."
    )
    return (
        f"{opening}: the largest accuracy gap is {accuracy.aggregates['difference']:.3f}, for "
        f"{largest.g.name}{where}. {verdict}"
    )
