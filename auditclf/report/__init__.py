"""Writers: report.html, report.json, samples.csv, junit.xml, summary.md (and weights).

All files are produced in a staging folder and moved into place together, so a
failed or killed run leaves the previous report or none, never half of one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from auditclf.evidence import save_samples
from auditclf.io import StagedOutput
from auditclf.models import PreparedModel, save_model
from auditclf.report.html import render_html
from auditclf.report.junit import render_junit
from auditclf.report.markdown import render_markdown
from auditclf.results import AuditResult

__all__ = [
    "render_html",
    "render_junit",
    "render_markdown",
    "run_templates",
    "save_result",
    "write_outputs",
    "write_reports",
]


def write_reports(
    staged: StagedOutput, result: AuditResult, *, templates: Path | None, title: str | None
) -> None:
    """Render the reader-facing files (html, md, junit) and report.json into ``staged``."""
    started = time.perf_counter()
    staged.write_text("report.html", render_html(result, templates=templates, title=title))
    staged.write_text("summary.md", render_markdown(result))
    staged.write_text("junit.xml", render_junit(result))
    result.run["durations"]["report"] = time.perf_counter() - started
    staged.write_text("report.json", result.to_json())


def write_outputs(
    result: AuditResult,
    samples: pd.DataFrame,
    models: dict[str, PreparedModel],
    out_dir: Path,
    *,
    templates: Path | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write a run's whole output set into ``out_dir``; return the files written."""
    staged = StagedOutput(out_dir)
    try:
        save_samples(samples, staged.path("samples.csv"))
        for name, prepared in models.items():
            if prepared.needs_training:
                stem = "model" if name == "baseline" else name
                save_model(prepared.adapter.net, prepared.spec, staged.path(f"{stem}.safetensors"))
        write_reports(staged, result, templates=templates, title=title)
    except BaseException:
        staged.abort()
        raise
    return staged.commit()


def run_templates(result: AuditResult) -> str | None:
    """The config's ``report.templates`` of a run this process made (the caller's own
    config); None for a result read from a report.json, which never picks templates."""
    if result._run_outputs is None:
        return None
    return result.run.get("config", {}).get("report", {}).get("templates")


def save_result(
    result: AuditResult,
    out_dir: Path,
    *,
    templates: Path | None = None,
    title: str | None = None,
) -> list[Path]:
    """``AuditResult.save``: every output when the run's table and models are attached,
    else the reports alone; templates (see ``run_templates``) and title default to the
    run's config."""
    templates = templates or run_templates(result)
    title = title or result.run.get("config", {}).get("report", {}).get("title")
    if result._run_outputs is not None:
        samples, models = result._run_outputs
        return write_outputs(result, samples, models, out_dir, templates=templates, title=title)
    staged = StagedOutput(out_dir)
    try:
        write_reports(staged, result, templates=templates, title=title)
    except BaseException:
        staged.abort()
        raise
    return staged.commit()
