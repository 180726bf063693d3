"""Analyses: pure functions over the sample table (no model, CPU only).

Each analysis takes the rows of one model and an :class:`AnalysisContext` and
returns a :class:`Section`: flat metrics (keys as in DESIGN.md), findings,
tables and figure data, a one-sentence headline and how it was computed.
Figure data is plain JSON; ``auditclf.report.figures`` draws it.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from auditclf.config import AnalysisConfig, FairnessConfig, RobustnessConfig
from auditclf.evidence import ATTR_PREFIX
from auditclf.keys import check_distinct_key_parts, interval_keys
from auditclf.keys import key_part as key_part  # re-exported: the analyses build keys with it
from auditclf.registry import Registry

SEVERITIES = ("info", "warning", "error")


@dataclass
class Finding:
    """One thing a reviewer should know, in plain words."""

    severity: str
    message: str
    section: str
    metric: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")


@dataclass
class Table:
    """A small table for the report: column titles and rows of cells."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Section:
    name: str
    title: str
    headline: str = ""
    method: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    error: str | None = None

    def put(self, key: str, value: float | None, *, reason: str | None = None) -> None:
        """Record a metric; NaN/inf/None become ``None`` with the reason kept in ``notes``."""
        if value is None or not math.isfinite(float(value)):
            self.metrics[key] = None
            self.notes[key] = reason or "undefined"
        else:
            self.metrics[key] = float(value)

    def put_interval(
        self, key: str, interval: tuple[float | None, float | None], *, reason: str | None = None
    ) -> None:
        """Record the bounds of ``key``'s interval under the names its key family gives them
        (``KEY.ci_low``, or ``KEY_ci_low`` for a fairness difference)."""
        names = interval_keys(key)
        if names is None:
            raise KeyError(f"{key}: its key family has no interval")
        for name, bound in zip(names, interval, strict=True):
            self.put(name, bound, reason=reason)

    def find(self, severity: str, message: str, metric: str | None = None) -> None:
        self.findings.append(Finding(severity, message, self.name, metric))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnalysisContext:
    """What analyses may read besides the table: settings, the data card, probe artifacts,
    and the model's rows of each shift set (``shift``: {name: rows}; the table holds the
    test rows only, see :func:`auditclf.evidence.split_sets`)."""

    classes: list[str]
    config: AnalysisConfig
    seed: int
    data_summary: dict
    artifacts: dict = field(default_factory=dict)
    robustness: dict = field(default_factory=lambda: RobustnessConfig().model_dump(mode="json"))
    fairness: dict = field(default_factory=lambda: FairnessConfig().model_dump(mode="json"))
    shift: dict[str, pd.DataFrame] = field(default_factory=dict)


Analysis = Callable[[pd.DataFrame, AnalysisContext], Section]
ANALYSES: Registry[Analysis] = Registry("analysis")


def check_table_names(table: pd.DataFrame, classes: list[str]) -> None:
    """Refuse class, attribute and group names that would share a metric key.

    The data loaders refuse them before training; this guards the analyses of a
    saved (and possibly edited) report, which ``auditclf report`` re-runs.
    """
    check_distinct_key_parts(classes, "classes", "report.json data.classes")
    columns = [c for c in table.columns if c.startswith(ATTR_PREFIX)]
    check_distinct_key_parts([c[len(ATTR_PREFIX) :] for c in columns], "attributes", "samples.csv")
    for column in columns:
        values = pd.unique(table[column].astype(str))
        what = f"values of attribute {column[len(ATTR_PREFIX) :]!r}"
        check_distinct_key_parts(values, what, "samples.csv")


def run_analyses(
    table: pd.DataFrame, ctx: AnalysisContext, *, debug: bool = False
) -> list[Section]:
    """Run every registered analysis; one that raises becomes an ``error`` section.

    The failure is stored, not raised (as fairlearn's MetricFrame does), so one
    broken check does not hide the rest of the audit; ``debug`` re-raises.
    """
    check_table_names(table, ctx.classes)
    sections = []
    for entry in ANALYSES:
        try:
            sections.append(entry.obj(table, ctx))
        except Exception as exc:  # noqa: BLE001 - reported as an error finding, see docstring
            if debug:
                raise
            section = Section(
                name=entry.name, title=entry.summary, error=f"{type(exc).__name__}: {exc}"
            )
            section.find(
                "error",
                f"the {entry.name} analysis failed: {exc} "
                f"({traceback.extract_tb(exc.__traceback__)[-1].name})",
            )
            sections.append(section)
    return sections
