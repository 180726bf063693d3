"""model_card.md and the report's Model card section: Mitchell et al.'s sections, filled from
report.json alone (every number in the card is one of its values), with the owners' statements
of the config's ``card:`` shown escaped, or "not stated"."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from markdown_it import MarkdownIt

from auditclf.report.card import SOURCE, number, percent, render_card_markdown
from auditclf.report.mdtext import escape
from auditclf.report.view import build_view
from auditclf.results import AuditResult

from .conftest import cli

MITCHELL_SECTIONS = [
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
]
SCRIPT = "<script>alert(1)</script> *bold*"
CLASS = "<img src=x onerror=alert(1)>|*c*"
# A number as a token of prose (not a part of a word such as SHA-256).
NUMBER = re.compile(r"(?<![\w.\-])-?\d+(?:\.\d+)?(?:e[-+]\d+)?%?")
CODE_SPAN = re.compile(r"`[^`]*`")
PROSE = 12  # a string of report.json this long is prose (a headline, a reason, a date)
MARKDOWN = MarkdownIt("commonmark").enable("table")


def _leaves(value):
    """Every key and scalar of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _counts(value) -> set[int]:
    """The counts the card may print of report.json: lengths of its lists, totals of its
    count tables (duplicates per split)."""
    found = set()
    if isinstance(value, dict):
        if value and all(type(v) is int for v in value.values()):
            found.add(sum(value.values()))
        for item in value.values():
            found |= _counts(item)
    elif isinstance(value, list):
        found.add(len(value))
        for item in value:
            found |= _counts(item)
    return found


def _unexplained(card: str, report: dict) -> list[str]:
    """The numbers of ``card`` that are no value of ``report`` as the card prints values:
    prose of report.json (headlines, reasons, dates) and code spans (keys, hashes, config
    values) are taken out first, then each number left must be a formatted value or a count."""
    leaves = list(_leaves(report))
    texts = sorted(
        {s for s in leaves if isinstance(s, str) and len(s) >= PROSE and re.search(r"\d", s)},
        key=len,
        reverse=True,
    )
    numbers = [v for v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)]
    allowed = {number(v) for v in numbers} | {percent(v) for v in numbers}
    allowed |= {number(count) for count in _counts(report)}
    allowed |= {s for s in leaves if isinstance(s, str) and len(s) < PROSE}
    text = CODE_SPAN.sub(" ", card.replace(escape(SOURCE), " ").replace("SHA-256", " "))
    for prose in texts:
        text = text.replace(escape(prose), " ")
    return [token for token in NUMBER.findall(text) if token not in allowed]


def test_model_card_renders_in_mitchells_sections_with_the_headline_numbers(digits_run):
    card = (digits_run / "model_card.md").read_text()
    report = json.loads((digits_run / "report.json").read_text())
    metrics = report["models"]["baseline"]["metrics"]

    tokens = MARKDOWN.parse(card)
    headings = [
        t.content
        for before, t in zip(tokens, tokens[1:], strict=False)
        if before.type == "heading_open"
    ]
    assert headings[0] == escape(f"Model card: basic-cnn on {report['data']['dataset']}")
    headings = headings[1:]
    assert headings == MITCHELL_SECTIONS
    assert sum(t.type == "table_open" for t in tokens) >= 6
    assert not [t for t in tokens if t.type.startswith("html")]
    eps = report["models"]["baseline"]["artifacts"]["robustness"]["reference_eps"]
    for key in (
        "performance.accuracy",
        "performance.balanced_accuracy",
        "performance.ece",
        "corruption.mean.accuracy",
        f"robustness.worst@{eps}.accuracy",
    ):
        value, low, high = (metrics[k] for k in (key, f"{key}.ci_low", f"{key}.ci_high"))
        assert f"`{key}` | {value:.4g} \\[{low:.4g}, {high:.4g}\\]" in card, key
    note = report["models"]["baseline"]["notes"]["corruption.worst.accuracy"]
    assert f"{metrics['corruption.worst.accuracy']:.4g} \\[" in card and f"({note})" in card
    assert "| metric | key | baseline | hardened |" in card.splitlines()
    assert report["run"]["model_hash"] in card and report["data"]["hash"] in card
    assert "| primary intended uses | not stated |" in card
    assert "| owners | not stated |" in card and "| licence | not stated |" in card
    assert "Exported models: none was exported" in card
    assert 'id="model-card"' in (digits_run / "report.html").read_text()


def test_every_number_in_the_card_is_a_value_of_report_json(digits_run, gated_run):
    for run in (digits_run, gated_run):
        card = (run / "model_card.md").read_text()
        report = json.loads((run / "report.json").read_text())
        assert _unexplained(card, report) == [], run
        assert _unexplained(card + "\n3.14159 and 2.71828%\n", report) == ["3.14159", "2.71828%"]
    assert "| `performance.accuracy >= 0.99` |" in (gated_run / "model_card.md").read_text()


def test_exported_files_and_shift_sets_are_listed_from_their_keys(digits_run):
    result = AuditResult.load(digits_run / "report.json")
    metrics = result.models["baseline"].metrics
    for key, values in {
        "deploy.onnx-int8.agreement": (0.98, 0.95, 0.99),
        "shift.scanner-b.accuracy": (0.7, 0.6, 0.8),
        "shift.scanner-b.accuracy.gap": (0.16, 0.05, 0.27),
    }.items():
        metrics.update(zip((key, f"{key}.ci_low", f"{key}.ci_high"), values, strict=True))
    metrics["deploy.onnx-int8.size_mb"] = 0.0521
    card = render_card_markdown(build_view(result))
    assert "| onnx-int8 | `deploy.onnx-int8.agreement` | 0.98 \\[0.95, 0.99\\] |" in card
    assert "| onnx-int8 | `deploy.onnx-int8.size_mb` | 0.0521 |" in card
    assert "| `shift.scanner-b.accuracy` | 0.7 \\[0.6, 0.8\\] | 0.16 \\[0.05, 0.27\\] |" in card
    assert "ci\\_low" not in card and "none was exported" not in card


def test_card_statements_and_class_names_are_escaped(digits_run, tmp_path: Path):
    folder = shutil.copytree(digits_run, tmp_path / "edited")
    report = json.loads((folder / "report.json").read_text())
    report["run"]["config"]["card"] = {
        "intended_use": SCRIPT,
        "owners": ["[x](https://example.invalid)", "a|b"],
    }
    report["data"]["classes"][0] = CLASS
    (folder / "report.json").write_text(json.dumps(report))

    result = cli("report", folder, "--out", tmp_path / "out")
    assert result.status == 0, result
    card = (tmp_path / "out" / "model_card.md").read_text()
    rendered = MARKDOWN.render(card)
    assert "| primary intended uses | &lt;script&gt;alert(1)&lt;/script&gt; \\*bold\\* |" in card
    assert "| owners | \\[x\\](https://example.invalid), a\\|b |" in card
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\*c\\*" in card
    assert "| out-of-scope uses | not stated |" in card
    for unsafe in ("<script", "<img", "<a ", "<em>", "<strong>"):
        assert unsafe not in card and unsafe not in rendered, unsafe
    page = (tmp_path / "out" / "report.html").read_text()
    section = page[page.index('<section id="model-card">') :]
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt; *bold*</td>" in section
    assert "<script>alert" not in page and "<img src=x" not in page
