"""The typed results of a run: AuditResult, ModelResult, GateOutcome, Verdict, and
their JSON form (``report.json``). Nothing here renders or saves a result.

NaN is never written as a number: a metric that cannot be computed is
``null`` and its reason is in the model's ``notes``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from auditclf.errors import UsageError
from auditclf.keys import model_key
from auditclf.keys.families import CORRUPTION_RELIABLE, RELIABLE

SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)


class Verdict(str, Enum):
    """A run's verdict: every blocking gate held, a gate failed, a gate reads an
    unreliable robustness number, or an analysis failed (gates.decide_verdict)."""

    PASS = "pass"
    FAIL = "fail"
    UNRELIABLE = "unreliable"
    ERROR = "error"

    def __str__(self) -> str:  # "pass", not "Verdict.PASS", in text and f-strings
        return self.value


VERDICTS = tuple(verdict.value for verdict in Verdict)

# report.json's key order of a gate outcome and of a baseline-regression entry, as written
# since schema version 1 (a saved report re-renders byte for byte).
_GATE_KEYS = (
    "metric", "op", "threshold", "severity", "on", "missing", "kind", "key", "expression",
    "value", "ci", "passed", "status", "reason",
)  # fmt: skip
_BASELINE_KEYS = (
    "kind", "metric", "key", "op", "threshold", "severity", "on", "missing", "expression",
    "value", "baseline_value", "ci", "passed", "status", "reason",
)  # fmt: skip


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats by None, recursively, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _finite(value.item())
    return value


@dataclass(frozen=True)
class GateOutcome:
    """One gate's outcome, or one entry of the baseline regression check (``kind``
    ``baseline``): what was read, whether it held, and why in one line.

    ``status`` is ``pass``, ``fail``, or ``warn`` (a ``warn`` gate that did not
    hold: reported, never failing the run). ``key`` is the key read (a CI bound for
    ``on: lower_ci``); ``baseline_value`` is the old value of a regressed key.
    """

    kind: str
    metric: str
    key: str | None
    op: str | None
    threshold: float | None
    severity: str
    on: str
    missing: str
    expression: str
    value: float | None
    ci: list[float] | None
    passed: bool
    status: str
    reason: str
    baseline_value: float | None = None

    @property
    def blocking(self) -> bool:
        """Whether this outcome can fail the run (``warn`` gates never do)."""
        return self.severity != "warn"

    def to_dict(self) -> dict:
        """The outcome as report.json spells it (``baseline_value`` only for a regression)."""
        names = _GATE_KEYS if self.kind == "gate" else _BASELINE_KEYS
        return {
            name: getattr(self, name)
            for name in names
            if name != "baseline_value" or self.baseline_value is not None
        }

    @classmethod
    def from_dict(cls, raw: dict) -> GateOutcome:
        """An outcome read from a report.json; a report older than ``status`` gets the
        status its ``passed`` and ``severity`` say."""
        severity = raw.get("severity", "fail")
        failed = "warn" if severity == "warn" else "fail"
        return cls(
            kind=raw.get("kind", "gate"),
            metric=raw["metric"],
            key=raw.get("key"),
            op=raw.get("op"),
            threshold=raw.get("threshold"),
            severity=severity,
            on=raw.get("on", "value"),
            missing=raw.get("missing", "fail"),
            expression=raw["expression"],
            value=raw["value"],
            ci=raw.get("ci"),
            passed=raw["passed"],
            status=raw.get("status") or ("pass" if raw["passed"] else failed),
            reason=raw["reason"],
            baseline_value=raw.get("baseline_value"),
        )


@dataclass
class ModelResult:
    """One audited model (``baseline``, later ``hardened``)."""

    card: dict
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    training: dict | None = None
    artifacts: dict = field(default_factory=dict)
    # images and maps (name → array): written to artifacts.npz, never into report.json
    arrays: dict = field(default_factory=dict, repr=False)


@dataclass
class AuditResult:
    """Everything a run found: ``report.json``'s content, and nothing that renders it
    (:mod:`auditclf.report` renders a result; :mod:`auditclf.api` saves a run)."""

    verdict: Verdict
    run: dict
    data: dict
    models: dict[str, ModelResult]
    gates: list[GateOutcome] = field(default_factory=list)
    limitations: list[dict] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    # the array file written beside report.json: {"file": "artifacts.npz", "sha256": ...}
    artifacts: dict | None = None

    def __post_init__(self) -> None:
        self.verdict = Verdict(self.verdict)  # "pass" given as text is the same verdict

    @property
    def metrics(self) -> dict[str, float | None]:
        """The baseline model's flat metrics."""
        return self.models["baseline"].metrics

    def to_dict(self) -> dict:
        """The JSON form; the models' arrays are left out (they go to artifacts.npz)."""
        models = {
            name: {f.name: getattr(model, f.name) for f in fields(model) if f.name != "arrays"}
            for name, model in self.models.items()
        }
        raw = {
            "verdict": self.verdict.value,
            # false: no gate was set, so a "pass" held nothing to a threshold (the reports
            # say NO GATES SET; a script reading "verdict" alone should read this too)
            "gated": bool(self.gates),
            "run": self.run,
            "data": self.data,
            "models": models,
            "gates": [gate.to_dict() for gate in self.gates],
            "limitations": self.limitations,
            "schema_version": self.schema_version,
            "artifacts": self.artifacts,
        }
        return _finite(raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "report.json") -> AuditResult:
        """A result read from a report.json (untrusted: a wrong shape is a usage error)."""
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise UsageError(
                f"{source}: schema_version {version!r} is not one this auditclf reads ({readable})"
            )
        try:
            models = {
                name: ModelResult(**{k: v for k, v in body.items() if k != "arrays"})
                for name, body in raw["models"].items()
            }
            return cls(
                verdict=Verdict(raw["verdict"]),
                run=raw["run"],
                data=raw["data"],
                models=models,
                gates=[GateOutcome.from_dict(gate) for gate in raw.get("gates", [])],
                limitations=raw.get("limitations", []),
                schema_version=version,
                artifacts=raw.get("artifacts"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{source}: not an auditclf report ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> AuditResult:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, source=str(path))


# {section: the flag that says its sanity checks passed}: a gate on a section whose flag is 0
# reads an untrustworthy number
RELIABILITY_FLAGS = {"robustness": RELIABLE.key(), "corruption": CORRUPTION_RELIABLE.key()}


def unreliable_prefixes(models: dict[str, ModelResult]) -> set[str]:
    """The key prefixes (``robustness.``, ``hardened.corruption.``, ...) of the sections whose
    sanity checks failed: a number under one of them cannot be trusted."""
    return {
        model_key(n, f"{section}.")
        for n, m in models.items()
        for section, reliable in RELIABILITY_FLAGS.items()
        if m.metrics.get(reliable) == 0
    }


def reads_unreliable(outcome: GateOutcome, prefixes: set[str]) -> bool:
    """Whether a gate (or baseline entry) reads a number of a section that failed its checks."""
    return any(outcome.metric.startswith(prefix) for prefix in prefixes)
