"""The verdict as every format says it: one label, one sentence, one tone.

The HTML banner, summary.md's heading, junit.xml's suite properties, the
notebook summary and the CLI's ``verdict:`` line all read :func:`verdict_banner`,
so a run without gates reads "NO GATES SET" everywhere (never a bare "pass"),
and a run whose gates read an unreliable number says so everywhere. The gate
rows come from :func:`gate_rows`: a gate that reads a robustness or corruption
number whose sanity checks failed is shown ``unreliable``, never as a green
pass that settles anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditclf.results import (
    AuditResult,
    GateOutcome,
    Verdict,
    reads_unreliable,
    unreliable_prefixes,
)

UNGATED = "ungated"  # a pass only because no gate was set
# state → (label, tone, icon); the tone names the colour (CSS class ``banner <tone>``)
STATES = {
    Verdict.PASS.value: ("PASS", "pass", "✅"),
    Verdict.FAIL.value: ("FAIL", "fail", "❌"),
    Verdict.UNRELIABLE.value: ("UNRELIABLE", "unreliable", "⚠️"),
    Verdict.ERROR.value: ("ERROR", "error", "💥"),
    UNGATED: ("NO GATES SET", "neutral", "➖"),
}
# tone → colour, for the places that cannot use the stylesheet (the notebook summary);
# reports/templates/_style.css gives the same colours to the same tones
COLOURS = {
    "pass": "#15803d",
    "fail": "#b91c1c",
    "warn": "#b45309",
    "unreliable": "#7c3aed",
    "error": "#6b7280",
    "neutral": "#475569",
}


@dataclass(frozen=True)
class VerdictBanner:
    """``state``: pass, fail, unreliable, error or ungated; ``label``: what a reader sees
    ("NO GATES SET"); ``sentence``: why, in one sentence; ``tone``: its colour's name."""

    state: str
    label: str
    sentence: str
    tone: str
    icon: str

    @property
    def colour(self) -> str:
        return COLOURS[self.tone]

    @property
    def line(self) -> str:
        """Label and sentence on one line (the CLI, JUnit)."""
        return f"{self.label} — {self.sentence}"


@dataclass(frozen=True)
class GateRow:
    """One gate as the reports show it: ``status`` is the outcome's own (pass, fail, warn)
    or ``unreliable`` when the gate reads a number whose sanity checks failed."""

    gate: GateOutcome
    status: str
    reason: str

    @property
    def colour(self) -> str:
        return COLOURS[self.status]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _sections(prefixes: set[str]) -> str:
    """{"robustness.", "hardened.corruption."} → "hardened corruption and robustness"."""
    names = sorted(prefix.rstrip(".").replace(".", " ") for prefix in prefixes)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def gate_rows(result: AuditResult) -> list[GateRow]:
    """The result's gates with the status a reader is shown."""
    prefixes = unreliable_prefixes(result.models)
    rows = []
    for gate in result.gates:
        if reads_unreliable(gate, prefixes):
            why = "reads an UNRELIABLE number (its section's sanity checks failed)"
            rows.append(GateRow(gate, "unreliable", f"{why}; {gate.reason}"))
        else:
            rows.append(GateRow(gate, gate.status, gate.reason))
    return rows


def _gates_sentence(state: str, rows: list[GateRow]) -> str:
    gates = _count(len(rows), "gate")
    failed = sum(r.status == "fail" for r in rows)
    warned = sum(r.status == "warn" for r in rows)
    unsettled = sum(r.status == "unreliable" and r.gate.blocking for r in rows)
    if state == Verdict.UNRELIABLE.value:
        sentence = (
            f"{unsettled} of {gates} read{'s' if unsettled == 1 else ''} a robustness or "
            "corruption number whose sanity checks failed, so whether "
            f"{'it holds' if unsettled == 1 else 'they hold'} cannot be told."
        )
        if failed:
            sentence += f" {failed} other {'gate' if failed == 1 else 'gates'} failed."
    elif state == Verdict.FAIL.value:
        sentence = f"{failed} of {gates} failed."
    elif warned:
        sentence = f"No gate failed ({gates})."
    else:
        sentence = f"All {gates} passed." if len(rows) > 1 else "The one gate passed."
    if warned:
        sentence += f" {_count(warned, 'warning gate')} did not hold (reported, not failing)."
    return sentence


def verdict_banner(result: AuditResult, rows: list[GateRow] | None = None) -> VerdictBanner:
    """The verdict of ``result`` as label, sentence and tone (``rows``: its gate rows)."""
    rows = gate_rows(result) if rows is None else rows
    state = result.verdict.value
    if state == Verdict.PASS.value and not result.gates:
        state = UNGATED
    if state == Verdict.ERROR.value:
        failed = [
            f"{section['name']} ({name})"
            for name, model in result.models.items()
            for section in model.sections
            if section.get("error")
        ]
        sentence = (
            f"An analysis failed while auditing: {', '.join(failed)}; its section says why. "
            "The other numbers stand."
        )
    elif state == UNGATED:
        sentence = (
            "No gate was set, so nothing was held to a threshold: read the numbers and "
            "findings, and add gates (--gate, or the config's gates: list) to make the "
            "verdict mean pass or fail."
        )
    else:
        sentence = _gates_sentence(state, rows)
    unread = {
        prefix
        for prefix in unreliable_prefixes(result.models)
        if not any(row.gate.metric.startswith(prefix) for row in rows)
    }
    if unread and state != Verdict.ERROR.value:
        sentence += (
            f" The {_sections(unread)} numbers are UNRELIABLE (a sanity check failed); "
            "no gate reads them."
        )
    label, tone, icon = STATES[state]
    return VerdictBanner(state, label, sentence, tone, icon)
