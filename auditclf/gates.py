"""Gates: thresholds on metric keys that decide a run's exit code.

A gate is written ``KEY OP VALUE`` with OP one of ``>= > <= < ==``, e.g.
``performance.accuracy>=0.97``, or, in a config's ``gates:`` list, as a
mapping ``{metric: KEY, min: X | max: X, severity: fail|warn, on:
value|lower_ci|upper_ci, missing: fail|pass}``. ``on: lower_ci`` compares the
lower bound of the metric's confidence interval (the sibling key its family
names in :mod:`auditclf.keys`: ``KEY.ci_low``, or ``KEY_ci_low`` for a fairness
``difference``) instead of the point estimate. A gate on a key the run did not
produce is a usage error (with the closest keys suggested), never a silent
pass; a gate on a metric that is ``null`` fails with the metric's reason unless
it says ``missing: pass``. A failing ``warn`` gate is reported but does not
change the verdict.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from auditclf.errors import ModelRefused, UsageError
from auditclf.keys import interval, interval_keys, model_key
from auditclf.keys.families import CI
from auditclf.results import (
    GateOutcome,
    ModelResult,
    Verdict,
    reads_unreliable,
    unreliable_prefixes,
)

OPERATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
BOUNDS = {"value": None, "lower_ci": 0, "upper_ci": 1}  # which of the interval keys
_NUMBER = r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
_GATE = re.compile(
    r"^\s*(?P<key>[A-Za-z0-9_.@/\-]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    rf"(?P<value>{_NUMBER})\s*$"
)
_ANY_OPERATOR = re.compile(rf"^\s*[A-Za-z0-9_.@/\-]+\s*(?P<op>[<>=!~]+)\s*{_NUMBER}\s*$")


@dataclass(frozen=True)
class Gate:
    """One threshold: ``metric OP threshold``, read on the value or a CI bound."""

    metric: str
    op: str
    threshold: float
    severity: str = "fail"
    on: str = "value"
    missing: str = "fail"

    @property
    def expression(self) -> str:
        text = f"{self.metric} {self.op} {self.threshold:g}"
        if self.on != "value":
            text += f" on {self.on}"
        if self.missing == "pass":
            text += " (missing: pass)"
        if self.severity == "warn":
            text += " (warn)"
        return text


def parse_gate(text: str) -> Gate:
    """``KEY OP VALUE`` → a failing-severity gate on the point estimate."""
    match = _GATE.match(text)
    if match:
        return Gate(match["key"], match["op"], float(match["value"]))
    other = _ANY_OPERATOR.match(text)
    if other:
        raise UsageError(
            f"gate {text!r}: unknown operator {other['op']!r}; use one of {' '.join(OPERATORS)}"
        )
    raise UsageError(
        f"gate {text!r} is not KEY OP VALUE with OP one of "
        f"{' '.join(OPERATORS)} (e.g. 'performance.accuracy>=0.95')"
    )


def gate_from_mapping(spec: Any) -> list[Gate]:
    """A config mapping (``auditclf.config.GateSpec``) → one gate per bound it sets."""
    options = {"severity": spec.severity, "on": spec.on, "missing": spec.missing}
    return [
        Gate(spec.metric, op, float(bound), **options)
        for op, bound in ((">=", spec.min), ("<=", spec.max))
        if bound is not None
    ]


def gates_from_config(entries: Iterable[Any]) -> list[Gate]:
    """The config's ``gates:`` list (strings and mappings, in order) → gates."""
    gates: list[Gate] = []
    for entry in entries:
        gates.extend([parse_gate(entry)] if isinstance(entry, str) else gate_from_mapping(entry))
    return gates


def bound_key(gate: Gate, known: set[str] | dict) -> str:
    """The key a gate reads: the metric, or its CI-bound sibling (usage error if absent)."""
    which = BOUNDS[gate.on]
    if which is None:
        return gate.metric
    names = interval_keys(gate.metric)
    key = names[which] if names else f"{gate.metric}{CI[which]}"
    if names is None or key not in known:
        raise UsageError(
            f"gate {gate.expression!r}: on: {gate.on} reads {key!r}, which this run does "
            f"not have ({gate.metric!r} has no confidence interval); gate on the value instead"
        )
    return key


def check_gate_keys(gates: list[Gate], known: set[str] | dict) -> None:
    """Refuse a gate on a key that is not among ``known``, suggesting the closest keys."""
    for gate in gates:
        if gate.metric not in known:
            close = difflib.get_close_matches(gate.metric, sorted(known), n=3, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UsageError(
                f"gate {gate.expression!r}: no metric {gate.metric!r} in this run{hint} "
                "(the README lists every key family; `auditclf metrics DIR/report.json` "
                "lists a finished run's keys)"
            )
        bound_key(gate, known)


def _measured(gate: Gate, value: float, estimate: float | None, ci: list | None) -> str:
    interval = f"CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""
    if gate.on == "value":
        return f"measured {value:.4g}" + (f" ({interval})" if ci else "")
    bound = "lower" if gate.on == "lower_ci" else "upper"
    shown = "null" if estimate is None else f"{estimate:.4g}"
    return f"{bound} CI bound {value:.4g} (estimate {shown}{', ' + interval if ci else ''})"


def evaluate_gate(
    gate: Gate, metrics: dict[str, float | None], notes: dict[str, str]
) -> GateOutcome:
    """One gate's outcome: what was read, whether it passed, and why, in one line."""
    key = bound_key(gate, metrics)
    value, ci = metrics[key], interval(metrics, gate.metric)
    if value is None:
        why = notes.get(key) or notes.get(gate.metric) or "undefined"
        passed = gate.missing == "pass"
        reason = f"metric is null: {why}" + ("; passes (missing: pass)" if passed else "")
    else:
        passed = bool(OPERATORS[gate.op](value, gate.threshold))
        verdict = "met" if passed else "required"
        measured = _measured(gate, value, metrics.get(gate.metric), ci)
        reason = f"{measured}, {verdict} {gate.op} {gate.threshold:g}"
    status = "pass" if passed else ("warn" if gate.severity == "warn" else "fail")
    return GateOutcome(
        kind="gate",
        metric=gate.metric,
        key=key,
        op=gate.op,
        threshold=gate.threshold,
        severity=gate.severity,
        on=gate.on,
        missing=gate.missing,
        expression=gate.expression,
        value=value,
        ci=ci,
        passed=passed,
        status=status,
        reason=reason,
    )


def evaluate_gates(
    gates: list[Gate], metrics: dict[str, float | None], notes: dict[str, str]
) -> list[GateOutcome]:
    """Check each gate against ``metrics``; unknown keys raise a usage error."""
    check_gate_keys(gates, metrics)
    return [evaluate_gate(gate, metrics, notes) for gate in gates]


def gate_metrics(models: dict[str, ModelResult]) -> tuple[dict, dict]:
    """Every gateable metric: the baseline's keys as they are, the others' with a prefix.

    ``hardened.performance.accuracy`` is the hardened model's accuracy.
    """
    metrics, notes = {}, {}
    for name, model in models.items():
        metrics.update({model_key(name, k): v for k, v in model.metrics.items()})
        notes.update({model_key(name, k): v for k, v in model.notes.items()})
    return metrics, notes


def decide_verdict(models: dict[str, ModelResult], outcomes: list[GateOutcome]) -> Verdict:
    """error (an analysis failed) > unreliable (a blocking gate reads an unreliable
    robustness or corruption number) > fail (a blocking gate failed) > pass."""
    if any(section.get("error") for m in models.values() for section in m.sections):
        return Verdict.ERROR
    unreliable = unreliable_prefixes(models)
    gated = [outcome for outcome in outcomes if outcome.blocking]
    if any(reads_unreliable(outcome, unreliable) for outcome in gated):
        return Verdict.UNRELIABLE
    if any(not outcome.passed for outcome in gated):
        return Verdict.FAIL
    return Verdict.PASS


class RegressionCheck(Protocol):
    """What :func:`judge` asks of the baseline regression check
    (:class:`auditclf.compare.BaselineCheck`): one outcome per regression, else one pass."""

    def evaluate(self, metrics: dict, notes: dict) -> list[GateOutcome]: ...


def judge(
    models: dict[str, ModelResult],
    gates: list[Gate],
    baseline_check: RegressionCheck | None,
) -> tuple[list[GateOutcome], Verdict]:
    """The gates' outcomes, then the baseline regressions', and the verdict they give with
    the models' analyses: what ``auditclf run`` and ``auditclf gate`` both decide."""
    metrics, notes = gate_metrics(models)
    outcomes = evaluate_gates(gates, metrics, notes)
    if baseline_check is not None:
        outcomes += baseline_check.evaluate(metrics, notes)
    return outcomes, decide_verdict(models, outcomes)


def check_unsafe_load(policy: str, run: dict, *, source: str) -> None:
    """Refuse a finished run whose checkpoint was unpickled when the config says
    ``unsafe_load: forbid`` (``auditclf run`` refuses such a file before loading it)."""
    if policy == "forbid" and run.get("unsafe_load"):
        raise ModelRefused(
            f"{source}: its checkpoint was unpickled (run.unsafe_load is true) and the "
            "config says unsafe_load: forbid"
        )
