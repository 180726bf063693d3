"""The machine-readable outputs: junit.xml, summary.md, the report.json schema, `init`."""

from __future__ import annotations

import json
import typing

import jsonschema
import pytest
from junitparser import Failure, JUnitXml, Skipped
from markdown_it import MarkdownIt
from pydantic import BaseModel

from auditclf.config import AuditConfig, GateSpec, load_config
from auditclf.schema import REPORT_SCHEMA, validate_report
from tests.conftest import cli


def _report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def _sanity_rows(report: dict) -> list[tuple[str, str]]:
    """(model, outcome) of every sanity check the run's robustness sections list."""
    return [
        (name, row[1], section["name"])
        for name, model in report["models"].items()
        for section in model["sections"]
        if section["name"] in ("robustness", "corruption")
        for row in section["tables"].get("checks", {}).get("rows", [])
    ]


def test_junit_from_a_real_run_parses_with_the_right_cases(gated_run):
    report = _report(gated_run)
    (suite,) = list(JUnitXml.fromfile(str(gated_run / "junit.xml")))
    cases = list(suite)
    by_class: dict[str, list] = {}
    for case in cases:
        by_class.setdefault(case.classname, []).append(case)

    gates = report["gates"]
    assert [c.name for c in by_class["auditclf.gates"]] == [g["expression"] for g in gates]
    sanity = _sanity_rows(report)
    for model in ("baseline", "hardened"):  # one case per sanity check the model's run made
        checks = [s for s in sanity if s[0] == model and s[2] == "robustness"]
        assert len(by_class[f"auditclf.sanity.{model}"]) == len(checks) >= 7
        checks = [s for s in sanity if s[0] == model and s[2] == "corruption"]
        assert len(by_class[f"auditclf.sanity.{model}.corruption"]) == len(checks) == 4
    sections = sum(len(m["sections"]) for m in report["models"].values())
    assert suite.tests == len(cases) == len(gates) + len(sanity) + sections

    failed_gates = [g for g in gates if g["status"] == "fail"]
    failed_checks = [s for s in sanity if s[1] == "FAIL"]
    warned_checks = [s for s in sanity if s[1] == "warn"]  # a finding, not a failure
    assert suite.failures == len(failed_gates) + len(failed_checks)
    # the failing warn gate (and any warning check): reported, not failing the job
    assert suite.skipped == 1 + len(warned_checks)
    results = {c.name: c.result for c in by_class["auditclf.gates"]}
    (failure,) = results["performance.accuracy >= 0.99"]
    assert isinstance(failure, Failure) and failure.type == "GateFailed"
    assert "measured 0.86" in failure.message and "required >= 0.99" in failure.message
    assert "CI [" in failure.text and "required >= 0.99" in failure.text
    (skipped,) = results["performance.accuracy >= 0.95 on lower_ci (warn)"]
    assert isinstance(skipped, Skipped) and skipped.message.startswith("WARNING: lower CI bound")
    assert not results["performance.accuracy >= 0.5"]
    regressions = [c for c in by_class["auditclf.gates"] if c.name.startswith("baseline: ")]
    assert regressions and all(c.result[0].type == "BaselineRegression" for c in regressions)


def test_gate_judges_a_saved_run_as_the_run_did(gated_run, digits_run, tmp_path):
    out = tmp_path / "again"
    result = cli("gate", gated_run, "--baseline", digits_run, "--out", out)
    before, after = _report(gated_run), _report(out)
    assert result.status == 1 and before["verdict"] == after["verdict"] == "fail"
    assert after["gates"] == before["gates"]
    assert (out / "summary.md").read_text() == (gated_run / "summary.md").read_text()
    assert (out / "model_card.md").read_text() == (gated_run / "model_card.md").read_text()


def test_summary_renders_as_markdown_with_the_gate_table(gated_run):
    text = (gated_run / "summary.md").read_text()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert tokens[0].type == "heading_open" and "FAIL" in tokens[1].content
    tables = html.split("<table>")[1:]
    assert len(tables) == 2  # the gates, the key numbers
    gates = _report(gated_run)["gates"]
    assert tables[0].count("<tr>") == len(gates) + 1
    assert "<th>gate</th>" in tables[0] and "<th>interval</th>" in tables[0]
    assert "<td>pass</td>" in tables[0] and "<td>FAIL: measured" in tables[0]
    assert "<td>WARN: lower CI bound" in tables[0]
    assert "performance.accuracy" in tables[1] and tables[1].count("<tr>") >= 5
    assert "<a " not in html and "http" not in text  # link-free


def test_schema_command_prints_a_valid_draft_2020_12_schema():
    result = cli("schema")
    assert result.status == 0
    schema = json.loads(result.out)
    assert schema == REPORT_SCHEMA
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_real_reports_follow_the_schema(digits_run, gated_run):
    for folder in (digits_run, gated_run):
        raw = _report(folder)
        jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(raw)
        validate_report(raw)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.update(verdict="maybe"),
        lambda r: r["models"]["baseline"]["metrics"].update({"performance.accuracy": "0.9"}),
        lambda r: r["models"]["baseline"]["metrics"].update({"Performance Accuracy": 0.9}),
        lambda r: r["gates"].append({"metric": "x", "expression": "x", "passed": "yes"}),
        lambda r: r.pop("run"),
        lambda r: r["models"].pop("baseline"),
    ],
)
def test_schema_refuses_broken_reports(digits_run, breakage):
    raw = _report(digits_run)
    breakage(raw)
    with pytest.raises(jsonschema.ValidationError):
        validate_report(raw)


def _config_classes(model: type[BaseModel] = AuditConfig) -> list[type[BaseModel]]:
    found = [model]
    for info in model.model_fields.values():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += _config_classes(annotation)
    return found


def test_init_writes_every_option_at_its_default(tmp_path):
    target = tmp_path / "audit.yaml"
    result = cli("init", "--out", target)
    assert result.status == 0, result
    text = target.read_text()
    assert load_config(target) == AuditConfig()
    classes = _config_classes() + [GateSpec]
    assert {c.__name__ for c in classes} >= {"DataConfig", "RegressionConfig", "FairnessConfig"}
    for model in classes:
        for name, info in model.model_fields.items():
            assert f"{name}:" in text, f"{model.__name__}.{name}"
            # Every option says what it is: a description (units included) or a docstring.
            annotation = info.annotation
            nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            assert info.description or (nested and annotation.__doc__), f"{model.__name__}.{name}"
    assert "pixel units" in text and "(integer, ≥ 1)" in text and "one of: auto, cpu, cuda" in text
    assert typing.get_origin(AuditConfig.model_fields["gates"].annotation) is list

    again = cli("init", "--out", target)
    assert again.status == 2 and "--force" in again.err
    target.write_text("seed: 3\n")
    assert cli("init", "--out", target, "--force").status == 0
    assert load_config(target).seed == 0


RENDER_IN_A_NOTEBOOK = """
import matplotlib
matplotlib.use("svg")  # the user's own backend and style
matplotlib.rcParams["font.size"] = 17.0
before = dict(matplotlib.rcParams)
from auditclf.results import AuditResult
from auditclf.report import figures, render_html
result = AuditResult.load({run!r})
html = render_html(result)
figures.confusion({{"labels": ["a", "b"], "counts": [[3, 1], [0, 4]],
                   "normalised": [[0.75, 0.25], [0.0, 1.0]]}})
assert "data:image/png;base64," in html
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
changed = {{k for k, v in matplotlib.rcParams.items() if before[k] != v}}
assert not changed, changed
"""


def test_rendering_leaves_the_users_matplotlib_backend_and_style_alone(digits_run):
    """A notebook user's backend and rcParams survive importing and rendering a report."""
    import subprocess
    import sys

    script = RENDER_IN_A_NOTEBOOK.format(run=str(digits_run / "report.json"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
