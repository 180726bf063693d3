"""The report files of a result: report.html, report.json, artifacts.npz, junit.xml,
summary.md, model_card.md.

The report package renders and writes report files only; a run's other outputs
(samples.csv, trained weights) are written by :mod:`auditclf.api` beside them.
Files are produced in a staging folder and swapped in as one set
(``auditclf.io.StagedOutput``), so a failed or killed write leaves the previous
set or the new one, never a mix of the two.
"""

from __future__ import annotations

import time
from pathlib import Path

from auditclf.io import StagedOutput
from auditclf.report.artifacts import ARTIFACT_FILE, write_artifacts
from auditclf.report.card import CARD_FILE, render_card_markdown
from auditclf.report.html import render_html
from auditclf.report.junit import render_junit
from auditclf.report.markdown import render_markdown
from auditclf.report.notebook import render_summary_html
from auditclf.report.view import ReportView, build_view
from auditclf.results import AuditResult

__all__ = [
    "ReportView",
    "build_view",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_summary_html",
    "report_title",
    "save_result",
    "write_reports",
]


def report_title(result: AuditResult) -> str | None:
    """The title the run's config gave its report (None: the page's default)."""
    return result.run.get("config", {}).get("report", {}).get("title")


def write_reports(
    staged: StagedOutput, result: AuditResult, *, templates: Path | None, title: str | None
) -> None:
    """Render the reader-facing files (html, summary.md, model_card.md, junit), artifacts.npz
    (the images and maps the html inlines) and report.json (which references artifacts.npz)
    into ``staged``."""
    write_artifacts(staged.path(ARTIFACT_FILE), result)
    result.run["durations"].pop("report", None)  # a re-render's page shows what the run's did
    started = time.perf_counter()
    view = build_view(result)
    page = render_html(result, templates=templates, title=title, view=view)
    staged.write_text("report.html", page)
    staged.write_text("summary.md", render_markdown(result, view=view))
    staged.write_text(CARD_FILE, render_card_markdown(view))
    staged.write_text("junit.xml", render_junit(result, view=view))
    result.run["durations"]["report"] = time.perf_counter() - started
    staged.write_text("report.json", result.to_json())


def save_result(
    result: AuditResult,
    out_dir: Path,
    *,
    templates: Path | None = None,
    title: str | None = None,
    keep_others: bool = False,
) -> list[Path]:
    """Write ``result``'s report files into ``out_dir`` as one set; return the files.

    ``templates`` come from the caller's command line or config, never from the
    result (a saved report is untrusted); ``title`` defaults to the run's config.
    ``keep_others=True`` keeps the files of ``out_dir``'s previous set that are not
    rewritten (its samples.csv and models): for rewriting a report in its own folder.
    """
    staged = StagedOutput(out_dir, keep_others=keep_others)
    try:
        write_reports(staged, result, templates=templates, title=title or report_title(result))
    except BaseException:
        staged.abort()
        raise
    return staged.commit()
