"""The report as a reviewer meets it: every finding first, a contents column that stays in
view, long tables folded behind one line that names their worst row."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from auditclf.report.folds import FOLD_ROWS, fold, fold_ledger
from auditclf.report.html import render_html
from auditclf.report.view import MAX_OPEN_NOTES, build_view
from auditclf.results import AuditResult


def _finding(severity: str, section: str, message: str, metric: str | None = None) -> dict:
    return {"severity": severity, "message": message, "section": section, "metric": metric}


def _with_findings(result: AuditResult, findings: dict[str, list[dict]]) -> AuditResult:
    models = {
        name: replace(m, findings=findings.get(name, [])) for name, m in result.models.items()
    }
    return replace(result, models=models)


@pytest.fixture(scope="module")
def saved(digits_run) -> AuditResult:
    return AuditResult.load(digits_run / "report.json")


def test_findings_come_worst_first_in_section_order_and_link_to_their_block(saved):
    assert "hardened" in saved.models  # the digits run hardens: a retrained model's findings
    result = _with_findings(
        saved,
        {
            "baseline": [
                _finding("info", "performance", "a note on performance"),
                _finding("warning", "fairness", "a fairness gap", "fairness.stroke.gap"),
                _finding("error", "corruption", "corruption check failed"),
                _finding("warning", "robustness", "an attack looks weak", "robustness.x"),
                _finding("info", "training", "still improving"),
            ],
            "hardened": [_finding("error", "robustness", "hardened attack broke")],
        },
    )
    findings = build_view(result).findings
    assert [(f["severity"], f["message"]) for f in findings] == [
        ("error", "hardened attack broke"),  # robustness comes before corruption
        ("error", "corruption check failed"),
        ("warning", "an attack looks weak"),
        ("warning", "a fairness gap"),
        ("info", "still improving"),  # training comes before performance
        ("info", "a note on performance"),
    ]
    places = {f["message"]: (f["anchor"], f["place"]) for f in findings}
    assert places["hardened attack broke"] == ("model-hardened", "Robustness, hardened model")
    assert places["a fairness gap"] == ("fairness", "Fairness")
    assert places["still improving"] == ("training", "Training")
    assert [f["label"] for f in findings][::2] == ["Error", "Warning", "Note"]

    html = render_html(result)
    first = html.split('<div id="findings"')[1].split("</div>\n</section>")[0]
    assert first.index("hardened attack broke") < first.index("a fairness gap")
    assert '<a href="#model-hardened">Robustness, hardened model</a>' in first
    assert "<code>fairness.stroke.gap</code>" in first
    ids = set(re.findall(r' id="([^"]+)"', html))
    assert {f["anchor"] for f in findings} <= ids  # every link lands on a block of the page
    # the list comes right after the key numbers, before the first section of numbers
    assert html.index('<div class="tiles">') < html.index('id="findings"') < html.index('id="card"')


def test_many_notes_fold_behind_one_line_and_a_finding_is_escaped(saved):
    notes = [_finding("info", "calibration", f"note {i}") for i in range(MAX_OPEN_NOTES + 1)]
    hostile = '<img src=x onerror="alert(1)">'
    result = _with_findings(
        saved, {"baseline": [*notes, _finding("warning", "imbalance", hostile, hostile)]}
    )
    view = build_view(result)
    assert view.fold_notes and view.notes_line == f"{MAX_OPEN_NOTES + 1} notes"
    assert [f["message"] for f in view.decisions] == [hostile]
    first = render_html(result, view=view).split('<div id="findings"')[1]
    first = first.split("</div>\n</section>")[0]
    assert f'<details class="notes"><summary>{MAX_OPEN_NOTES + 1} notes</summary>' in first
    assert first.index(hostile.replace("<", "&lt;")[:12]) < first.index("<details")
    assert "<img" not in first and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in first

    quiet = build_view(_with_findings(saved, {"baseline": notes[:MAX_OPEN_NOTES]}))
    assert not quiet.fold_notes and not quiet.decisions


def test_the_page_has_a_sticky_contents_column_no_script_and_no_broken_link(digits_run):
    html = (digits_run / "report.html").read_text()
    assert '<nav class="toc" aria-label="Contents">' in html
    assert re.search(r"nav\.toc \{[^}]*position:sticky", html)
    assert "<script" not in html and "default-src 'none'" in html
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id twice"
    assert set(re.findall(r'href="#([^"]+)"', html)) <= set(ids)
    # the long tables are folded: one line each, naming the worst row
    summaries = re.findall(r'<details class="fold"><summary>([^<]*)</summary>', html)
    assert any(s.startswith("Robust accuracy per class × eps") for s in summaries), summaries
    assert any("Sanity checks of the attacks" in s for s in summaries)


REF = "0.1"
PER_CLASS = {
    "columns": ["class", "pgd_linf @ 0.05", "pgd_linf @ 0.1", "pgd_linf @ 0.2"],
    "rows": [[str(c), 0.9, 0.5 + c / 100, 0.0] for c in range(10)] + [["{x}", 0.9, 0.41, 0.0]],
}


def test_a_long_table_folds_naming_its_worst_row_at_the_reference_eps():
    line = fold("robustness", "per_class", PER_CLASS, REF)
    # 0.0 at eps 0.2 is lower, but the headline eps is 0.1; a class named "{x}" stays as it is
    assert (
        line == "Robust accuracy per class × eps (11 rows) — worst at eps 0.1: class {x}, "
        "pgd_linf @ 0.1: 0.410"
    )
    attacks = {
        "columns": ["attack", "norm", "eps", "robust accuracy", "95% CI"],
        "rows": [
            ["fgsm", "linf", "0.1", 0.7, [0.6, 0.8]],
            ["pgd_linf", "linf", "0.1", 0.55, [0.5, 0.6]],
            ["pgd_linf", "linf", "0.3", 0.0, [0.0, 0.1]],
            ["square", "linf", "0.1", 0.6, None],
            ["apgd_ce", "linf", "0.1", 0.55, [0.5, 0.6]],
        ],
    }
    assert fold("robustness", "attacks", attacks, REF) == (
        "Robust accuracy per attack × eps (5 rows) — worst at eps 0.1: pgd_linf (linf) at eps "
        "0.1 and 1 more tied, robust accuracy 0.550"
    )


def test_short_and_headline_tables_stay_open_and_checks_always_fold():
    short = {"columns": PER_CLASS["columns"], "rows": PER_CLASS["rows"][:FOLD_ROWS]}
    assert fold("robustness", "per_class", short, REF) is None
    assert fold("robustness", "worst", PER_CLASS, REF) is None
    checks = {
        "columns": ["check", "result", "measured"],
        "rows": [["adversarial_valid", "pass", "0"], ["below_clean", "FAIL", "0.2"]],
    }
    assert fold("robustness", "checks", checks, REF) == (
        "Sanity checks of the attacks (2 rows) — 1 not passed: below_clean (FAIL)"
    )
    checks["rows"][1][1] = "pass"
    assert fold("robustness", "checks", checks, REF).endswith("— all pass")
    same = {"columns": ["class", "train"], "rows": [[str(c), 350] for c in range(5)]}
    assert fold("imbalance", "distribution", same, REF) == (
        "Images per class and split (5 rows) — all 5 equal: train 350"
    )
    # a table no rule knows folds under its caption's first sentence, without a worst row
    other = {"columns": ["a"], "rows": [[1]] * 5, "caption": "Some numbers. More words."}
    assert fold("mine", "stuff", other, REF) == "Some numbers (5 rows)"


def test_a_ledger_folds_naming_its_largest_change_for_the_worse():
    rows = [
        {"label": f"class {c}", "delta": -0.01 * c, "better": False if c else None, "points": True}
        for c in range(FOLD_ROWS + 2)
    ]
    assert fold_ledger(rows, "Recall per class") == (
        f"Recall per class ({FOLD_ROWS + 2} rows) — worst change: class {FOLD_ROWS + 1}, "
        f"-{FOLD_ROWS + 1}.0 points"
    )
    assert fold_ledger(rows[:FOLD_ROWS], "Recall per class") is None


def test_a_sections_headline_table_stays_open_however_long():
    overall = {"columns": ["metric", "test split"], "rows": [["accuracy", 0.9]] * 5}
    assert fold("shift", "clean.overall", overall, REF) is None
    assert fold("performance", "overall", overall, REF) is not None  # the tiles hold those
    per_class = {"columns": ["class", "test recall", "shift recall"], "rows": []}
    per_class["rows"] = [[str(c), 0.9, 0.8 - c / 100] for c in range(5)]
    assert fold("shift", "clean.per_class", per_class, REF).endswith(
        "worst: class 4, shift recall 0.760"
    )
