"""Writers: report.html, report.json, artifacts.npz, samples.csv, junit.xml, summary.md (and
weights).

All files are produced in a staging folder and swapped in as one set
(``auditclf.io.StagedOutput``), so a failed or killed run leaves the previous
set or the new one, never a mix of the two.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from auditclf.evidence import save_samples
from auditclf.io import StagedOutput
from auditclf.models import PreparedModel, save_model
from auditclf.report.artifacts import ARTIFACT_FILE, write_artifacts
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
    """Render the reader-facing files (html, md, junit), artifacts.npz (the images and maps
    the html inlines) and report.json (which references artifacts.npz) into ``staged``."""
    write_artifacts(staged.path(ARTIFACT_FILE), result)
    result.run["durations"].pop("report", None)  # a re-render's page shows what the run's did
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
        for path in _audited_checkpoint_inside(result, out_dir):
            staged.carry(path)
        write_reports(staged, result, templates=templates, title=title)
    except BaseException:
        staged.abort()
        raise
    return staged.commit()


def _audited_checkpoint_inside(result: AuditResult, out_dir: Path) -> list[Path]:
    """The checkpoint a run audited (and its sidecar) when it lies in ``out_dir``: the new
    set replaces the folder's whole content, and must not drop the very model it audited
    (``auditclf run --checkpoint audit-report/model.safetensors`` re-audits in place)."""
    checkpoint = result.run.get("config", {}).get("model", {}).get("checkpoint")
    if not checkpoint or Path(checkpoint).resolve().parent != Path(out_dir).resolve():
        return []
    found = [Path(checkpoint), Path(checkpoint).with_suffix(".json")]
    return [path for path in found if path.is_file()]


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
    keep_others: bool = False,
) -> list[Path]:
    """``AuditResult.save``: every output when the run's table and models are attached,
    else the reports alone; templates (see ``run_templates``) and title default to the
    run's config.

    ``keep_others=True`` keeps the files of ``out_dir``'s previous set that are not
    rewritten (its samples.csv and models): for rewriting a report in its own folder.
    """
    templates = templates or run_templates(result)
    title = title or result.run.get("config", {}).get("report", {}).get("title")
    if result._run_outputs is not None:
        samples, models = result._run_outputs
        return write_outputs(result, samples, models, out_dir, templates=templates, title=title)
    staged = StagedOutput(out_dir, keep_others=keep_others)
    try:
        write_reports(staged, result, templates=templates, title=title)
    except BaseException:
        staged.abort()
        raise
    return staged.commit()
