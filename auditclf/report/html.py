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
from markupsafe import Markup

from auditclf.errors import UsageError
from auditclf.keys.families import CORRUPTION_RELIABLE, RELIABLE
from auditclf.report.card import build_card
from auditclf.report.figures import (
    FIGURE_TITLES,
    attack_gallery,
    corruption_gallery,
    render_figure,
    training_curves,
)
from auditclf.report.folds import fold, fold_ledger
from auditclf.report.view import (
    ReportView,
    build_view,
    key_numbers,
    missing,
    reference_eps,
    shown_paths,
)
from auditclf.results import AuditResult, GateOutcome, ModelResult

TEMPLATE = "report.html.j2"


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
        finalize=_shown,
    )
    env.filters.update(
        pct=fmt_pct, num=fmt_num, cell=fmt_cell, ratio=fmt_ratio, seconds=fmt_seconds
    )
    return env


def _shown(value: Any) -> Any:
    """Every printed text with the machine's folders out of its paths (:func:`shown_paths`);
    an inlined image (a data URI) and a macro's output (its own parts already shown) as
    they are."""
    if isinstance(value, str) and not isinstance(value, Markup) and not value.startswith("data:"):
        return shown_paths(value)
    return value


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


def fmt_pct(value: Any, digits: int = 1) -> str:
    return "—" if missing(value) else f"{100 * value:.{digits}f}%"


def fmt_num(value: Any, digits: int = 3) -> str:
    return "—" if missing(value) else f"{value:.{digits}f}"


def fmt_ratio(value: Any) -> str:
    return "—" if missing(value) else f"{value:.2f}×"


def fmt_seconds(value: Any) -> str:
    return "—" if missing(value) else f"{value:.1f} s"


def fmt_cell(value: Any) -> str:
    """One table cell as text: numbers to 3 decimals, intervals as [low, high]."""
    if missing(value):
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


def _with_figures(sections: list[dict], arrays: dict, reference: str | None) -> dict[str, dict]:
    """Each section by name, its figures drawn (``images``) and each table with ``fold``:
    the one line it folds behind, or None when it is shown open (:func:`folds.fold`)."""
    drawn = {}
    for section in sections:
        tables = {
            name: {**table, "fold": fold(section["name"], name, table, reference)}
            for name, table in section.get("tables", {}).items()
        }
        figures = {}
        for name, data in section.get("figures", {}).items():
            drawing = render_figure(data, arrays)
            figures[name] = {
                # a PNG data URI, or HTML-ready rows (the attribution galleries)
                "uri" if isinstance(drawing, str) else "gallery": drawing,
                "alt": data.get("title") or FIGURE_TITLES[data["kind"]],
                "flagged": bool(data.get("flagged")),
            }
        drawn[section["name"]] = {**section, "tables": tables, "images": figures}
    return drawn


def ledger_folds(hardened: dict | None, rebalanced: dict | None) -> dict[str, str | None]:
    """The fold line of each ledger table (None: shown open), by ``hardened.<part>`` and
    ``rebalanced.<part>``; a per-class row counts as its clean and its robust change."""
    folds = {}
    if hardened:
        folds["hardened.gain"] = fold_ledger(hardened["gain"], "Robust accuracy per attack × eps")
        per_class = [
            {**row[side], "label": f"class {row['class']}, {words}"}
            for row in hardened["per_class"]
            for side, words in (("clean", "clean recall"), ("robust", "robust accuracy"))
            if row.get(side)
        ]
        folds["hardened.per_class"] = fold_ledger(
            per_class, "Clean recall and robust accuracy per class", len(hardened["per_class"])
        )
        folds["hardened.per_group"] = fold_ledger(
            hardened["per_group"], "Robust accuracy per group"
        )
        folds["hardened.corruption"] = fold_ledger(
            hardened["corruption"], "Accuracy per corruption"
        )
    if rebalanced:
        folds["rebalanced.per_group"] = fold_ledger(rebalanced["per_group"], "Accuracy per group")
    return folds


def gallery_lines(
    gallery: dict | None, corruption: dict | None, explained: dict[str, dict]
) -> dict[str, str]:
    """The one line each gallery folds behind: what it shows and how many it got wrong
    (``explained``: the explanations section's drawn figures, one gallery per class)."""
    lines = {}
    galleries = [image for image in explained.values() if "gallery" in image]
    if galleries:
        flagged = sum(image["flagged"] for image in galleries)
        lines["explanations"] = (
            f"Attribution maps per class ({len(galleries)} classes, {flagged} with a likely "
            "shortcut)"
        )
    if gallery:
        items = gallery["items"]
        fooled = sum(item["adv_pred"] != item["label"] for item in items)
        lines["attack"] = (
            f"Gallery: {len(items)} images attacked with {gallery['attack']} at eps "
            f"{gallery['eps']}, {fooled} fooled"
        )
    if corruption:
        tiles = [tile for row in corruption["rows"] for tile in row["tiles"]]
        wrong = sum(tile["wrong"] for tile in tiles)
        lines["corruption"] = (
            f"Gallery: one test image under {len(corruption['rows'])} corruptions, "
            f"{wrong} of {len(tiles)} predictions wrong"
        )
    return lines


def render_html(
    result: AuditResult,
    *,
    templates: Path | None = None,
    title: str | None = None,
    view: ReportView | None = None,
) -> str:
    """The report page for ``result`` as one HTML string (``view``: its view, if built)."""
    view = view or build_view(result)
    models = {}
    for name, model in result.models.items():
        sections = _with_figures(model.sections, model.arrays, reference_eps(model))
        curves = training_curves(model.training) if model.training else None
        gallery = attack_gallery(model.artifacts.get("gallery"), model.arrays)
        damaged = corruption_gallery(
            model.artifacts.get("corruption_gallery"), model.arrays, result.data["classes"]
        )
        models[name] = {
            "model": model,
            "sections": sections,
            "gallery": gallery,
            "corruption_gallery": damaged,
            "gallery_lines": gallery_lines(
                gallery, damaged, sections.get("explanations", {}).get("images", {})
            ),
            "training_curves": curves,
            "key_numbers": key_numbers(model.metrics, view.level, reference_eps(model)),
        }
    page_title = (
        title
        or f"auditclf report: {result.models['baseline'].card['architecture']} "
        f"on {result.data['dataset']}"
    )
    return render_template(
        environment(templates),
        TEMPLATE,
        templates,
        result=result,
        view=view,
        models=models,
        baseline=models["baseline"],
        title=page_title,
        ledger=view.hardened,
        ledger_folds=ledger_folds(view.hardened, view.rebalanced),
        fairness_ledger=view.rebalanced,
        reliable_key=RELIABLE.key(),
        corruption_reliable_key=CORRUPTION_RELIABLE.key(),
        model_card=build_card(view),
    )
