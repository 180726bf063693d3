"""Which report tables fold behind ``<details>``, and the one line that stands for each.

A long table (more than :data:`FOLD_ROWS` rows) is folded, so a reviewer scrolls past
headlines and figures, not past every class × eps; its ``<summary>`` says in one line what
it holds and its worst row, picked by the table's metric column (:data:`TABLES`): e.g.
"Robust accuracy per class × eps (10 rows) — worst: class 8, pgd_linf @ 0.1 0.410". The
tables that carry a section's headline numbers (:data:`OPEN_TABLES`) never fold; the
sanity checks always do (the reliability banner above them says whether they passed).
Everything here is plain text: the template escapes it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

FOLD_ROWS = 3  # a table with more rows than this is folded
# the tables that hold a section's headline numbers: (section, table), "*" for any section
OPEN_TABLES = frozenset(
    {
        ("*", "summary"),
        ("*", "worst"),
        ("shift", "overall"),
        ("deploy", "ledger"),
        ("deploy", "stress"),
    }
)
ALWAYS_FOLDED = frozenset({"checks"})  # sanity checks: the reliability banner above says it
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")  # "{class}" in a row label
LABEL_CHARS = 40  # a class or group name is cut there, as the tables show it (figures.py)


@dataclass(frozen=True)
class Worst:
    """How to find a table's worst row.

    ``column``: the metric column's title, ``"{ref}"`` standing for the reference eps, a
    leading ``*`` matching the title's end and a trailing one its beginning; ``"*"`` alone:
    every numeric column but ``images`` (a class × corruption grid: the worst cell).
    ``worst``: ``low``, ``high``, ``far`` (largest absolute value) or ``failed`` (the rows
    whose value is not ``pass``).
    ``label``: how a row is named, ``{column}`` standing for the row's cell in that column
    (``"class {class}"``). ``at``: (column, title pattern) keeping only the rows at the
    reference eps.
    """

    column: str
    worst: str
    label: str
    at: tuple[str, str] | None = None


# (section, table) → (title, how to find its worst row); a fairness table is named by what
# follows its attribute ("stroke.robust" → "robust").
TABLES: dict[tuple[str, str], tuple[str, Worst | None]] = {
    ("performance", "overall"): ("Overall metrics with their intervals and keys", None),
    ("performance", "per_class"): (
        "Precision, recall and F1 per class",
        Worst("recall", "low", "class {class}"),
    ),
    ("imbalance", "distribution"): (
        "Images per class and split",
        Worst("train", "low", "class {class}"),
    ),
    ("imbalance", "duplicates"): ("Duplicate checks", Worst("count", "high", "{check}")),
    ("calibration", "bins"): (
        "Accuracy and confidence per confidence bin",
        Worst("gap", "far", "confidence bin {confidence bin}"),
    ),
    ("explanations", "shortcuts"): (
        "Shortcut test per class",
        Worst("predictions changed by swapping the region", "high", "class {class}"),
    ),
    ("robustness", "attacks"): (
        "Robust accuracy per attack × eps",
        Worst("robust accuracy", "low", "{attack} ({norm}) at eps {eps}", at=("eps", "{ref}")),
    ),
    ("robustness", "per_class"): (
        "Robust accuracy per class × eps",
        Worst("* @ {ref}", "low", "class {class}"),
    ),
    ("robustness", "per_group"): (
        "Robust accuracy per group × eps",
        Worst(
            "robust accuracy",
            "low",
            "{attribute} = {group} at eps {pgd_linf eps}",
            at=("pgd_linf eps", "{ref}"),
        ),  # fmt: skip
    ),
    ("robustness", "min_eps"): (
        "Median minimal flipping eps per class",
        Worst("median minimal L∞ eps", "low", "class {class}"),
    ),
    ("robustness", "checks"): (
        "Sanity checks of the attacks",
        Worst("result", "failed", "{check}"),
    ),
    ("corruption", "accuracy"): (
        "Accuracy per corruption × severity",
        Worst("mean", "low", "{corruption}"),
    ),
    ("corruption", "calibration"): (
        "Confidence, calibration and flip rate per corruption",
        Worst("ECE", "high", "{corruption}"),
    ),
    ("corruption", "per_class"): (
        "Accuracy per class × corruption",
        Worst("*", "low", "class {class}"),
    ),
    ("corruption", "per_group"): (
        "Accuracy per group under the most damaging corruption",
        Worst("accuracy under*", "low", "{attribute} = {group}"),
    ),
    ("corruption", "checks"): (
        "Sanity checks of the corruption path",
        Worst("outcome", "failed", "{check}"),
    ),
    ("shift", "per_class"): (
        "Recall per class, test split beside the shift set",
        Worst("shift recall", "low", "class {class}"),
    ),
    ("shift", "per_group"): (
        "Accuracy per group of the shift set",
        Worst("shift accuracy", "low", "{attribute} = {group}"),
    ),
    ("fairness", "groups"): ("Metrics per group", Worst("accuracy", "low", "group {group}")),
    ("fairness", "gaps"): ("Gaps between groups per metric", None),
    ("fairness", "classes"): (
        "Differences between groups per class",
        Worst("TPR difference", "high", "class {class}"),
    ),
    ("fairness", "robust"): (
        "Robust accuracy per group × attack and eps",
        Worst("difference", "high", "{attack @ eps}", at=("attack @ eps", "* @ {ref}")),
    ),
}


def fold(section: str, name: str, table: dict, reference_eps: str | None) -> str | None:
    """The one-line summary of ``section``'s table ``name`` when it folds, else None."""
    rows = table.get("rows") or []
    part = name.rsplit(".", 1)[-1]  # "stroke.robust" → "robust", "clean.overall" → "overall"
    if {("*", part), (section, part)} & OPEN_TABLES:
        return None
    if len(rows) <= FOLD_ROWS and part not in ALWAYS_FOLDED:
        return None
    title, worst = TABLES.get((section, part), (None, None))
    title = title or _caption_title(table.get("caption") or "", name)
    line = f"{title} ({len(rows)} rows)"
    found = worst and worst_row(table, worst, reference_eps)
    return f"{line} — {found}" if found else line


def worst_row(table: dict, rule: Worst, reference_eps: str | None) -> str | None:
    """The worst row of ``table`` by ``rule`` in words ("worst: class 8, recall 0.410"),
    or None when the table lacks the rule's columns or every value is missing."""
    columns = [str(c) for c in table["columns"]]
    rows = [r for r in table["rows"] if len(r) == len(columns)]
    worst = "worst"
    if reference_eps is not None and (
        (rule.at and rule.at[0] in columns) or "{ref}" in rule.column
    ):  # judged at the headline eps: a larger eps has lower numbers, and is not "worse"
        worst = f"worst at eps {reference_eps}"
    if rule.at and reference_eps is not None and rule.at[0] in columns:
        where, pattern = columns.index(rule.at[0]), rule.at[1].format(ref=reference_eps)
        rows = [r for r in rows if _matches(pattern, str(r[where]))] or rows
    if rule.worst == "failed":
        return _failed(columns, rows, rule)
    cells = [
        (value, row, index)
        for index in _metric_columns(columns, rows, rule.column.format(ref=reference_eps))
        for row in rows
        if _number(value := row[index])
    ]
    if not cells:
        return None
    size = abs if rule.worst == "far" else float
    choose = min if rule.worst == "low" else max
    value, row, index = choose(cells, key=lambda cell: size(cell[0]))
    column = columns[index]
    what = f"{column}{':' if ' @ ' in column else ''} {_value(value)}"  # "pgd_linf @ 0.1: 0.4"
    tied = sum(size(cell[0]) == size(value) for cell in cells) - 1
    if tied == len(cells) - 1 and tied:
        return f"all {len(cells)} equal: {what}"  # no row is the worst
    also = f" and {tied} more tied" if tied else ""
    return f"{worst}: {_label(columns, row, rule)}{also}, {what}"


def _metric_columns(columns: list[str], rows: list[list], pattern: str) -> list[int]:
    if pattern != "*":
        return [i for i, c in enumerate(columns) if _matches(pattern, c)][:1]
    return [
        i
        for i, c in enumerate(columns)
        if c != "images" and any(_number(r[i]) for r in rows) and i > 0
    ]


def _failed(columns: list[str], rows: list[list], rule: Worst) -> str | None:
    if rule.column not in columns:
        return None
    index = columns.index(rule.column)
    failed = [
        f"{_label(columns, r, rule)} ({_cut(r[index])})"
        for r in rows
        if str(r[index]).lower() != "pass"
    ]
    if not failed:
        return "all pass"
    return f"{len(failed)} not passed: {', '.join(failed)}"


def _label(columns: list[str], row: list, rule: Worst) -> str:
    """A row's name by ``rule.label`` ("class 8", "stroke = thin"); its first cell when the
    table lacks a column the label names."""
    cells = dict(zip(columns, row, strict=True))
    wanted = PLACEHOLDER.findall(rule.label)
    if not all(name in cells for name in wanted):
        return _cut(row[0])
    return PLACEHOLDER.sub(lambda match: _cut(cells[match.group(1)]), rule.label)


def _matches(pattern: str, title: str) -> bool:
    """``title`` is ``pattern``, or ends with what follows its leading ``*``, or begins with
    what precedes its trailing ``*``."""
    if pattern.startswith("*"):
        return title.endswith(pattern[1:])
    if pattern.endswith("*"):
        return title.startswith(pattern[:-1])
    return title == pattern


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cut(value: Any) -> str:
    text = str(value)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS] + "…"


def _caption_title(caption: str, name: str) -> str:
    """A table this module does not know is titled by its caption's first sentence."""
    first = caption.split(". ")[0].split("; ")[0].rstrip(".")
    return _cut(first) if first else name


def fold_ledger(rows: list[dict], title: str, count: int | None = None) -> str | None:
    """The one-line summary of a ledger table (baseline beside a retrained model) when it
    has more than :data:`FOLD_ROWS` rows (``count``, when a table row holds several of
    ``rows``): the change for the worse that is largest."""
    count = len(rows) if count is None else count
    if count <= FOLD_ROWS:
        return None
    worse = [r for r in rows if r.get("better") is False and _number(r.get("delta"))]
    line = f"{title} ({count} rows)"
    if not worse:
        return f"{line} — no change for the worse"
    row = max(worse, key=lambda r: abs(r["delta"]))
    change = f"{100 * row['delta']:+.1f} points" if row.get("points") else f"{row['delta']:+.3f}"
    return f"{line} — worst change: {_cut(row['label'])}, {change}"


def _value(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"
