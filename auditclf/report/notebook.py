"""The compact summary a notebook shows for what ``audit()`` returns (``Audit._repr_html_``).

Verdict, what was audited, the gates and the key numbers: enough to decide
whether to open the full report (``result.save(dir)`` or ``result.to_html()``).
"""

from __future__ import annotations

from auditclf.report.html import environment
from auditclf.report.view import ReportView, build_view
from auditclf.results import AuditResult

TEMPLATE = "notebook.html.j2"


def render_summary_html(result: AuditResult, *, view: ReportView | None = None) -> str:
    """The notebook summary of ``result`` (``view``: its view, if built)."""
    view = view or build_view(result)
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            result=result,
            view=view,
            card=result.models["baseline"].card,
            tiles=view.tiles,
            hardened=view.hardened,
            warnings=len(view.warnings),
        )
    )
