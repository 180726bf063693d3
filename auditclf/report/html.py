"""The HTML report: one self-contained page rendered by jinja2 with autoescape on.

Templates come from ``--templates DIR`` first (an organisation may override
any template), then from the ones shipped with auditclf: inside the installed
package (``auditclf/templates``, copied from ``reports/templates`` when the
wheel is built), or ``reports/templates`` of a source checkout. A templates
folder comes only from the command line or the user's own config, never from
a saved report; every template renders in jinja2's sandbox, so even a planted
one cannot reach Python internals (``lipsum.__globals__``): it is refused with
a usage error naming the folder and the template.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from auditclf.errors import UsageError
from auditclf.keys import interval_keys
from auditclf.keys.families import (
    ACCURACY,
    BALANCED_ACCURACY,
    ECE,
    IMBALANCE_RATIO,
    RELIABLE,
    WORST_ACCURACY,
    WORST_CLASS_RECALL,
)
from auditclf.report.figures import FIGURE_TITLES, render_figure, training_curves
from auditclf.report.ledger import group_ledger, ledger
from auditclf.results import AuditResult, GateOutcome, ModelResult

TEMPLATE = "report.html.j2"
KEY_NUMBERS = (
    (ACCURACY.key(), "Test accuracy", "pct"),
    (BALANCED_ACCURACY.key(), "Balanced accuracy", "pct"),
    (WORST_CLASS_RECALL.key(), "Worst-class recall", "pct"),
    (ECE.key(), "Calibration error (ECE)", "num"),
    (IMBALANCE_RATIO.key(), "Class imbalance ratio", "ratio"),
)


def default_templates_dir() -> Path:
    """The shipped templates: in the installed package, else in the source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "templates", package.parent / "reports" / "templates"):
        if (candidate / TEMPLATE).is_file():
            return candidate
    raise FileNotFoundError("auditclf's report templates are missing from this installation")


class ReportSandbox(ImmutableSandboxedEnvironment):
    """jinja2's sandbox, immutable (no ``list.append``, no ``dict.update``), and with no
    method of the audit objects reachable (``result.to_json()``, ``gate.to_dict()``): a template
    reads the result, it never acts on it or on anything else."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (AuditResult, ModelResult, GateOutcome)) and callable(value):
            return False
        return super().is_safe_attribute(obj, attr, value)


def environment(templates: Path | None = None) -> Environment:
    loaders = []
    if templates is not None:
        if not Path(templates).is_dir():
            raise UsageError(f"{templates}: no such templates folder (report.templates)")
        loaders.append(FileSystemLoader(str(templates)))
    loaders.append(FileSystemLoader(str(default_templates_dir())))
    env = ReportSandbox(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=fmt_pct, num=fmt_num, cell=fmt_cell, ratio=fmt_ratio, seconds=fmt_seconds
    )
    return env


def render_template(env: Environment, name: str, templates: Path | None, **context: Any) -> str:
    """Render ``name``; with a user's templates folder, whatever rendering raises (a
    syntax error, an undefined name, an access the sandbox refuses) is a usage error
    naming the folder and the template."""
    try:
        return env.get_template(name).render(**context)
    except Exception as exc:
        if templates is None:
            raise
        where = (getattr(exc, "name", None) if isinstance(exc, TemplateError) else None) or name
        line = getattr(exc, "lineno", None)
        at = f"{where} line {line}" if line else where
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise UsageError(f"{templates}: {at}: {message} (report.templates)") from None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_pct(value: Any, digits: int = 1) -> str:
    return "—" if _missing(value) else f"{100 * value:.{digits}f}%"


def fmt_num(value: Any, digits: int = 3) -> str:
    return "—" if _missing(value) else f"{value:.{digits}f}"


def fmt_ratio(value: Any) -> str:
    return "—" if _missing(value) else f"{value:.2f}×"


def fmt_seconds(value: Any) -> str:
    return "—" if _missing(value) else f"{value:.1f} s"


def fmt_cell(value: Any) -> str:
    """One table cell as text: numbers to 3 decimals, intervals as [low, high]."""
    if _missing(value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            return f"[{fmt_num(value[0])}, {fmt_num(value[1])}]"
        return (
            "; ".join(
                " = ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value
            )
            or "—"
        )
    return str(value)


def key_numbers(metrics: dict, level: float, reference_eps: str | None = None) -> list[dict]:
    """The five tiles of the verdict banner: value, interval and key of each headline metric.

    With a robustness evaluation, worst-case robust accuracy replaces the imbalance ratio.
    """
    chosen = list(KEY_NUMBERS)
    robust = WORST_ACCURACY.key(eps=reference_eps)
    if robust in metrics:
        chosen[-1] = (robust, f"Worst-case robust accuracy, L∞ eps {reference_eps}", "pct")
    tiles = []
    for key, label, style in chosen:
        if key in metrics:
            bounds = interval_keys(key)
            low, high = (metrics.get(bounds[0]), metrics.get(bounds[1])) if bounds else (None, None)
            tiles.append(
                {
                    "key": key,
                    "label": label,
                    "value": metrics[key],
                    "style": style,
                    "level": level,
                    "ci": None if _missing(low) or _missing(high) else (low, high),
                }
            )
    return tiles


def _reference_eps(model) -> str | None:
    return model.artifacts.get("robustness", {}).get("reference_eps")


def _with_figures(sections: list[dict]) -> dict[str, dict]:
    drawn = {}
    for section in sections:
        figures = {}
        for name, data in section.get("figures", {}).items():
            drawing = render_figure(data)
            figures[name] = {
                # a PNG data URI, or HTML-ready rows (the attribution galleries)
                "uri" if isinstance(drawing, str) else "gallery": drawing,
                "alt": data.get("title") or FIGURE_TITLES[data["kind"]],
                "flagged": bool(data.get("flagged")),
            }
        drawn[section["name"]] = {**section, "images": figures}
    return drawn


def render_html(
    result: AuditResult, *, templates: Path | None = None, title: str | None = None
) -> str:
    """The report page for ``result`` as one HTML string."""
    level = result.run["config"]["analyses"]["confidence_level"]
    models = {}
    for name, model in result.models.items():
        sections = _with_figures(model.sections)
        curves = training_curves(model.training) if model.training else None
        models[name] = {
            "model": model,
            "sections": sections,
            "training_curves": curves,
            "key_numbers": key_numbers(model.metrics, level, _reference_eps(model)),
        }
    page_title = (
        title
        or f"auditclf report: {result.models['baseline'].card['architecture']} "
        f"on {result.data['dataset']}"
    )
    hardened_ledger = None
    if "hardened" in result.models:
        robustness = result.models["baseline"].artifacts.get("robustness", {})
        hardened_ledger = ledger(
            result.models["baseline"].metrics,
            result.models["hardened"].metrics,
            robustness.get("reference_eps"),
        )
    return render_template(
        environment(templates),
        TEMPLATE,
        templates,
        result=result,
        models=models,
        baseline=models["baseline"],
        title=page_title,
        ledger=hardened_ledger,
        fairness_ledger=fairness_ledger(result),
        reliable_key=RELIABLE.key(),
    )


def fairness_ledger(result: AuditResult) -> dict | None:
    """Baseline vs the group-balanced retrained model, per group of the balanced attribute."""
    attribute = result.run["config"].get("fairness", {}).get("rebalance")
    if "rebalanced" not in result.models or not attribute:
        return None
    section = next(
        (s for s in result.models["baseline"].sections if s["name"] == "fairness"), {}
    )
    block = next((b for b in section.get("attributes", []) if b["name"] == attribute), None)
    if block is None:
        return None
    return group_ledger(
        result.models["baseline"].metrics, result.models["rebalanced"].metrics, block, attribute
    )
