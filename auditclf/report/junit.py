"""junit.xml: one test case per gate and per analysis, for CI test-report viewers.

A failed gate is a ``<failure>`` whose message gives the measured value, the
threshold and the confidence interval; a baseline regression is a failure of
type ``BaselineRegression``. A failed ``warn`` gate is a ``<skipped>`` case
whose message starts with ``WARNING:``: Jenkins, GitLab and the GitHub JUnit
reporters show skipped cases with their message without failing the job, which
is what a warning gate means. A checkpoint that was unpickled (``--trust-checkpoint``)
is such a warning too, first in the suite (``unsafe_load: forbid`` makes it a refusal).
A gate that reads a robustness or corruption number whose sanity checks failed is an
``<error>`` of type ``UnreliableNumber``, whatever its threshold said: it settled nothing.
The suite's properties ``verdict`` and ``verdict.reason`` carry the verdict's label and
sentence, as the other formats say them (:mod:`auditclf.report.verdict`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditclf.report.view import ReportView, build_view, shown_paths
from auditclf.results import AuditResult, GateOutcome


def _gate_detail(gate: GateOutcome) -> str:
    """The failure's text: what was read, its value and interval, and what was required."""
    interval = f"; CI [{gate.ci[0]:.4g}, {gate.ci[1]:.4g}]" if gate.ci else "; no interval"
    value = "null" if gate.value is None else f"{gate.value:.6g}"
    if gate.kind == "baseline":
        return f"{gate.reason}{interval}"
    return (
        f"metric {gate.key or gate.metric} = {value}{interval}; "
        f"required {gate.op} {gate.threshold:g}"
    )


def _unsafe_load_case(result: AuditResult) -> ET.Element:
    """A warning case (``<skipped>``, like a warn gate) saying the checkpoint was unpickled."""
    unsafe = result.models["baseline"].card.get("unsafe_load") or {}
    named = f" {unsafe.get('file')} (SHA-256 {unsafe.get('sha256')})" if unsafe else ""
    case = ET.Element("testcase", classname="auditclf.security", name="unsafe_load")
    message = (
        f"WARNING: the checkpoint{named} was unpickled (--trust-checkpoint): loading it could "
        "have run any code it carries"
    )
    ET.SubElement(case, "skipped", message=message, type="UnsafeLoad")
    return case


# sections whose sanity checks become test cases, and the cases' class names
SANITY = {
    "robustness": "auditclf.sanity.{model}",
    "corruption": "auditclf.sanity.{model}.corruption",
}


def render_junit(result: AuditResult, *, view: ReportView | None = None) -> str:
    """junit.xml of ``result`` (``view``: its view, if built)."""
    view = view or build_view(result)
    cases: list[ET.Element] = []
    if result.run.get("unsafe_load"):
        cases.append(_unsafe_load_case(result))
    for row in view.gate_rows:
        gate = row.gate
        case = ET.Element("testcase", classname="auditclf.gates", name=gate.expression)
        if row.status == "unreliable":
            ET.SubElement(case, "error", message=row.reason, type="UnreliableNumber")
        elif gate.status == "warn":
            ET.SubElement(case, "skipped", message=f"WARNING: {gate.reason}", type="warning")
        elif gate.status == "fail":
            kind = "BaselineRegression" if gate.kind == "baseline" else "GateFailed"
            failure = ET.SubElement(case, "failure", message=gate.reason, type=kind)
            failure.text = _gate_detail(gate)
        cases.append(case)
    for model_name, model in result.models.items():
        for section in model.sections:
            checks = section.get("tables", {}).get("checks") if section["name"] in SANITY else None
            for name, outcome, measured, meaning in (checks or {}).get("rows", []):
                where = SANITY[section["name"]].format(model=model_name)
                case = ET.Element("testcase", classname=where, name=name)
                if outcome == "warn":  # a finding, not a failure: shown like a warn gate
                    ET.SubElement(case, "skipped", message=f"WARNING: {measured}", type="warning")
                elif outcome == "n/a":  # a check this run could not take (no gradients)
                    ET.SubElement(case, "skipped", message=measured, type="NotApplicable")
                elif outcome != "pass":
                    failure = ET.SubElement(
                        case, "failure", message=measured, type="SanityCheckFailed"
                    )
                    failure.text = f"{measured}: {meaning}"
                cases.append(case)
            case = ET.Element(
                "testcase", classname=f"auditclf.analyses.{model_name}", name=section["name"]
            )
            if section.get("error"):
                ET.SubElement(case, "error", message=section["error"], type="AnalysisError")
            cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    durations = sum(result.run.get("durations", {}).values())
    suite = ET.Element(
        "testsuite",
        name="auditclf",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{durations:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="verdict", value=view.banner.label)
    ET.SubElement(properties, "property", name="verdict.reason", value=view.banner.sentence)
    suite.extend(cases)
    suites = ET.Element(
        "testsuites",
        name="auditclf",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
    )
    suites.append(suite)
    ET.indent(suites)
    text = ET.tostring(suites, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + shown_paths(text) + "\n"
