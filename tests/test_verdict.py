"""One verdict, worded and coloured the same in every format (HTML, summary.md, junit.xml,
the notebook summary, the CLI line), and gate rows of an unreliable run never green."""

from __future__ import annotations

import html
import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from auditclf.gates import judge, parse_gate
from auditclf.report import (
    build_view,
    render_html,
    render_junit,
    render_markdown,
    render_summary_html,
)
from auditclf.report import html as html_module
from auditclf.report.card import render_card_markdown
from auditclf.report.verdict import verdict_banner
from auditclf.results import AuditResult
from tests.conftest import cli

ROBUST = "robustness.pgd_linf@0.1.accuracy"
CASES = {  # state: (gates, robustness reliable, label, words of the sentence)
    "ungated": ([], 1.0, "NO GATES SET", "No gate was set, so nothing was held to a threshold"),
    "pass": (["performance.accuracy>=0.5"], 1.0, "PASS", "The one gate passed."),
    "fail": (["performance.accuracy>=0.99"], 1.0, "FAIL", "1 of 1 gate failed."),
    "unreliable": ([f"{ROBUST}>=0"], 0.0, "UNRELIABLE", "1 of 1 gate reads a robustness"),
}


def _judged(digits_run: Path, state: str) -> AuditResult:
    """The digits run judged by the case's gates (its robustness made unreliable on demand),
    as ``auditclf gate`` would judge it; the hardened model is left out so that only the
    case decides what is reliable."""
    texts, reliable, _, _ = CASES[state]
    result = AuditResult.load(digits_run / "report.json")
    result = replace(result, models={"baseline": result.models["baseline"]})
    result.models["baseline"].metrics["robustness.reliable"] = reliable
    outcomes, verdict = judge(result.models, [parse_gate(t) for t in texts], None)
    return replace(result, gates=outcomes, verdict=verdict)


def _page(result: AuditResult, monkeypatch) -> str:
    """report.html without drawing its figures (the banner and gates are what is read)."""
    real = html_module.render_figure

    def undrawn(data: dict, arrays: dict):
        return real(data, arrays) if data["kind"] == "attribution_gallery" else "data:image/png;,"

    monkeypatch.setattr(html_module, "render_figure", undrawn)
    return html.unescape(render_html(result))


@pytest.mark.parametrize("state", list(CASES))
def test_every_format_says_the_same_verdict(digits_run, state, monkeypatch, tmp_path):
    result = _judged(digits_run, state)
    _, _, label, words = CASES[state]
    banner = verdict_banner(result)
    assert banner.label == label and words in banner.sentence
    page = _page(result, monkeypatch)
    assert f'<div class="banner {banner.tone}">' in page
    assert f'<div class="verdict">{label}</div>' in page and banner.sentence in page
    markdown = render_markdown(result).replace("\\", "")
    assert markdown.startswith(f"## auditclf: {banner.icon} {label}\n")
    assert html.unescape(banner.sentence) in html.unescape(markdown)
    card = render_card_markdown(build_view(result)).replace("\\", "")
    assert f"Verdict: {label}. {banner.sentence}" in card.replace("&gt;", ">")
    notebook = html.unescape(render_summary_html(result))
    assert label in notebook and banner.sentence in notebook and banner.colour in notebook
    suite = ET.fromstring(render_junit(result)).find("testsuite")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == {"verdict": label, "verdict.reason": banner.sentence}
    # The CLI's line: the same label and sentence, from the saved report.
    report = tmp_path / "report.json"
    report.write_text(result.to_json())
    gates = [arg for text in CASES[state][0] for arg in ("--gate", text)]
    if gates:
        printed = cli("gate", report, *gates)
        assert f"verdict: {label} — {banner.sentence}\n" in printed.out


def test_the_ungated_run_says_no_gates_set_not_pass(digits_run, tmp_path):
    summary = (digits_run / "summary.md").read_text()
    assert summary.startswith("## auditclf: ➖ NO GATES SET\n") and "PASS" not in summary
    junit = ET.fromstring((digits_run / "junit.xml").read_text())
    assert next(junit.iter("property")).get("value") == "NO GATES SET"
    report = json.loads((digits_run / "report.json").read_text())
    assert (report["verdict"], report["gated"]) == ("pass", False)  # a script reads both


def test_a_gate_on_an_unreliable_number_is_never_a_green_pass(digits_run, monkeypatch):
    result = _judged(digits_run, "unreliable")
    assert result.gates[0].status == "pass"  # its threshold held: report.json keeps that
    page = _page(result, monkeypatch)
    assert '<span class="tag unreliable">unreliable</span>' in page
    assert '<span class="tag pass">' not in page
    assert "All 1 gate(s) passed" not in page
    row = next(line for line in render_markdown(result).splitlines() if ROBUST in line)
    assert "UNRELIABLE: reads an UNRELIABLE number" in row.replace("\\", "")
    case = next(
        c for c in ET.fromstring(render_junit(result)).iter("testcase") if ROBUST in c.get("name")
    )
    assert case.find("error").get("type") == "UnreliableNumber"


def test_a_passing_run_names_the_unreliable_numbers_no_gate_reads(digits_run):
    result = _judged(digits_run, "pass")
    result.models["baseline"].metrics["robustness.reliable"] = 0.0
    banner = verdict_banner(result)
    assert banner.label == "PASS"
    assert banner.sentence.endswith(
        "The robustness numbers are UNRELIABLE (a sanity check failed); no gate reads them."
    )


def test_reports_name_paths_under_the_current_folder_relative_to_it(
    digits_run, tmp_path, monkeypatch
):
    """Paths given absolute but under the current folder are shown relative to it: no report
    page or summary carries the auditing machine's own folders."""
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    for name in ("report.json", "artifacts.npz"):
        shutil.copy(digits_run / name, run / name)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "judged"
    gate = "performance.accuracy>=0.99"
    result = cli("gate", run, "--baseline", run / "report.json", "--gate", gate, "--out", out)
    assert result.status == 1, result
    for name in ("report.html", "summary.md", "junit.xml", "model_card.md"):
        assert str(tmp_path) not in (out / name).read_text(), name
    assert "compared with runs/a/report.json" in (out / "report.html").read_text()
