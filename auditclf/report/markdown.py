"""summary.md: a short, link-free summary for a CI job page or a pull request."""

from __future__ import annotations

from auditclf.report.html import fairness_ledger, fmt_cell, key_numbers
from auditclf.report.ledger import ledger
from auditclf.results import AuditResult

ICONS = {"pass": "✅", "fail": "❌", "unreliable": "⚠️", "error": "💥"}


def _escape(text: str) -> str:
    """Keep table cells intact: pipes and newlines would break a Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _gate_row(gate: dict) -> str:
    """One gate as a table row: a failed ``warn`` gate reads WARN, never FAIL."""
    status = gate.get("status") or ("pass" if gate["passed"] else "fail")
    shown = "pass" if status == "pass" else f"{status.upper()}: {_escape(gate['reason'])}"
    ci = gate.get("ci")
    interval = f"[{fmt_cell(ci[0])}, {fmt_cell(ci[1])}]" if ci else ""
    return f"| `{_escape(gate['expression'])}` | {fmt_cell(gate['value'])} | {interval} | {shown} |"


def _unsafe_load_line(card: dict) -> str:
    """The warning a CI page shows first when the checkpoint was unpickled."""
    unsafe = card.get("unsafe_load") or {}
    named = (
        f" {_escape(unsafe.get('file'))} (SHA-256 {_escape(unsafe.get('sha256'))})"
        if unsafe
        else ""
    )
    return (
        f"**⛔ Unsafe load:** the checkpoint{named} was unpickled (--trust-checkpoint): loading "
        "it could have run any code it carries."
    )


def render_markdown(result: AuditResult) -> str:
    baseline = result.models["baseline"]
    level = result.run["config"]["analyses"]["confidence_level"]
    lines = [
        f"## auditclf: {ICONS.get(result.verdict, '')} {result.verdict.upper()}",
        "",
        f"{_escape(baseline.card['architecture'])} on {_escape(result.data['dataset'])}: "
        f"{result.data['split_counts']['test']} test images, seed {result.run['seed']}, "
        f"{result.run['device']['type']}.",
        "",
    ]
    if result.run.get("unsafe_load"):
        lines[2:2] = [_unsafe_load_line(baseline.card), ""]
    if result.gates:
        lines += ["| gate | measured | interval | result |", "|---|---:|---|---|"]
        lines += [_gate_row(g) for g in result.gates]
    else:
        lines.append("No gates were set; nothing was held to a threshold.")
    lines += ["", "| metric | value | interval |", "|---|---:|---|"]
    reference = baseline.artifacts.get("robustness", {}).get("reference_eps")
    for tile in key_numbers(baseline.metrics, level, reference):
        interval = f"[{fmt_cell(tile['ci'][0])}, {fmt_cell(tile['ci'][1])}]" if tile["ci"] else ""
        lines.append(
            f"| {tile['label']} (`{tile['key']}`) | {fmt_cell(tile['value'])} | {interval} |"
        )
    if "robustness.reliable" in baseline.metrics:
        reliable = "reliable" if baseline.metrics["robustness.reliable"] == 1 else "UNRELIABLE"
        worst = baseline.metrics.get(f"robustness.worst@{reference}.accuracy")
        lines += [
            "",
            f"Robustness ({reliable}): worst-case accuracy at L∞ eps {reference} "
            f"{fmt_cell(worst)} (`robustness.worst@{reference}.accuracy`).",
        ]
    if "hardened" in result.models:
        lines += [
            "",
            ledger(baseline.metrics, result.models["hardened"].metrics, reference)["headline"],
        ]
    fairness = next((s for s in baseline.sections if s["name"] == "fairness"), None)
    if fairness and fairness.get("attributes"):
        lines += ["", f"Fairness: {_escape(fairness['headline'])}"]
    if rebalanced := fairness_ledger(result):
        lines += ["", _escape(rebalanced["headline"])]
    warnings = [f for f in baseline.findings if f["severity"] != "info"]
    if warnings:
        lines += ["", "**Findings**", ""]
        lines += [f"- {f['severity']}: {_escape(f['message'])}" for f in warnings]
    ran = {section["name"] for section in baseline.sections if section.get("tables")}
    not_checked = [
        item["section"]
        for item in result.limitations
        if item["section"] in ("Robustness", "Explanations", "Fairness")
        and item["section"].lower() not in ran
    ]
    if not_checked:
        lines += [
            "",
            f"Not checked in this run: {', '.join(not_checked)} (see the report's Limitations).",
        ]
    return "\n".join(lines) + "\n"
