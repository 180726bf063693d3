"""model_card.md and the report's "Model card" section: a model card in the sections of
Mitchell et al. (model details, intended use, factors, metrics, evaluation data, training
data, quantitative analyses, ethical considerations, caveats and recommendations), filled
from the audit.

The card is built from the result alone, that is report.json's content, never from the
model or the data, so ``auditclf report DIR`` and ``auditclf gate --out`` write the same
card from a saved report. Every number it shows is a value of report.json printed by
:func:`number` (or a confidence level by :func:`percent`), or a count of its entries. Text
from the config (``card:``), the data (class and group names) or a saved report is escaped
by the renderer that prints it: :func:`render_card_markdown` here, jinja2's autoescape in
report.html. Class and group names are cut for display as everywhere in the report
(``figures.short_label``).

:func:`build_card` gives the card as plain data, read by both renderers: a title, a summary
and sections of blocks: ``{"kind": "text", "text": ...}``, ``{"kind": "list", "entries":
[...]}`` or ``{"kind": "table", "columns": [...], "rows": [[cell, ...], ...]}``, where a
cell is text or ``{"code": text}`` (a key or a hash, shown literally).
"""

from __future__ import annotations

import json
from typing import Any

from auditclf.keys import interval_keys, model_key, parse
from auditclf.keys.families import (
    ACCURACY,
    BALANCED_ACCURACY,
    BRIER,
    CORRUPTION_MCE,
    CORRUPTION_MEAN_ACCURACY,
    CORRUPTION_RELIABLE,
    CORRUPTION_WORST_ACCURACY,
    DEPLOY,
    ECE,
    IMBALANCE_RATIO,
    RELIABLE,
    SHIFT_ACCURACY,
    WORST_ACCURACY,
    WORST_CLASS_RECALL,
    KeyFamily,
)
from auditclf.report.figures import short_label
from auditclf.report.mdtext import code_span, escape
from auditclf.report.view import ReportView, missing, reference_eps, shown_paths
from auditclf.results import AuditResult, ModelResult

CARD_FILE = "model_card.md"
NOT_STATED = "not stated"
SOURCE = (
    "Sections after Mitchell et al., Model Cards for Model Reporting (FAT* 2019). Every "
    "number is a value of report.json, written beside this card."
)
# The headline rows of the quantitative analyses: (label, key) of every model audited.
HEADLINE_ROWS = (
    ("Test accuracy", ACCURACY.key()),
    ("Balanced accuracy", BALANCED_ACCURACY.key()),
    ("Worst-class recall", WORST_CLASS_RECALL.key()),
    ("Macro F1", "performance.f1_macro"),
    ("Calibration error (ECE)", ECE.key()),
    ("Brier score", BRIER.key()),
    ("Mean accuracy under corruptions", CORRUPTION_MEAN_ACCURACY.key()),
    ("Most damaging corruption's accuracy", CORRUPTION_WORST_ACCURACY.key()),
    ("Mean corruption error (vs the baseline)", CORRUPTION_MCE.key()),
    ("Robustness checks all passed (1 = yes)", RELIABLE.key()),
    ("Corruption checks all passed (1 = yes)", CORRUPTION_RELIABLE.key()),
)


def number(value: Any) -> str:
    """A number of report.json as the card prints it: a count whole, any other value to
    four significant digits, a flag as yes/no, a missing one as —."""
    if missing(value):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def percent(value: Any) -> str:
    """A confidence level (0.95) as the card prints it (95%)."""
    return "—" if missing(value) else f"{100 * value:.4g}%"


def estimate(metrics: dict, key: str) -> str:
    """``key``'s value with its interval, "0.8611 [0.8023, 0.9083]", from ``metrics``; the
    value alone without an interval; — when the key is absent."""
    bounds = interval_keys(key) or (f"{key}.ci_low", f"{key}.ci_high")
    low, high = metrics.get(bounds[0]), metrics.get(bounds[1])
    shown = number(metrics.get(key))
    if missing(low) or missing(high):
        return shown
    return f"{shown} [{number(low)}, {number(high)}]"


def code(text: Any) -> dict:
    """A cell shown literally (a metric key, a hash, a config value)."""
    return {"code": str(text)}


def _text(text: str) -> dict:
    return {"kind": "text", "text": text}


def _list(entries: list[str]) -> dict:
    return {"kind": "list", "entries": entries}


def _table(columns: list[str], rows: list[list]) -> dict:
    return {"kind": "table", "columns": columns, "rows": rows}


def _section(result: AuditResult, name: str) -> dict:
    """The baseline's analysis section ``name`` ({} when it did not run)."""
    sections = result.models["baseline"].sections
    return next((s for s in sections if s["name"] == name), {})


def _stated(value: Any) -> str:
    return NOT_STATED if value in (None, "", []) else str(value)


def _statements(result: AuditResult) -> dict:
    """The config's ``card:`` section of the run (empty for a report older than it)."""
    statements = result.run.get("config", {}).get("card")
    return statements if isinstance(statements, dict) else {}


def build_card(view: ReportView) -> dict:
    """The model card of ``view``'s result, as the plain data both renderers read."""
    result = view.result
    baseline = result.models["baseline"]
    title = f"Model card: {baseline.card['architecture']} on {result.data['dataset']}"
    summary = f"Verdict {view.banner.label} (gates under Quantitative analyses). {SOURCE}"
    sections = [
        ("Model details", _model_details(result)),
        ("Intended use", _intended_use(result)),
        ("Factors", _factors(result)),
        ("Metrics", _metrics(result, view)),
        ("Evaluation data", _evaluation_data(result)),
        ("Training data", _training_data(result)),
        ("Quantitative analyses", _quantitative(result, view)),
        ("Ethical considerations", _ethics(result)),
        ("Caveats and recommendations", _caveats(result, view)),
    ]
    return {
        "title": title,
        "summary": summary,
        "sections": [{"title": name, "blocks": blocks} for name, blocks in sections],
    }


def _model_details(result: AuditResult) -> list[dict]:
    card = result.models["baseline"].card
    statements = _statements(result)
    normalisation = card.get("normalization") or {}
    rows = [
        ["architecture", card["architecture"]],
        ["arguments", code(", ".join(f"{k}={v}" for k, v in card.get("arguments", {}).items()))],
        ["parameters", number(card.get("parameters"))],
        ["weights", card.get("source", "")],
        ["weights SHA-256", code(card.get("weights_sha256", ""))],
        [
            "input normalisation",
            f"mean {', '.join(map(number, normalisation.get('mean', [])))}; "
            f"std {', '.join(map(number, normalisation.get('std', [])))}",
        ],
    ]
    if card.get("pretrained"):
        pretrained = card["pretrained"]
        rows.append(["pretrained weights", code(f"{pretrained['file']} {pretrained['sha256']}")])
    rows += [
        ["owners", _stated(", ".join(map(str, statements.get("owners") or [])))],
        ["licence", _stated(statements.get("license"))],
        ["contact", _stated(statements.get("contact"))],
        ["audited", _stated(result.run.get("started_at"))],
        ["seed", number(result.run.get("seed"))],
        ["device", result.run.get("device", {}).get("type", "")],
        [
            "versions",
            code(", ".join(f"{k} {v}" for k, v in result.run.get("versions", {}).items())),
        ],
        ["report schema", number(result.schema_version)],
    ]
    blocks = [_table(["field", "value"], rows), *_training(result)]
    others = [name for name in result.models if name != "baseline"]
    if others:
        blocks += [
            _text("Models retrained by this run, audited the same way:"),
            _table(
                ["model", "weights", "weights SHA-256"],
                [
                    [
                        name,
                        result.models[name].card.get("source", ""),
                        code(result.models[name].card.get("weights_sha256", "")),
                    ]
                    for name in others
                ],
            ),
        ]
    return blocks


def _training(result: AuditResult) -> list[dict]:
    """How the run trained the model (its train config and epochs), or that it did not."""
    training = result.models["baseline"].training
    if not training:
        return [_text("Training: not by this run; the weights were given.")]
    config = result.run.get("config", {}).get("train", {})
    stopped = "stopped early" if training.get("stopped_early") else "no early stop"
    rows = [[code(f"train.{name}"), code(json.dumps(value))] for name, value in config.items()]
    return [
        _text(
            f"Training: {number(len(training.get('epochs', [])))} epoch(s) on "
            f"{training.get('device')}{_processes(training)}, kept epoch "
            f"{number(training.get('best_epoch'))} (lowest validation loss), {stopped}. "
            "Training config:"
        ),
        _table(["setting", "value"], rows),
    ]


def _intended_use(result: AuditResult) -> list[dict]:
    statements = _statements(result)
    classes = ", ".join(map(short_label, result.data.get("classes", [])))
    return [
        _table(
            ["use", "as the model's owners state it"],
            [
                ["primary intended uses", _stated(statements.get("intended_use"))],
                ["out-of-scope uses", _stated(statements.get("out_of_scope"))],
            ],
        ),
        _text(
            f"The audit measured the model on these classes only: {classes}. It says nothing "
            "about images of other classes or from other sources."
        ),
    ]


def _factors(result: AuditResult) -> list[dict]:
    data = result.data
    definitions = data.get("attribute_definitions", {})
    attributes = data.get("attributes") or []
    blocks = []
    if attributes:
        blocks += [
            _text("Groups audited (attributes the data records):"),
            _list(
                [f"{name}: {definitions.get(name, 'no definition given')}" for name in attributes]
            ),
        ]
    else:
        blocks.append(_text("The data records no attribute: no group was audited."))
    corruptions = result.run.get("config", {}).get("corruptions", {})
    if _section(result, "corruption").get("tables"):
        names = ", ".join(map(str, corruptions.get("names", [])))
        blocks.append(_text(f"Image conditions: synthetic corruptions ({names})."))
    if data.get("shift"):
        blocks.append(_text(f"A second test set from another source: {data['shift'].get('name')}."))
    blocks.append(_text("Factors the data does not record are not evaluated."))
    return blocks


def _metrics(result: AuditResult, view: ReportView) -> list[dict]:
    methods = []
    for name in ("performance", "calibration", "robustness", "corruption", "fairness", "shift"):
        section = _section(result, name)
        if section.get("tables") and section.get("method"):
            methods.append(f"{section.get('title', name)}: {section['method']}")
    return [
        _text(f"Intervals are at the {percent(view.level)} level. How each number is measured:"),
        _list(methods),
    ]


def _evaluation_data(result: AuditResult) -> list[dict]:
    data = result.data
    duplicates = data.get("duplicates", {})
    rows = [
        ["dataset", data.get("dataset", "")],
        ["what", data.get("description", "")],
        ["source", code(data.get("source", ""))],
        ["test images", number(data.get("split_counts", {}).get("test"))],
        ["classes", number(len(data.get("classes", [])))],
        ["images audited", data.get("audited", "")],
        ["exact duplicates across splits", number(sum(duplicates.get("across", {}).values()))],
        ["data SHA-256", code(data.get("hash", ""))],
    ]
    shift = data.get("shift")
    if shift:
        rows.append(["shift set", f"{shift.get('name')}: {number(shift.get('num_images'))} images"])
    return [_table(["field", "value"], rows)]


def _training_data(result: AuditResult) -> list[dict]:
    data = result.data
    counts = data.get("split_counts", {})
    given = "given by the data" if data.get("split_given") else "stratified by class from the seed"
    distribution = data.get("class_distribution", {})
    splits = [split for split in ("train", "val", "test") if split in distribution]
    rows = [
        [short_label(name), *(number(distribution[split].get(name)) for split in splits)]
        for name in data.get("classes", [])
    ]
    ratio = result.models["baseline"].metrics.get(IMBALANCE_RATIO.key())
    return [
        _text(
            f"Splits: train {number(counts.get('train'))}, val {number(counts.get('val'))}, "
            f"test {number(counts.get('test'))} images ({given}); largest / smallest training "
            f"class {number(ratio)}."
        ),
        _table(["class", *splits], rows),
    ]


def _quantitative(result: AuditResult, view: ReportView) -> list[dict]:
    return [
        *_headline(result),
        *_groups(result),
        *_robustness(result),
        *_corruptions(result),
        *_shift(result),
        *_explanations(result),
        *_deployment(result),
        *_gates(view),
    ]


def _headline(result: AuditResult) -> list[dict]:
    """Every model's headline numbers, a note beside a value where report.json has one (the
    corruption that is most damaging, or why a value is missing)."""
    names = list(result.models)
    reference = reference_eps(result.models["baseline"])
    chosen = list(HEADLINE_ROWS)
    if reference is not None:
        robust = (
            f"Worst-case robust accuracy, L∞ eps {reference}",
            WORST_ACCURACY.key(eps=reference),
        )
        chosen.insert(6, robust)
    rows = []
    for label, key in chosen:
        if any(key in model.metrics for model in result.models.values()):
            rows.append([label, code(key), *(_noted(result.models[n], key) for n in names)])
    return [_text("Headline numbers (value [interval]):"), _table(["metric", "key", *names], rows)]


def _noted(model: ModelResult, key: str) -> str:
    note = model.notes.get(key) if key in model.metrics else None
    shown = estimate(model.metrics, key)
    return f"{shown} ({note})" if note else shown


def _groups(result: AuditResult) -> list[dict]:
    metrics = result.models["baseline"].metrics
    rows = []
    for attribute in _section(result, "fairness").get("attributes", []):
        prefix = attribute["prefix"]
        rows.append(
            [
                short_label(attribute["name"]),
                number(metrics.get(f"{prefix}accuracy.min")),
                number(metrics.get(f"{prefix}accuracy.max")),
                estimate(metrics, f"{prefix}accuracy.difference"),
                code(f"{prefix}accuracy.difference"),
            ]
        )
    if not rows:
        return [_text("Per-group results: no attribute was audited.")]
    return [
        _text(f"Per-group results: {_section(result, 'fairness').get('headline', '')}"),
        _table(["attribute", "lowest accuracy", "highest", "gap [interval]", "key"], rows),
    ]


def _robustness(result: AuditResult) -> list[dict]:
    section = _section(result, "robustness")
    if not section.get("tables"):
        return [_text("Robustness to attacks: not measured in this run.")]
    metrics = result.models["baseline"].metrics
    keys = _of_family(metrics, WORST_ACCURACY)
    rows = [[code(key), estimate(metrics, key)] for key in keys]
    reference = reference_eps(result.models["baseline"])
    return [
        _text(
            f"Robustness to attacks (reference L∞ eps {reference}): {section.get('headline', '')}"
        ),
        _table(["worst case over the attacks", "accuracy [interval]"], rows),
    ]


def _of_family(metrics: dict, family: KeyFamily) -> list[str]:
    """The keys of ``metrics`` in ``family``, interval bounds left out."""
    found = []
    for key in metrics:
        parsed = parse(key)
        if parsed is not None and parsed.family is family and parsed.bound is None:
            found.append(key)
    return found


def _corruptions(result: AuditResult) -> list[dict]:
    section = _section(result, "corruption")
    if not section.get("tables"):
        return [_text("Common corruptions: not measured in this run.")]
    return [_text(f"Common corruptions: {section.get('headline', '')}")]


def _shift(result: AuditResult) -> list[dict]:
    metrics = result.models["baseline"].metrics
    keys = _of_family(metrics, SHIFT_ACCURACY)
    if not keys:
        return [_text("Distribution shift: no second test set was audited.")]
    rows = [[code(key), estimate(metrics, key), estimate(metrics, f"{key}.gap")] for key in keys]
    return [
        _text(f"Distribution shift: {_section(result, 'shift').get('headline', '')}"),
        _table(["key", "accuracy [interval]", "gap to the test accuracy"], rows),
    ]


def _explanations(result: AuditResult) -> list[dict]:
    section = _section(result, "explanations")
    if not section.get("tables"):
        return [_text("Explanations and shortcuts: not examined in this run.")]
    metrics = result.models["baseline"].metrics
    flagged = metrics.get("explain.shortcut.flagged_classes")
    findings = [f["message"] for f in section.get("findings", []) if f["severity"] != "info"]
    return [
        _text(
            f"Explanations and shortcuts: {section.get('headline', '')} Classes flagged as "
            f"relying on a shortcut: {number(flagged)}."
        ),
        *([_list(findings)] if findings else []),
    ]


# what a card says of an exported file: parity, cost, and robustness (the per-class and
# per-group numbers, and the other timings, stay in the report)
_DEPLOY_SUMMARY = tuple(
    family
    for family in DEPLOY
    if family.pattern.removeprefix("deploy.<format>.")
    in {
        "agreement",
        "accuracy",
        "accuracy.drop",
        "max_logit_diff",
        "latency_p95_ms",
        "size_mb",
        "transfer@<eps>.accuracy",
        "square@<eps>.accuracy",
        "corruption.accuracy",
    }
)


def _deployment(result: AuditResult) -> list[dict]:
    """The exported files' parity, size, latency and robustness: the summary ``deploy.``
    keys of every model, as found, spelt as gates spell them
    (``hardened.deploy.onnx.agreement``)."""
    rows = [
        [key.split(".")[1], code(model_key(name, key)), estimate(model.metrics, key)]
        for name, model in result.models.items()
        for key in model.metrics
        if any(family.match(key) for family in _DEPLOY_SUMMARY)
    ]
    if not rows:
        return [_text("Exported models: none was exported and audited in this run.")]
    return [
        _text("Exported models, each audited through its own runtime:"),
        _table(["format", "key", "value [interval]"], rows),
    ]


def _gates(view: ReportView) -> list[dict]:
    verdict = f"Verdict: {view.banner.label}. {view.banner.sentence}"
    if not view.gate_rows:
        return [_text(verdict)]
    rows = [
        [
            code(row.gate.expression),
            number(row.gate.value),
            f"[{number(row.gate.ci[0])}, {number(row.gate.ci[1])}]" if row.gate.ci else "",
            row.status if row.status == "pass" else f"{row.status}: {row.reason}",
        ]
        for row in view.gate_rows
    ]
    return [_text(verdict), _table(["gate", "measured", "interval", "result"], rows)]


def _ethics(result: AuditResult) -> list[dict]:
    baseline = result.models["baseline"]
    entries = [
        f["message"]
        for f in baseline.findings
        if f["section"] == "fairness" and f["severity"] != "info"
    ]
    if result.run.get("unsafe_load"):
        entries.append("The checkpoint was unpickled: loading it could have run any code.")
    entries.append(
        "Only the groups the data records were audited; a group it does not record may fare "
        "worse unseen. The owners' statements above are theirs, not the audit's."
    )
    return [_list(entries)]


def _caveats(result: AuditResult, view: ReportView) -> list[dict]:
    blocks = []
    if view.warnings:
        blocks += [
            _text("Findings to read first:"),
            _list([f"{f['severity']}: {f['message']}" for f in view.warnings]),
        ]
    blocks += [
        _text("Limitations of this audit:"),
        _list([f"{item['section']}: {item['reason']}" for item in result.limitations]),
    ]
    return blocks


def render_card_markdown(view: ReportView) -> str:
    """model_card.md: the card as Markdown, every value escaped or a literal code span."""
    card = build_card(view)
    lines = [f"# {escape(card['title'])}", "", escape(card["summary"])]
    for section in card["sections"]:
        lines += ["", f"## {escape(section['title'])}"]
        for block in section["blocks"]:
            lines += ["", *_markdown_block(block)]
    return shown_paths("\n".join(lines) + "\n")


def _markdown_block(block: dict) -> list[str]:
    if block["kind"] == "text":
        return [escape(block["text"])]
    if block["kind"] == "list":
        return [f"- {escape(entry)}" for entry in block["entries"]] or ["- none"]
    header = "| " + " | ".join(escape(c) for c in block["columns"]) + " |"
    rule = "|" + "---|" * len(block["columns"])
    rows = ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block["rows"]]
    return [header, rule, *rows]


def _markdown_cell(cell: Any) -> str:
    if isinstance(cell, dict):
        return code_span(cell["code"]) if cell["code"] else ""
    return escape(cell)


def _processes(training: dict) -> str:
    """The words " in N data-parallel processes" for a DDP training (torchrun), else none."""
    world = training.get("world_size") or 1
    return f" in {world} data-parallel processes (torchrun)" if world > 1 else ""

