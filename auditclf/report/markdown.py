"""summary.md: a short, link-free summary for a CI job page or a pull request.

Every value comes from the report, which may be a saved (untrusted) one, and
class or group names come from the data: each is escaped before it reaches the
Markdown, so no name can open a link, an image, raw HTML or a new table row.
"""

from __future__ import annotations

from auditclf.gradients import WITHOUT_GRADIENTS
from auditclf.keys import checks_sentence
from auditclf.keys.families import (
    CORRUPTION_MEAN_ACCURACY,
    CORRUPTION_WORST_ACCURACY,
    RELIABLE,
    WORST_ACCURACY,
)
from auditclf.report.html import fmt_cell
from auditclf.report.mdtext import code_span as _code
from auditclf.report.mdtext import escape as _escape
from auditclf.report.verdict import GateRow
from auditclf.report.view import ReportView, build_view, shown_paths
from auditclf.results import AuditResult


def _gate_row(row: GateRow) -> str:
    """One gate as a table row: a failed ``warn`` gate reads WARN, never FAIL; a gate on an
    unreliable number reads UNRELIABLE, never pass."""
    gate, status = row.gate, row.status
    shown = "pass" if status == "pass" else f"{_escape(status.upper())}: {_escape(row.reason)}"
    ci = gate.ci
    interval = _escape(f"[{fmt_cell(ci[0])}, {fmt_cell(ci[1])}]") if ci else ""
    value = _escape(fmt_cell(gate.value))
    return f"| {_code(gate.expression)} | {value} | {interval} | {shown} |"


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


def render_markdown(result: AuditResult, *, view: ReportView | None = None) -> str:
    """summary.md of ``result`` (``view``: its view, if built)."""
    view = view or build_view(result)
    baseline = result.models["baseline"]
    banner = view.banner
    lines = [
        f"## auditclf: {banner.icon} {_escape(banner.label)}",
        "",
        _escape(banner.sentence),
        "",
        f"{_escape(baseline.card['architecture'])} on {_escape(result.data['dataset'])}: "
        f"{_escape(result.data['split_counts']['test'])} test images, "
        f"seed {_escape(result.run['seed'])}, {_escape(result.run['device']['type'])}.",
        "",
    ]
    if result.run.get("unsafe_load"):
        lines[2:2] = [_unsafe_load_line(baseline.card), ""]
    if view.gate_rows:
        lines += ["| gate | measured | interval | result |", "|---|---:|---|---|"]
        lines += [_gate_row(row) for row in view.gate_rows] + [""]
    lines += ["| metric | value | interval |", "|---|---:|---|"]
    reference = view.reference_eps
    for tile in view.tiles:
        interval = f"[{fmt_cell(tile['ci'][0])}, {fmt_cell(tile['ci'][1])}]" if tile["ci"] else ""
        lines.append(
            f"| {_escape(tile['label'])} ({_code(tile['key'])}) | "
            f"{_escape(fmt_cell(tile['value']))} | {_escape(interval)} |"
        )
    if RELIABLE.key() in baseline.metrics:
        checks = checks_sentence(baseline.metrics) or (
            "reliable" if baseline.metrics[RELIABLE.key()] == 1 else "UNRELIABLE"
        )
        worst_key = WORST_ACCURACY.key(eps=reference)
        worst = baseline.metrics.get(worst_key)
        lines += [
            "",
            f"Robustness ({_escape(checks)}): worst-case accuracy at L∞ eps "
            f"{_escape(reference)} {_escape(fmt_cell(worst))} ({_code(worst_key)}).",
        ]
    mean_key = CORRUPTION_MEAN_ACCURACY.key()
    if mean_key in baseline.metrics:
        checks = checks_sentence(baseline.metrics, "corruption") or ""
        worst_key = CORRUPTION_WORST_ACCURACY.key()
        under = baseline.notes.get(worst_key, "")
        lines += [
            "",
            f"Corruptions ({_escape(checks)}): mean accuracy "
            f"{_escape(fmt_cell(baseline.metrics[mean_key]))} ({_code(mean_key)}), most "
            f"damaging {_escape(fmt_cell(baseline.metrics.get(worst_key)))} "
            f"{_escape(under)} ({_code(worst_key)}).",
        ]
    if view.hardened:
        lines += ["", _escape(view.hardened["headline"])]
    fairness = next((s for s in baseline.sections if s["name"] == "fairness"), None)
    if fairness and fairness.get("attributes"):
        lines += ["", f"Fairness: {_escape(fairness['headline'])}"]
    if view.rebalanced:
        lines += ["", _escape(view.rebalanced["headline"])]
    shift = next((s for s in baseline.sections if s["name"] == "shift"), None)
    if shift and shift.get("tables"):
        lines += ["", f"Distribution shift: {_escape(shift['headline'])}"]
    for name, model in result.models.items():  # the exported model's (export.which)
        deploy = next((s for s in model.sections if s["name"] == "deploy"), None)
        if deploy and deploy.get("tables"):
            lines += ["", f"Deployment of the {_escape(name)} model: {_escape(deploy['headline'])}"]
    if view.warnings:
        lines += ["", "**Findings**", ""]
        lines += [f"- {_escape(f['severity'])}: {_escape(f['message'])}" for f in view.warnings]
    for item in result.limitations:  # what a model without gradients could not run
        if item["section"].endswith(WITHOUT_GRADIENTS):
            lines += ["", f"Skipped ({_escape(item['section'])}): {_escape(item['reason'])}."]
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
    return shown_paths("\n".join(lines) + "\n")
