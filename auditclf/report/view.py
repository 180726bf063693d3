"""The report view: what every renderer shows, derived once from an AuditResult.

HTML, Markdown, JUnit and the notebook summary all read one :class:`ReportView`
(the verdict banner of :mod:`auditclf.report.verdict`, gate rows, the headline
numbers, the retraining ledgers, the findings to read first), so a number, a
count or a verdict's wording is worked out in one place and every format shows
the same.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditclf.keys import interval_keys
from auditclf.keys.families import (
    ACCURACY,
    BALANCED_ACCURACY,
    ECE,
    IMBALANCE_RATIO,
    WORST_ACCURACY,
    WORST_CLASS_RECALL,
)
from auditclf.report.ledger import group_ledger, ledger
from auditclf.report.verdict import UNGATED, GateRow, VerdictBanner, gate_rows, verdict_banner
from auditclf.results import AuditResult, GateOutcome, ModelResult, Verdict

KEY_NUMBERS = (
    (ACCURACY.key(), "Test accuracy", "pct"),
    (BALANCED_ACCURACY.key(), "Balanced accuracy", "pct"),
    (WORST_CLASS_RECALL.key(), "Worst-class recall", "pct"),
    (ECE.key(), "Calibration error (ECE)", "num"),
    (IMBALANCE_RATIO.key(), "Class imbalance ratio", "ratio"),
)

SEVERITY_ORDER = ("error", "warning", "info")
SEVERITY_LABELS = {"error": "Error", "warning": "Warning", "info": "Note"}
# Where the report shows each section's findings, in the report's order: (anchor, title).
# A finding of a section not listed here (an analysis a user registered) comes last, unlinked.
SECTION_PLACES = {
    "model": ("card", "Model and data"),
    "training": ("training", "Training"),
    "performance": ("performance", "Performance"),
    "imbalance": ("imbalance", "Class balance"),
    "calibration": ("calibration", "Calibration"),
    "robustness": ("robustness", "Robustness"),
    "corruption": ("corruption", "Common corruptions"),
    "deploy": ("deployment", "Deployment"),
    "shift": ("shift", "Distribution shift"),
    "explanations": ("explanations", "Explanations"),
    "fairness": ("fairness", "Fairness"),
}
MAX_OPEN_NOTES = 3  # more info-level findings than this are folded behind one line


@dataclass(frozen=True)
class ReportView:
    """One result as the reports show it.

    ``banner``: the verdict's label, sentence and tone; ``gate_rows``: the gates with
    the status shown (``unreliable`` for a gate that reads an unreliable number).
    ``ungated``: the verdict is pass only because no gate was set. ``failed`` and
    ``warned`` count the blocking gates that failed and the ``warn`` gates that did
    not hold. ``tiles`` are the baseline's headline numbers (:func:`key_numbers`),
    ``hardened`` and ``rebalanced`` the ledgers of the retrained models (None when
    not retrained), ``warnings`` the baseline's findings other than ``info``,
    ``findings`` every finding of every model, worst first (:func:`ordered_findings`).
    """

    result: AuditResult
    verdict: Verdict
    gates: list[GateOutcome]
    banner: VerdictBanner
    gate_rows: list[GateRow]
    ungated: bool
    failed: int
    warned: int
    level: float
    reference_eps: str | None
    tiles: list[dict]
    hardened: dict | None
    rebalanced: dict | None
    warnings: list[dict]
    findings: list[dict]

    @property
    def decisions(self) -> list[dict]:
        """The errors and warnings of :attr:`findings`: what needs a decision."""
        return [f for f in self.findings if f["severity"] != "info"]

    @property
    def notes(self) -> list[dict]:
        """The info-level findings, after :attr:`decisions` in the list."""
        return [f for f in self.findings if f["severity"] == "info"]

    @property
    def fold_notes(self) -> bool:
        """Whether the notes are many enough to sit behind a one-line summary."""
        return len(self.notes) > MAX_OPEN_NOTES

    @property
    def notes_line(self) -> str:
        """The summary the folded notes sit behind: "12 notes"."""
        count = len(self.notes)
        return f"{count} note{'' if count == 1 else 's'}"


def build_view(result: AuditResult) -> ReportView:
    """The view of ``result`` every renderer reads."""
    baseline = result.models["baseline"]
    level = result.run["config"]["analyses"]["confidence_level"]
    reference = reference_eps(baseline)
    hardened = None
    if "hardened" in result.models:
        method = result.run["config"].get("harden", {}).get("method", "pgd")
        hardened = ledger(baseline.metrics, result.models["hardened"].metrics, reference, method)
    rows = gate_rows(result)
    banner = verdict_banner(result, rows)
    rebalanced = fairness_ledger(result)
    return ReportView(
        result=result,
        verdict=result.verdict,
        gates=result.gates,
        banner=banner,
        gate_rows=rows,
        ungated=banner.state == UNGATED,
        failed=sum(g.status == "fail" for g in result.gates),
        warned=sum(g.status == "warn" for g in result.gates),
        level=level,
        reference_eps=reference,
        tiles=key_numbers(baseline.metrics, level, reference),
        hardened=hardened,
        rebalanced=rebalanced,
        warnings=[f for f in baseline.findings if f["severity"] != "info"],
        findings=ordered_findings(result, hardened, rebalanced),
    )


def shown_paths(text: str) -> str:
    """``text`` with the auditing machine's own folders taken out of the paths it names: a
    path under the current directory relative to it (``/home/ana/proj/runs/a`` from
    ``/home/ana/proj`` → ``runs/a``), one under the home folder from ``~``. A path given
    relative stays as given; none is ever made absolute."""
    for folder, shown in ((Path.cwd(), ""), (Path.home(), "~" + os.sep)):
        if str(folder) != os.sep:  # "/" would strip every path's leading slash
            text = text.replace(str(folder) + os.sep, shown)
    return text


def ordered_findings(result: AuditResult, hardened: dict | None, rebalanced: dict | None) -> list:
    """Every finding of every model, worst first: errors, warnings, then notes; within a
    severity in the report's section order, the baseline's before a retrained model's.

    Each is the finding's dict with ``label`` (Error, Warning, Note), ``anchor`` (the id of
    the part of the page that shows it; None for a section the report does not show) and
    ``place`` (that part's name in words).
    """
    rows = []
    for rank, (name, model) in enumerate(result.models.items()):
        for finding in model.findings:
            severity, section = finding["severity"], str(finding.get("section"))
            anchor, place = finding_place(name, section, hardened, rebalanced)
            rows.append(
                {
                    **finding,
                    "model": name,
                    "label": SEVERITY_LABELS.get(severity, str(severity)),
                    "anchor": anchor,
                    "place": place,
                    "_order": (
                        _rank(SEVERITY_ORDER, severity),
                        _rank(SECTION_PLACES, section),
                        rank,
                    ),
                }
            )
    rows.sort(key=lambda row: row["_order"])  # stable: a section's own order is kept
    return [{k: v for k, v in row.items() if k != "_order"} for row in rows]


def _rank(order: tuple | dict, name: str) -> int:
    """``name``'s place in ``order``; a name it does not list (a saved report's, or a
    user's analysis) comes after every listed one."""
    names = list(order)
    return names.index(name) if name in names else len(names)


def finding_place(
    model: str, section: str, hardened: dict | None, rebalanced: dict | None
) -> tuple[str | None, str]:
    """(anchor, place in words) of a finding of ``model``'s ``section``.

    The baseline's findings link to their section; a retrained model's to its own block:
    its deployment or shift-set block, the corruption ledger, else the ledger of what
    retraining did (``model-hardened``, ``model-rebalanced``), else its section.
    """
    anchor, title = SECTION_PLACES.get(section, (None, section))
    if model == "baseline":
        return anchor, title
    where = f"{title}, {model} model"
    if section in ("deploy", "shift"):
        return f"{anchor}-{model}", where
    if model == "hardened" and hardened is not None:
        corruption = section == "corruption" and hardened.get("corruption")
        return ("hardened-corruption" if corruption else "model-hardened"), where
    if model == "rebalanced" and rebalanced is not None:
        return "model-rebalanced", where
    return anchor, where


def reference_eps(model: ModelResult) -> str | None:
    """The L∞ eps the robustness section headlines (None without a robustness run)."""
    return model.artifacts.get("robustness", {}).get("reference_eps")


def missing(value: Any) -> bool:
    """Whether a number is absent: null, NaN or infinite (shown as —)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def key_numbers(metrics: dict, level: float, reference_eps: str | None = None) -> list[dict]:
    """The five tiles of the verdict banner: value, interval and key of each headline metric.

    With a robustness evaluation, worst-case robust accuracy replaces the imbalance ratio.
    """
    chosen = list(KEY_NUMBERS)
    robust = WORST_ACCURACY.key(eps=reference_eps)
    if robust in metrics:
        chosen[-1] = (robust, f"Worst-case robust accuracy, L∞ eps {reference_eps}", "pct")
    tiles = []
    for key, label, style in chosen:
        if key in metrics:
            bounds = interval_keys(key)
            low, high = (metrics.get(bounds[0]), metrics.get(bounds[1])) if bounds else (None, None)
            tiles.append(
                {
                    "key": key,
                    "label": label,
                    "value": metrics[key],
                    "style": style,
                    "level": level,
                    "ci": None if missing(low) or missing(high) else (low, high),
                }
            )
    return tiles


def fairness_ledger(result: AuditResult) -> dict | None:
    """Baseline vs the group-balanced retrained model, per group of the balanced attribute."""
    attribute = result.run["config"].get("fairness", {}).get("rebalance")
    if "rebalanced" not in result.models or not attribute:
        return None
    section = next((s for s in result.models["baseline"].sections if s["name"] == "fairness"), {})
    block = next((b for b in section.get("attributes", []) if b["name"] == attribute), None)
    if block is None:
        return None
    return group_ledger(
        result.models["baseline"].metrics, result.models["rebalanced"].metrics, block, attribute
    )
