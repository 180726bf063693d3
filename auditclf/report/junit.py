"""junit.xml: one test case per gate and per analysis, for CI test-report viewers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from auditclf.results import AuditResult


def render_junit(result: AuditResult) -> str:
    cases: list[ET.Element] = []
    for gate in result.gates:
        case = ET.Element("testcase", classname="auditclf.gates", name=gate["expression"])
        if not gate["passed"]:
            failure = ET.SubElement(case, "failure", message=gate["reason"], type="GateFailed")
            failure.text = (
                f"metric {gate['metric']} = {gate['value']}; "
                f"required {gate['op']} {gate['threshold']}"
            )
        cases.append(case)
    for model_name, model in result.models.items():
        for section in model.sections:
            checks = (
                section.get("tables", {}).get("checks") if section["name"] == "robustness" else None
            )
            for name, outcome, measured, meaning in (checks or {}).get("rows", []):
                case = ET.Element("testcase", classname=f"auditclf.sanity.{model_name}", name=name)
                if outcome != "pass":
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
    durations = sum(result.run.get("durations", {}).values())
    suite = ET.Element(
        "testsuite",
        name="auditclf",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{durations:.3f}",
    )
    suite.extend(cases)
    suites = ET.Element(
        "testsuites",
        name="auditclf",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
    )
    suites.append(suite)
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
