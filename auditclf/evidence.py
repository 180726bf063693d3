"""The sample table: one row per evaluated test sample and model.

Probes add columns (prediction, confidence, per-class probabilities, and later
predictions under attack); analyses read it and never run the model, so
``auditclf report`` can re-run them from ``samples.csv`` alone.

Columns:
  model        which model the row's predictions come from ("baseline", "hardened")
  set          which images: "test" (the test split) or "shift.<name>" (the shift set
               ``name``, audited whole beside it; spelt by :func:`auditclf.keys.shift_set`);
               a table without the column (an older report's) is all test rows. Every
               analysis but the shift analysis reads the test rows only
               (:func:`split_sets`); the shift rows carry the clean probe's columns
               and their own attributes, and are empty in the attack and explanation ones
  sample_id    stable id of the image (relative path or ``set/index``)
  label        true class index; label_name its name
  pred         predicted class index; pred_name its name
  correct      1 if pred == label else 0
  confidence   the top softmax probability, in [0, 1]
  margin       logit of the true class minus the largest other logit
  proba.<k>    softmax probability of class index k
  attr.<name>  group attributes (strings) carried by the data
  explain.*    on the explained images (empty elsewhere): ``explain.rank``, the image's
               row in the artifact file's arrays, its per-image scores
               (``explain.swap_flip_rate``) and each method's (``explain.<method>.
               deletion_auc``); spelt by :func:`auditclf.keys.explain_column`
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from auditclf.errors import DataError
from auditclf.keys import (  # spelt with the other column names
    ATTR_PREFIX,
    PROBA_PREFIX,
    SET_COLUMN,
    TEST_SET,
    shift_name,
)

REQUIRED_COLUMNS = ("model", "sample_id", "label", "pred", "confidence")
TEXT_COLUMNS = ("model", SET_COLUMN, "sample_id", "label_name", "pred_name")
# Filled on every row by the clean probe; other numeric columns may be empty (an image
# the attacks did not cover).
FILLED_COLUMNS = ("label", "pred", "correct", "confidence", "margin")
CLASS_INDEX_COLUMNS = ("label", "pred")


def new_table(
    model: str,
    ids: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    attributes: pd.DataFrame,
    *,
    images: str = TEST_SET,
) -> pd.DataFrame:
    """The table's fixed columns for one model's rows of one set of ``images`` (the ``set``
    column: the test split, or a shift set), before any probe ran."""
    table = pd.DataFrame(
        {
            "model": model,
            SET_COLUMN: images,
            "sample_id": np.asarray(ids, dtype=str),
            "label": np.asarray(labels, dtype=np.int64),
            "label_name": np.asarray(classes, dtype=object)[labels],
        }
    )
    for column in attributes.columns:
        table[ATTR_PREFIX + column] = attributes[column].to_numpy(dtype=object)
    return table


def probabilities(table: pd.DataFrame) -> np.ndarray:
    """(N, K) softmax probabilities from the ``proba.<k>`` columns, in class order."""
    columns = sorted(
        (c for c in table.columns if c.startswith(PROBA_PREFIX)),
        key=lambda c: int(c[len(PROBA_PREFIX) :]),
    )
    return table[columns].to_numpy(dtype=np.float64)


def save_samples(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False)


def load_samples(path: Path) -> pd.DataFrame:
    """Read ``samples.csv``; a missing or malformed file is a data error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (the sample table written by `auditclf run`)")
    try:
        header = pd.read_csv(path, nrows=0).columns
        text = [c for c in header if c in TEXT_COLUMNS or c.startswith(ATTR_PREFIX)]
        # Text columns keep every value as written ("NA" can be a group name); in numeric
        # columns an empty cell is a sample the probe did not cover.
        table = pd.read_csv(
            path,
            dtype=dict.fromkeys(text, str),
            keep_default_na=False,
            na_values={c: [""] for c in header if c not in text},
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in table.columns:
        if column not in text:
            numbers = _numeric_column(path, table, column)
            if numbers.dtype != table[column].dtype:  # labels written as 1.0, say
                table[column] = numbers
    return table


def _numeric_column(path: Path, table: pd.DataFrame, column: str) -> pd.Series:
    """``table[column]`` as numbers (class indices as int64); a cell that is not one is a
    DataError naming its line.

    Every given cell must be a finite number; the clean probe's columns and the
    probabilities must be given on every row; class indices are whole numbers
    from 0; confidences and probabilities lie in [0, 1].
    """
    values = table[column]
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    given = values.notna().to_numpy()
    checks = [(given & ~np.isfinite(numbers.to_numpy()), "is not a finite number")]
    if column in FILLED_COLUMNS or column.startswith(PROBA_PREFIX):
        checks.append((~given, "is empty"))
    finite = numbers.fillna(0.0).to_numpy()
    if column in CLASS_INDEX_COLUMNS:
        checks.append(((finite < 0) | (finite != np.floor(finite)), "is not a class index"))
    if column == "confidence" or column.startswith(PROBA_PREFIX):
        checks.append(((finite < 0) | (finite > 1), "is not a probability in [0, 1]"))
    for bad, reason in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            cell = f" {str(values.iloc[row])[:40]!r}" if given[row] else ""
            raise DataError(
                f"{path} line {_line_of_row(path, row)}: column {column!r}:{cell} {reason}"
            )
    if column in CLASS_INDEX_COLUMNS:
        return numbers.astype(np.int64)
    return values if pd.api.types.is_numeric_dtype(values) else numbers


def _line_of_row(path: Path, row: int) -> int:
    """The file line on which data row ``row`` (0-based, as pandas counts) starts.

    Counted with the csv module, which follows quoted fields across lines, skipping
    blank lines as pandas does; only run to report an error.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # the header
        start = reader.line_num + 1
        seen = -1
        for record in reader:
            if record:
                seen += 1
                if seen == row:
                    return start
            start = reader.line_num + 1
    return start


def split_sets(table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One model's rows → (its test rows, {shift set name: its rows}).

    A table without a ``set`` column is all test rows. Each part keeps only the group
    attributes it has (an attribute of the shift set alone is empty on the test rows:
    NaN in a run, an empty cell in ``samples.csv``), so the analyses of the test rows
    see the columns a run without a shift set gives them. A ``set`` value that is
    neither is a DataError naming ``source``.
    """
    if SET_COLUMN not in table.columns:
        return table, {}
    values = table[SET_COLUMN].astype(str)
    shifts = {}
    for value in pd.unique(values):
        name = shift_name(value)
        if value != TEST_SET and name is None:
            raise DataError(
                f"{source}: column {SET_COLUMN!r}: {value[:40]!r} is neither {TEST_SET!r} nor "
                "shift.<name>"
            )
        if name is not None:
            shifts[name] = _own_attributes(table[values == value])
    test = table[values == TEST_SET]
    if not shifts:
        return test, {}
    return _own_attributes(test), shifts


def _own_attributes(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (re-indexed) without the group attributes empty on every one of them."""
    empty = [
        c for c in rows.columns if c.startswith(ATTR_PREFIX) and rows[c].fillna("").eq("").all()
    ]
    return rows.drop(columns=empty).reset_index(drop=True)


def split_by_model(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{model name: its rows}, in order of first appearance."""
    return {name: rows.reset_index(drop=True) for name, rows in table.groupby("model", sort=False)}
