"""Markdown text of untrusted values: escaped prose and literal code spans.

summary.md and model_card.md print names from the data (classes, groups), text from
the config and values from a saved report.json: each goes through :func:`escape` or
:func:`code_span`, so no value can open a link, an image, raw HTML or a new table row.
"""

from __future__ import annotations

import html
import re

# Markdown punctuation that could start a link or image ([ ]), code (`), emphasis, or a table
# cell (|), and the backslash, so that one in the text cannot undo an escape.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_~\[\]|])")


def _one_line(text) -> str:
    return " ".join(str(text).splitlines())


def escape(text) -> str:
    """Text shown as written: on one line, HTML and Markdown punctuation escaped."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(_one_line(text), quote=False))


def code_span(text) -> str:
    """A code span holding ``text`` literally: fenced by more backticks than it contains.

    Inside a code span HTML is inert and backslashes are literal; only ``|``
    needs ``\\|``, which GitHub tables resolve before the span is read.
    """
    text = _one_line(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
