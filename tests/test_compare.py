"""`auditclf compare`, `--baseline/--max-drop`, and the one direction table behind both."""

from __future__ import annotations

import json

import pytest

from auditclf.compare import (
    HIGHER,
    LOWER,
    NEUTRAL,
    Tolerances,
    compare_metrics,
    direction,
    is_headline,
    parse_max_drop,
    parse_max_drops,
)
from auditclf.errors import UsageError
from auditclf.keys import interval_keys
from tests.conftest import cli


def _report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def _derived(digits_run, tmp_path, name, changes, card=None, config=None):
    """The digits run's report.json with some baseline metrics changed, their intervals moved
    with them, and some config settings replaced (B of a comparison)."""
    raw = _report(digits_run)
    model = raw["models"]["baseline"]
    for key, value in changes.items():
        model["metrics"][key] = value if value is None else model["metrics"][key] + value
        if value is None:
            model["notes"][key] = "undefined in B"
        for bound in (interval_keys(key) or ()) if value is not None else ():
            model["metrics"][bound] += value
    for section, settings in (config or {}).items():
        raw["run"]["config"][section].update(settings)
    model["card"].update(card or {})
    folder = tmp_path / name
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize(
    ("key", "way"),
    [
        ("performance.accuracy", HIGHER),
        ("performance.top_k_accuracy@2", HIGHER),
        ("performance.class.3.recall", HIGHER),
        ("performance.ece", LOWER),
        ("performance.nll", LOWER),
        ("performance.mean_confidence", NEUTRAL),
        ("performance.class.3.support", NEUTRAL),
        ("robustness.pgd_linf@8/255.accuracy", HIGHER),
        ("robustness.fgsm@0.1.success_rate", LOWER),
        ("robustness.min_eps.median", HIGHER),
        ("robustness.reliable", HIGHER),
        ("robustness.check.pgd_beats_fgsm", HIGHER),
        ("robustness.samples", NEUTRAL),
        ("fairness.stroke.accuracy.difference", LOWER),
        ("fairness.stroke.accuracy.difference_ci_high", LOWER),
        ("fairness.stroke.accuracy.ratio", HIGHER),
        ("fairness.stroke.accuracy.min", HIGHER),
        ("fairness.stroke.ece.max", LOWER),
        ("fairness.stroke.group.thin.class.3.fpr", LOWER),
        ("fairness.stroke.group.thin.class.3.selection_rate", NEUTRAL),
        ("fairness.stroke.equalized_odds_difference", LOWER),
        ("explain.gradcam.deletion_auc", LOWER),
        ("explain.gradcam.random_deletion_auc", NEUTRAL),
        ("explain.gradcam.insertion_auc", HIGHER),
        ("explain.gradcam.randomization_correlation", LOWER),
        ("explain.integrated_gradients.convergence_delta", LOWER),
        ("explain.lime.noise_rank_correlation", HIGHER),
        ("data.imbalance_ratio", NEUTRAL),
        ("hardened.performance.ece", LOWER),
        ("rebalanced.robustness.min_eps.median", HIGHER),
    ],
)
def test_direction_of_each_key_family(key, way):
    assert direction(key) == way


def test_headline_rule_over_a_real_report(digits_run):
    report = _report(digits_run)
    keys = set(report["models"]["baseline"]["metrics"])
    keys |= {f"hardened.{k}" for k in report["models"]["hardened"]["metrics"]}
    headline = {k for k in keys if is_headline(k)}
    for key in (
        "performance.accuracy",
        "performance.ece",
        "robustness.pgd_linf@0.1.accuracy",
        "robustness.pgd_l2@0.5.accuracy",
        "robustness.worst@0.1.accuracy",
        "robustness.min_eps.median",
        "robustness.reliable",
        "fairness.stroke.accuracy.difference",
        "fairness.slant.equalized_odds_difference",
        "hardened.performance.accuracy",
    ):
        assert key in headline, key
    for key in headline:
        assert not key.endswith(("ci_low", "ci_high", ".support", ".size", ".samples")), key
        assert ".class." not in key and ".group." not in key, key
        assert not key.startswith("data."), key
    assert "performance.mean_confidence" not in headline
    assert "robustness.fgsm@0.1.success_rate" not in headline


def test_max_drop_parsing():
    assert parse_max_drop("0.01") == (None, 0.01)
    assert parse_max_drop("performance.accuracy=0.005") == ("performance.accuracy", 0.005)
    assert parse_max_drop("robustness.*=0.1") == ("robustness.*", 0.1)
    for bad in ("-1", "x", "=0.1", "performance.accuracy=nan"):
        with pytest.raises(UsageError, match="--max-drop"):
            parse_max_drop(bad)
    flags = ["0.02", "performance.accuracy=0.005", "0.03", "performance.accuracy=0.001"]
    assert parse_max_drops(flags) == (0.03, {"performance.accuracy": 0.001})  # the last wins
    assert parse_max_drops(None) == (None, {})


def test_tolerances_per_key_and_pattern():
    old = {"performance.accuracy": 0.9, "performance.class.a.recall": 0.9, "robustness.samples": 60}
    new = {
        "performance.accuracy": 0.885,
        "performance.class.a.recall": 0.7,
        "robustness.samples": 9,
    }
    rows = {r["key"]: r for r in compare_metrics(old, new, Tolerances(0.01))}
    assert rows["performance.accuracy"]["regression"]
    assert rows["performance.accuracy"]["why"] == "performance.accuracy dropped 0.015 > 0.01"
    assert rows["performance.class.a.recall"]["tolerance"] is None  # per class: not by default
    assert rows["robustness.samples"]["change"] is None  # a count has no direction
    tolerances = Tolerances(0.01, {"performance.accuracy": 0.02, "performance.class.*": 0.1})
    rows = {r["key"]: r for r in compare_metrics(old, new, tolerances)}
    assert not rows["performance.accuracy"]["regression"]
    assert rows["performance.class.a.recall"]["regression"]
    with pytest.raises(UsageError, match="no better direction"):
        Tolerances(0.01, {"robustness.samples": 1}).check(set(old))
    with pytest.raises(UsageError, match="no metric 'performance.acuracy'"):
        Tolerances(0.01, {"performance.acuracy": 1}).check(set(old))


def test_compare_lists_regressions_first_and_escapes(digits_run, tmp_path):
    changes = {
        "performance.accuracy": -0.2,  # beyond 0.01 and sampling error: a regression
        "performance.balanced_accuracy": -0.023,  # beyond 0.01, within sampling error
        "performance.ece": 0.005,  # worse, within tolerance
        "robustness.pgd_linf@0.1.accuracy": 0.1,  # better
        "performance.class.1.recall": -0.2,  # per class: listed, not held to a tolerance
        "performance.brier": None,  # a number that became null: a regression
    }
    evil = {"architecture": "<script>alert(1)</script>", "source": "a & b <i>"}
    b = _derived(digits_run, tmp_path, "b", changes, evil)
    out = tmp_path / "cmp"
    result = cli("compare", digits_run, b / "report.json", "--out", out)
    assert result.status == 1, result
    assert "regressions beyond tolerance and sampling error (2):" in result.out
    assert "  performance.accuracy: " in result.out and "  performance.brier: " in result.out
    noise = result.out.split("within sampling error (1):\n")[1].splitlines()[0]
    assert noise.startswith("  performance.balanced_accuracy: ")
    comparison = json.loads((out / "compare.json").read_text())
    brier = _report(digits_run)["models"]["baseline"]["metrics"]["performance.brier"]
    assert {r["key"]: r["why"] for r in comparison["regressions"]} == {
        "performance.accuracy": "performance.accuracy dropped 0.2 > 0.01",
        "performance.brier": f"performance.brier became null: undefined in B (was {brier:.4g})",
    }
    rows = {r["key"]: r for r in comparison["rows"]}
    assert (
        rows["performance.ece"]["change"] == "worse" and not rows["performance.ece"]["regression"]
    )
    assert rows["performance.balanced_accuracy"]["within_noise"]
    assert [r["key"] for r in comparison["within_noise"]] == ["performance.balanced_accuracy"]
    low, high = rows["performance.accuracy"]["difference_ci"]
    assert low < -0.2 < high < 0  # MOVER: around the change, excluding 0
    assert rows["robustness.pgd_linf@0.1.accuracy"]["change"] == "better"
    assert rows["performance.class.1.recall"]["tolerance"] is None
    assert "performance.accuracy.ci_low" not in rows  # bounds fold into their metric's row
    assert rows["performance.accuracy"]["ci_a"] is not None
    html = (out / "compare.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b &lt;i&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert html.index("Regressions beyond tolerance") < html.index("Headline metrics")
    assert 'class="num delta worse"' in html and 'class="num delta better"' in html

    # A tolerance for the key lifts it; the null stays a regression.
    result = cli("compare", digits_run, b, "--out", out, "--max-drop", "performance.accuracy=0.25")
    assert result.status == 1
    assert "regressions beyond tolerance and sampling error (1):" in result.out
    calm = _derived(digits_run, tmp_path, "calm", {"performance.ece": 0.005})
    assert cli("compare", digits_run, calm, "--out", out).status == 0
    result = cli("compare", digits_run, calm, "--model-b", "rebalanced", "--out", out)
    assert result.status == 2 and "no model 'rebalanced'; it has baseline, hardened" in result.err


def test_compare_baseline_against_hardened_lists_gains_and_loss(gated_run, tmp_path):
    out = tmp_path / "cmp"
    result = cli("compare", gated_run, gated_run, "--model-b", "hardened", "--out", out)
    comparison = json.loads((out / "compare.json").read_text())
    rows = {r["key"]: r for r in comparison["rows"]}
    # Hardening cost two test images of clean accuracy (beyond 0.01, within sampling error)
    # and much calibration (beyond both).
    clean = rows["performance.accuracy"]
    assert clean["delta"] < -0.01 and clean["within_noise"] and not clean["regression"]
    assert rows["performance.ece"]["regression"]
    gains = [r["key"] for r in comparison["improvements"]]
    assert "robustness.pgd_linf@0.1.accuracy" in gains and "robustness.worst@0.1.accuracy" in gains
    assert all(direction(k) * rows[k]["delta"] > 0 for k in gains)  # each the better way
    assert result.status == 1, result
    regressions, noise = result.out.split("within sampling error")[:2]
    assert "  performance.ece: " in regressions and "  performance.accuracy: " in noise
    assert "  robustness.pgd_linf@0.1.accuracy: " in result.out.split("improvements")[1]
    assert comparison["a"]["model"] == "baseline" and comparison["b"]["model"] == "hardened"


def test_run_with_baseline_reports_regressions_as_gates(gated_run, digits_run):
    report = _report(gated_run)
    entries = [g for g in report["gates"] if g.get("kind") == "baseline"]
    assert entries and all(not g["passed"] and g["status"] == "fail" for g in entries)
    # The same model audited again: only the more strongly hardened model regressed.
    assert all(g["metric"].startswith("hardened.") for g in entries)
    # The stronger hardening costs calibration beyond tolerance and sampling error.
    ece = next(g for g in entries if g["metric"] == "hardened.performance.ece")
    before = _report(digits_run)["models"]["hardened"]["metrics"]["performance.ece"]
    assert ece["baseline_value"] == before
    assert ece["expression"] == (
        f"baseline: hardened.performance.ece rose {ece['value'] - before:.3g} > 0.01"
    )
    assert "excludes 0" in ece["reason"]


def test_gate_with_baseline_and_per_key_tolerance(digits_run, tmp_path):
    b = _derived(digits_run, tmp_path, "b", {"performance.accuracy": -0.2})
    args = ("gate", b, "--baseline", digits_run, "--gate", "performance.accuracy>=0")
    result = cli(*args)
    assert result.status == 1
    assert "baseline: performance.accuracy dropped 0.2 > 0.01: FAIL" in result.out
    assert "difference interval [" in result.out and "excludes 0" in result.out
    result = cli(*args, "--max-drop", "0.001", "--max-drop", "performance.accuracy=0.25")
    assert result.status == 0, result
    assert "baseline: no metric got worse than in report.json" in result.out
    result = cli(*args, "--max-drop", "performance.acuracy=0.03")
    assert result.status == 2 and "no metric 'performance.acuracy'" in result.err


def test_compare_warns_of_other_settings_and_counts_noise_as_no_regression(digits_run, tmp_path):
    """The same weights audited on fewer attacked images: every robust accuracy moves, within
    its (wider) interval. Compare says first that the settings differ, lists them, and counts
    no regression; the HTML states the settings and the rule."""
    raw = _report(digits_run)["models"]["baseline"]["metrics"]
    robust = {k: -0.05 for k in raw if k.startswith("robustness.") and k.endswith(".accuracy")}
    robust = {k: v for k, v in robust.items() if raw[k] >= 0.05 and interval_keys(k)}
    settings = {"robustness": {"samples": 300}, "analyses": {"bootstrap": 1000}}
    b = _derived(digits_run, tmp_path, "b", robust, config=settings)
    out = tmp_path / "cmp"
    result = cli("compare", digits_run, b, "--out", out)
    assert result.status == 0, result
    lines = result.out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: "))
    assert warning == 2  # right after the two reports' names
    assert "different settings (2)" in lines[warning]
    assert lines[warning + 1 : warning + 3] == [
        "  analyses.bootstrap: 200 -> 1000",
        "  robustness.samples: 60 -> 300",
    ]
    assert "rule: A metric counts as a regression when" in result.out
    assert "regressions beyond tolerance and sampling error (0):" in result.out
    comparison = json.loads((out / "compare.json").read_text())
    assert comparison["settings"] == [
        {"setting": "analyses.bootstrap", "a": 200, "b": 1000},
        {"setting": "robustness.samples", "a": 60, "b": 300},
    ]
    assert comparison["counts"]["within_noise"] >= 1
    html = (out / "compare.html").read_text()
    assert "audited with different settings (2)" in html and "robustness.samples" in html
    assert comparison["rule"] in html.replace("&#39;", "'")
    # The same report against itself: no settings warning.
    same = cli("compare", digits_run, digits_run, "--out", out)
    assert same.status == 0 and "warning:" not in same.out


def test_baseline_of_other_settings_is_a_warning_finding(digits_run, tmp_path):
    b = _derived(digits_run, tmp_path, "b", {}, config={"robustness": {"samples": 300}})
    out = tmp_path / "judged"
    result = cli("gate", b, "--baseline", digits_run, "--out", out)
    assert result.status == 0, result
    findings = _report(out)["models"]["baseline"]["findings"]
    assert findings[0]["severity"] == "warning"
    assert findings[0]["message"].endswith(
        "audited with other settings, so a change may come from them and not from the model: "
        "robustness.samples 60 → 300"
    )
    assert "audited with other settings" in (out / "summary.md").read_text()


def test_a_number_other_settings_took_away_is_not_measured_not_a_regression(digits_run, tmp_path):
    """The issue's example: the same weights on fewer attacked images leave a group too
    small for its robust gap (null in B). Under other settings that is listed as not
    measured in B, with B's reason; under the same settings it stays a regression."""
    lost = {"performance.brier": None}
    b = _derived(digits_run, tmp_path, "b", lost, config={"robustness": {"samples": 30}})
    out = tmp_path / "cmp"
    result = cli("compare", digits_run, b, "--out", out)
    assert result.status == 0, result
    assert "regressions beyond tolerance and sampling error (0):" in result.out
    assert "not measured in B, whose settings differ (1):\n  performance.brier became null: " in (
        result.out
    )
    comparison = json.loads((out / "compare.json").read_text())
    assert [r["key"] for r in comparison["lost"]] == ["performance.brier"]
    assert comparison["counts"]["lost"] == 1 and not comparison["regressions"]
    page = (out / "compare.html").read_text()
    assert "Not measured in B" in page
    assert "<dd>NO GATES SET</dd>" in page  # the verdict in the words of every format
    same = _derived(digits_run, tmp_path, "same", lost)
    result = cli("compare", digits_run, same, "--out", tmp_path / "cmp-same")
    assert result.status == 1 and "sampling error (1):\n  performance.brier" in result.out
