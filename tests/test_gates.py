"""Gates: string and mapping forms, CI bounds, warn and missing, and every exit code.

Exit codes through the CLI, one test each; the run-time ones live beside their
cause, the gate ones are here on saved reports (no training):
0 and 1 here (``test_gate_command_exit_codes``) and on a run
(``test_cli.test_gates_decide_the_exit_code``); 2 here and in test_cli;
3 bad data ``test_datasets.test_cli_label_outside_configured_classes``;
4 refused model ``test_models.test_pickled_payload_is_refused_and_never_runs``;
5 here (``test_gate_reading_an_unreliable_robustness_number_exits_5``) and on
a run (``test_robustness.test_gate_on_an_unreliable_robustness_number_exits_5``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditclf.compare import BaselineCheck, Tolerances
from auditclf.config import load_config
from auditclf.errors import UsageError
from auditclf.gates import (
    Gate,
    GateOutcome,
    Verdict,
    evaluate_gate,
    evaluate_gates,
    gates_from_config,
    judge,
    parse_gate,
)
from auditclf.results import ModelResult
from tests.conftest import cli

ACCURACY = "performance.accuracy"


def _copy_report(digits_run, tmp_path, edit=None):
    """A copy of the digits run's report.json, changed by ``edit(raw)``."""
    raw = json.loads((digits_run / "report.json").read_text())
    if edit is not None:
        edit(raw)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("gate", "status", "fragment"),
    [
        ("performance.accuracy>=0.1", 0, "gate performance.accuracy >= 0.1: pass"),
        ("performance.accuracy > 0.999", 1, "FAIL (measured"),
        ("performance.accuracy>=", 2, "'performance.accuracy>=' is not KEY OP VALUE"),
        ("performance.accuracy => 0.5", 2, "unknown operator '=>'"),
        ("performance.accuracy != 0.5", 2, "'performance.accuracy != 0.5': unknown operator"),
        ("performance.acuracy>=0.5", 2, "closest: performance.accuracy"),
    ],
)
def test_gate_command_exit_codes(digits_run, gate, status, fragment):
    result = cli("gate", digits_run / "report.json", "--gate", gate)
    assert result.status == status, result
    assert fragment in (result.out if status < 2 else result.err)
    if status == 2:
        assert result.err.strip().count("\n") == 0


def test_gate_reading_an_unreliable_robustness_number_exits_5(digits_run, tmp_path):
    def unreliable(raw):
        raw["models"]["baseline"]["metrics"]["robustness.reliable"] = 0.0

    report = _copy_report(digits_run, tmp_path, unreliable)
    gate = "robustness.pgd_linf@0.1.accuracy>=0"
    result = cli("gate", report, "--gate", gate)
    assert result.status == 5, result
    assert "verdict: UNRELIABLE — 1 of 1 gate reads" in result.out
    # A gate that reads no robustness key is unaffected; a warn gate never changes the code.
    assert cli("gate", report, "--gate", "performance.accuracy>=0").status == 0
    config = tmp_path / "warn.yaml"
    config.write_text(f"gates:\n  - {{metric: {gate.split('>=')[0]}, min: 0, severity: warn}}\n")
    assert cli("gate", report, "--config", config).status == 0


def test_mapping_gates_warn_lower_ci_and_missing(digits_run, tmp_path):
    def null_ece(raw):
        model = raw["models"]["baseline"]
        model["metrics"]["performance.ece"] = None
        model["notes"]["performance.ece"] = "no confident predictions"

    report = _copy_report(digits_run, tmp_path, null_ece)
    accuracy = json.loads(report.read_text())["models"]["baseline"]["metrics"]
    low = accuracy["performance.accuracy.ci_low"]
    config = tmp_path / "gates.yaml"
    config.write_text(
        "gates:\n"
        f"  - metric: performance.accuracy\n    min: {low - 0.01}\n    on: lower_ci\n"
        f"  - {{metric: performance.accuracy, min: {low + 0.01}, on: lower_ci, severity: warn}}\n"
        "  - {metric: performance.ece, max: 0.5, missing: pass}\n"
        "  - {metric: performance.balanced_accuracy, min: 0, max: 1}\n"
    )
    out = tmp_path / "out"
    result = cli("gate", report, "--config", config, "--out", out)
    assert result.status == 0, result  # the failing gate is a warning
    assert "on lower_ci (warn): WARN (lower CI bound" in result.out
    assert "metric is null: no confident predictions; passes (missing: pass)" in result.out
    assert {p.name for p in out.iterdir()} == {
        "report.html",
        "report.json",
        "junit.xml",
        "summary.md",
        "model_card.md",
    }  # a saved report carries no samples or weights to write
    gates = json.loads((out / "report.json").read_text())["gates"]
    assert [g["status"] for g in gates] == ["pass", "warn", "pass", "pass", "pass"]
    assert gates[0]["key"] == "performance.accuracy.ci_low" and gates[0]["value"] == low
    assert gates[0]["ci"] == [low, accuracy["performance.accuracy.ci_high"]]
    assert "<skipped" in (out / "junit.xml").read_text()
    assert "| WARN: lower CI bound" in (out / "summary.md").read_text()

    config.write_text("gates:\n  - {metric: performance.ece, max: 0.5}\n")
    result = cli("gate", report, "--config", config)
    assert result.status == 1 and "metric is null: no confident predictions" in result.out


def test_fairness_difference_gates_on_its_interval(digits_run):
    metrics = json.loads((digits_run / "report.json").read_text())["models"]["baseline"]["metrics"]
    key = "fairness.stroke.accuracy.difference"
    (gate,) = gates_from_config(
        load_config(None, {"gates": [{"metric": key, "max": 1.0, "on": "upper_ci"}]}).gates
    )
    (outcome,) = evaluate_gates([gate], metrics, {})
    assert outcome.key == f"{key}_ci_high" and outcome.passed


def test_on_ci_without_an_interval_is_a_usage_error_naming_the_sibling(digits_run):
    result = cli("gate", digits_run, "--gate", "performance.f1_macro>=0")
    assert result.status == 0
    gate = Gate("performance.f1_macro", ">=", 0.0, on="lower_ci")
    with pytest.raises(UsageError, match="reads 'performance.f1_macro.ci_low'"):
        evaluate_gates([gate], {"performance.f1_macro": 0.9}, {})


def test_gate_without_gates_uses_the_reports_own_or_refuses(digits_run, tmp_path):
    result = cli("gate", digits_run / "report.json")
    assert result.status == 2 and "no gates to evaluate" in result.err

    def gated(raw):
        raw["run"]["config"]["gates"] = ["performance.accuracy >= 0.999"]

    result = cli("gate", _copy_report(digits_run, tmp_path, gated))
    assert result.status == 1 and "performance.accuracy >= 0.999: FAIL" in result.out


def test_report_of_another_schema_version_is_refused(digits_run, tmp_path):
    def future(raw):
        raw["schema_version"] = 99

    result = cli("gate", _copy_report(digits_run, tmp_path, future), "--gate", "a>=1")
    assert result.status == 2
    assert "schema_version 99 is not one this auditclf reads (1)" in result.err


@pytest.mark.parametrize(
    ("gates", "fragment"),
    [
        (
            [{"metric": "performance.accuracy", "minimum": 0.5}],
            "gates.0.minimum: unknown key; did you mean 'min'?",
        ),
        ([{"metric": "performance.accuracy"}], "gates.0: give min or max"),
        ([{"metric": "x", "min": 0, "severity": "info"}], "gates.0.severity"),
        ([{"metric": "x", "min": 0, "on": "ci_low"}], "gates.0.on"),
        ([3], "gates.0: Input should be a valid string"),
    ],
)
def test_bad_gate_mappings_name_the_key(gates, fragment):
    with pytest.raises(UsageError) as info:
        load_config(None, {"gates": gates})
    assert fragment in str(info.value)


def test_yaml_on_key_and_ranges(tmp_path):
    # PyYAML reads a bare `on:` as the boolean true; the gate still means `on`.
    config = tmp_path / "audit.yaml"
    config.write_text(
        "gates:\n  - {metric: performance.accuracy, min: 0.5, max: 0.99, on: upper_ci}\n"
        "  - performance.ece <= 0.1\n"
    )
    gates = gates_from_config(load_config(config).gates)
    assert gates == [
        Gate("performance.accuracy", ">=", 0.5, on="upper_ci"),
        Gate("performance.accuracy", "<=", 0.99, on="upper_ci"),
        parse_gate("performance.ece<=0.1"),
    ]
    assert gates[0].expression == "performance.accuracy >= 0.5 on upper_ci"


def test_gate_command_help():
    for command in ("gate", "compare", "schema", "init"):
        result = cli(command, "--help")
        assert result.status == 0 and "usage: auditclf" in result.out


def test_gate_outcomes_keep_report_json_key_order_and_round_trip():
    gate = evaluate_gate(Gate(ACCURACY, ">=", 0.5), {ACCURACY: 0.8}, {})
    check = BaselineCheck(Path("old/report.json"), {ACCURACY: 0.9}, Tolerances(0.01))
    (regression,) = check.evaluate({ACCURACY: 0.8}, {})
    (held,) = check.evaluate({ACCURACY: 0.9}, {})
    assert list(gate.to_dict()) == [
        "metric", "op", "threshold", "severity", "on", "missing", "kind", "key", "expression",
        "value", "ci", "passed", "status", "reason",
    ]  # fmt: skip
    assert list(regression.to_dict()) == [
        "kind", "metric", "key", "op", "threshold", "severity", "on", "missing", "expression",
        "value", "baseline_value", "ci", "passed", "status", "reason",
    ]  # fmt: skip
    assert regression.to_dict()["baseline_value"] == 0.9 and regression.status == "fail"
    assert "baseline_value" not in held.to_dict() and held.status == "pass"
    for outcome in (gate, regression, held):
        assert GateOutcome.from_dict(outcome.to_dict()) == outcome


def test_a_report_older_than_status_gets_it_when_loaded():
    warn = Gate(ACCURACY, ">=", 0.9, severity="warn")
    raw = evaluate_gate(warn, {ACCURACY: 0.8}, {}).to_dict()
    del raw["status"]
    assert GateOutcome.from_dict(raw).status == "warn"
    assert GateOutcome.from_dict({**raw, "severity": "fail"}).status == "fail"
    assert GateOutcome.from_dict({**raw, "passed": True}).status == "pass"


def test_judge_gives_the_outcomes_and_the_verdict():
    robust = "robustness.fgsm@0.1.accuracy"
    metrics = {ACCURACY: 0.8, robust: 0.5, "robustness.reliable": 1.0}
    models = {"baseline": ModelResult(card={}, metrics=metrics)}
    check = BaselineCheck(Path("old/report.json"), {ACCURACY: 0.8}, Tolerances(0.01))
    held, failed = Gate(ACCURACY, ">=", 0.5), Gate(ACCURACY, ">=", 0.9)
    warned = Gate(ACCURACY, ">=", 0.9, severity="warn")
    outcomes, verdict = judge(models, [held, warned, Gate(robust, ">=", 0.1)], check)
    assert verdict is Verdict.PASS and str(verdict) == "pass"
    assert [(o.kind, o.status) for o in outcomes] == [
        ("gate", "pass"), ("gate", "warn"), ("gate", "pass"), ("baseline", "pass")
    ]  # fmt: skip
    assert judge(models, [failed], None)[1] is Verdict.FAIL
    metrics["robustness.reliable"] = 0.0
    assert judge(models, [Gate(robust, ">=", 0.1)], None)[1] is Verdict.UNRELIABLE
    assert judge(models, [held], None)[1] is Verdict.PASS  # the gate reads no robustness key
    models["baseline"].sections.append({"name": "fairness", "error": "boom"})
    assert judge(models, [held], None)[1] is Verdict.ERROR
