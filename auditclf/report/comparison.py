"""compare.html: two audits side by side (A | B | change), regressions first.

Rendered by the same sandboxed jinja2 environment as the report (autoescape
on, the shipped stylesheet inlined), so the page is self-contained and every
string from either report is escaped.
"""

from __future__ import annotations

from pathlib import Path

from auditclf.keys import model_free
from auditclf.report.html import environment, render_template

TEMPLATE = "compare.html.j2"
SECTION_TITLES = {
    "performance": "Performance and calibration",
    "robustness": "Robustness",
    "fairness": "Fairness",
    "explain": "Explanations",
}


def fmt_signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _by_section(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        section = model_free(row["key"]).partition(".")[0]
        groups.setdefault(section, []).append(row)
    order = list(SECTION_TITLES)
    return [
        (SECTION_TITLES.get(name, name), groups[name])
        for name in sorted(groups, key=lambda n: (order.index(n) if n in order else 99, n))
    ]


def render_comparison(comparison: dict, *, templates: Path | None = None) -> str:
    rows = comparison["rows"]
    headline = [r for r in rows if r["tolerance"] is not None and not r["regression"]]
    others = [r for r in rows if r["tolerance"] is None and r["in_a"] and r["in_b"]]
    env = environment(templates)
    env.filters["signed"] = fmt_signed
    return render_template(
        env,
        TEMPLATE,
        templates,
        c=comparison,
        headline=_by_section(headline),
        others=others,
        only_a=[r["key"] for r in rows if not r["in_b"]],
        only_b=[r["key"] for r in rows if not r["in_a"]],
    )
