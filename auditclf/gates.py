"""Gates: thresholds on metric keys that decide a run's exit code.

A gate is written ``KEY OP VALUE`` with OP one of ``>= > <= < ==``, e.g.
``performance.accuracy>=0.97``. A gate on a key the run did not produce is a
usage error (with the closest keys suggested), never a silent pass; a gate on
a metric that is ``null`` fails with the metric's reason.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import asdict, dataclass

from auditclf.errors import UsageError

OPERATORS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_GATE = re.compile(
    r"^\s*(?P<key>[A-Za-z0-9_.@/\-]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<value>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @property
    def expression(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if not match:
        raise UsageError(
            f"gate {text!r} is not KEY OP VALUE with OP one of "
            f"{' '.join(OPERATORS)} (e.g. 'performance.accuracy>=0.95')"
        )
    return Gate(match["key"], match["op"], float(match["value"]))


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


def evaluate_gates(
    gates: list[Gate], metrics: dict[str, float | None], notes: dict[str, str]
) -> list[dict]:
    """Check each gate against ``metrics``; unknown keys raise a usage error."""
    check_gate_keys(gates, metrics)
    outcomes = []
    for gate in gates:
        value = metrics[gate.metric]
        if value is None:
            passed = False
            reason = f"metric is null: {notes.get(gate.metric, 'undefined')}"
        else:
            passed = bool(OPERATORS[gate.op](value, gate.threshold))
            verdict = "met" if passed else "required"
            reason = f"measured {value:.4g}, {verdict} {gate.op} {gate.threshold:g}"
        outcomes.append(
            {
                **asdict(gate),
                "expression": gate.expression,
                "value": value,
                "passed": passed,
                "reason": reason,
            }
        )
    return outcomes
