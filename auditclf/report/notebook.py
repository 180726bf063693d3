"""The compact summary a notebook shows for what ``audit()`` returns (``Audit._repr_html_``).

Verdict, what was audited, the gates and the key numbers: enough to decide
whether to open the full report (``result.save(dir)`` or ``result.to_html()``).
"""

from __future__ import annotations

from auditclf.report.html import environment, key_numbers
from auditclf.report.ledger import ledger
from auditclf.results import AuditResult

TEMPLATE = "notebook.html.j2"


def render_summary_html(result: AuditResult) -> str:
    baseline = result.models["baseline"]
    level = result.run["config"]["analyses"]["confidence_level"]
    reference = baseline.artifacts.get("robustness", {}).get("reference_eps")
    hardened = None
    if "hardened" in result.models:
        hardened = ledger(baseline.metrics, result.models["hardened"].metrics, reference)
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            result=result,
            card=baseline.card,
            tiles=key_numbers(baseline.metrics, level, reference),
            hardened=hardened,
            warnings=sum(f["severity"] != "info" for f in baseline.findings),
        )
    )
