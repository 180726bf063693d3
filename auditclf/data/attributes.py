"""Group attributes: where they come from, what they mean, and which ones a run audits.

An attribute is a string per image (``attr.<name>`` in the sample table). It
comes from one of:

- the extra columns of a CSV manifest, or the ``background`` of ``shapes``
  (set by the loaders in :mod:`auditclf.data.datasets`);
- a metadata CSV (``fairness.metadata``, ``--metadata``) joined to the images
  on a ``path`` column (the image's path relative to the dataset folder, as in
  the sample ids) or an ``id`` column (the sample id itself);
- the built-in attributes of the digit sets, derived from the pixels:

  * ``stroke``: ink mass, the sum of the pixel intensities ÷ 255 (in pixels of
    full ink), cut into tertiles whose cut points come from the *training*
    split and are applied unchanged to val and test: ``thin`` below the first
    cut point, ``medium`` up to the second, ``thick`` from the second on;
  * ``slant``: s = −μ11 / μ02 from the image's intensity-weighted central
    moments (x the column, y the row, downwards): the horizontal shift of the
    ink per pixel row, positive when the top leans right — the shear that
    MNIST deskewing removes. ``left`` if s < −0.1, ``upright`` if
    −0.1 ≤ s ≤ 0.1, ``right`` if s > 0.1 (0.1 ≈ 5.7°).

A value that is empty or absent (no metadata row, an empty manifest cell, a
blank image without slant) becomes the group ``(missing)``; it is audited like
any other group.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from auditclf.config import FairnessConfig
from auditclf.data.csvfile import read_csv_rows
from auditclf.errors import DataError

MISSING = "(missing)"
STROKE_GROUPS = ("thin", "medium", "thick")
SLANT_GROUPS = ("left", "upright", "right")
SLANT_THRESHOLD = 0.1  # |horizontal shift per row| above which a digit leans
DIGIT_SETS = ("mnist5k", "digits", "torchvision-mnist")


def ink_mass(images: np.ndarray) -> np.ndarray:
    """(N,) sum of pixel intensities ÷ 255 of (N, C, H, W) uint8 images, channels averaged."""
    per_channel = images.reshape(len(images), images.shape[1], -1).sum(axis=2, dtype=np.int64)
    return per_channel.mean(axis=1) / 255.0


def slant(images: np.ndarray) -> np.ndarray:
    """(N,) s = −μ11 / μ02 of each image's ink (NaN for a blank image or a single ink row)."""
    ink = images.astype(np.float64).mean(axis=1)  # (N, H, W)
    _, height, width = ink.shape
    rows = np.arange(height, dtype=np.float64)[None, :, None]
    cols = np.arange(width, dtype=np.float64)[None, None, :]
    mass = ink.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (ink * rows).sum(axis=(1, 2)) / mass
        cx = (ink * cols).sum(axis=(1, 2)) / mass
        dy = rows - cy[:, None, None]
        dx = cols - cx[:, None, None]
        mu11 = (ink * dx * dy).sum(axis=(1, 2))
        mu02 = (ink * dy * dy).sum(axis=(1, 2))
        value = -mu11 / mu02
    return np.where(np.isfinite(value), value, np.nan)


def stroke_groups(mass: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """thin / medium / thick for ink masses below, between and from the two cut points."""
    return np.asarray(STROKE_GROUPS, dtype=object)[np.searchsorted(cuts, mass, side="right")]


def slant_groups(values: np.ndarray) -> np.ndarray:
    """left / upright / right by the fixed ±0.1 thresholds; NaN → (missing)."""
    left, upright, right = SLANT_GROUPS
    groups = np.full(len(values), upright, dtype=object)
    groups[values < -SLANT_THRESHOLD] = left
    groups[values > SLANT_THRESHOLD] = right
    groups[np.isnan(values)] = MISSING
    return groups


def digit_attributes(images: np.ndarray, split: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """The built-in ``stroke`` and ``slant`` of a digit set, with their definitions.

    The stroke tertiles are cut on the training split only, so the test split
    does not define its own groups.
    """
    mass = ink_mass(images)
    train = split == "train"
    low, high = (float(q) for q in np.quantile(mass[train], [1 / 3, 2 / 3]))
    attributes = pd.DataFrame(
        {"stroke": stroke_groups(mass, (low, high)), "slant": slant_groups(slant(images))}
    )
    definitions = {
        "stroke": (
            "built in, from the pixels: ink mass (the sum of pixel intensities ÷ 255, in "
            "pixels of full ink) cut into tertiles on the training split: thin < "
            f"{low:.1f} ≤ medium < {high:.1f} ≤ thick. Ink mass also depends on the digit (a 1 "
            "has less ink than an 8), so the groups differ in class mix too"
        ),
        "slant": (
            "built in, from the pixels: s = −μ11/μ02 from the image's second-order central "
            "moments, the horizontal shift of the ink per pixel row (positive: the top leans "
            "right): "
            f"left if s < −{SLANT_THRESHOLD:g}, upright if −{SLANT_THRESHOLD:g} ≤ s ≤ "
            f"{SLANT_THRESHOLD:g}, right if s > {SLANT_THRESHOLD:g} "
            f"(±{SLANT_THRESHOLD:g} ≈ ±{math.degrees(math.atan(SLANT_THRESHOLD)):.1f}°)"
        ),
    }
    return attributes, definitions


def _metadata_key(text: str) -> str:
    key = text.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def read_metadata(path: Path, ids: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """Attributes for ``ids`` from a metadata CSV; (one row per id, notes for the report).

    The CSV has a ``path`` column (relative path, as in the sample ids) or an
    ``id`` column, and one column per attribute. An image without a row gets
    ``(missing)``; a key named twice or a CSV that matches no image is a data error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such metadata file (fairness.metadata)")
    columns, records, lines = read_csv_rows(path)
    rows = list(zip(lines, records, strict=True))
    key_column = next((c for c in ("path", "id") if c in columns), None)
    if key_column is None:
        raise DataError(
            f"{path}: no `path` or `id` column to join on; found: {', '.join(columns) or 'none'}"
        )
    attributes = [c for c in columns if c not in ("path", "id")]
    if not attributes:
        raise DataError(f"{path}: no attribute columns besides {key_column!r}")
    by_key: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        key = _metadata_key(row[key_column] or "")
        if key in by_key:
            raise DataError(
                f"{path} line {line}: {key_column} {key!r} also on line {first_line[key]}"
            )
        by_key[key] = row
        first_line[key] = line
    wanted = [_metadata_key(str(i)) for i in ids]
    matched = sum(key in by_key for key in wanted)
    if matched == 0:
        example = ", ".join(repr(i) for i in wanted[:2])
        raise DataError(
            f"{path}: no row's {key_column} matches an image (image ids look like {example})"
        )
    table = pd.DataFrame(
        {c: [(by_key[k].get(c) or "") if k in by_key else "" for k in wanted] for c in attributes}
    )
    notes = [f"attributes {', '.join(attributes)} from {path.name} ({matched} images matched)"]
    unused = len(by_key) - matched
    if unused:
        notes.append(f"{unused} row(s) of {path.name} name no image of the data set")
    if matched < len(wanted):
        notes.append(f"{len(wanted) - matched} image(s) have no row in {path.name}: {MISSING}")
    return table, notes


def clean_values(attributes: pd.DataFrame) -> pd.DataFrame:
    """Every value a stripped string; empty or absent values become ``(missing)``."""
    cleaned = {}
    for column in attributes.columns:
        values = attributes[column].astype(object)
        values = values.where(values.notna(), "").map(lambda v: str(v).strip())
        cleaned[column] = values.where(values != "", MISSING).to_numpy(dtype=object)
    return pd.DataFrame(cleaned, index=attributes.index)


def sorted_values(values) -> list[str]:
    """Distinct group values, sorted (built-in ones in their natural order), ``(missing)`` last."""
    present = {str(v) for v in values}
    distinct = present - {MISSING}
    order = next((o for o in (STROKE_GROUPS, SLANT_GROUPS) if distinct <= set(o)), None)
    ordered = [v for v in order if v in distinct] if order else sorted(distinct)
    return ordered + ([MISSING] if MISSING in present else [])


def value_counts(attributes: pd.DataFrame, rows: np.ndarray) -> dict[str, dict[str, int]]:
    """{attribute: {value: images}} over ``rows`` (a boolean mask), values sorted."""
    counts = {}
    for column in attributes.columns:
        present = attributes.loc[rows, column]
        tally = present.value_counts()
        counts[column] = {v: int(tally[v]) for v in sorted_values(present)}
    return counts


def audited_attributes(cfg: FairnessConfig | dict, available: list[str]) -> list[str]:
    """The attributes a run audits: ``groups`` (plus ``rebalance``), or every one it has."""
    cfg = cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")
    chosen = list(cfg["groups"]) if cfg["groups"] is not None else list(available)
    if cfg.get("rebalance") and cfg["rebalance"] not in chosen:
        chosen.append(cfg["rebalance"])
    return chosen


def check_attributes(cfg: FairnessConfig, summary: dict) -> None:
    """Refuse, before any training, attributes the run needs but the data lacks or leaves empty.

    Raises :class:`DataError` (exit 3) naming the attribute and the ones available.
    """
    available = list(summary.get("attributes", []))
    listed = ", ".join(available) or "none"
    data = summary["source"] if Path(summary["source"]).exists() else summary["dataset"]
    for name in audited_attributes(cfg, available):
        flag = "--rebalance-groups" if name == cfg.rebalance else "--groups"
        if name not in available:
            raise DataError(f"{data}: no attribute column {name!r} ({flag}); available: {listed}")
        if set(summary["attribute_counts"]["test"][name]) <= {MISSING}:
            raise DataError(
                f"{data}: attribute {name!r} is empty or missing on every test "
                "image; nothing to audit"
            )
    if cfg.rebalance and set(summary["attribute_counts"]["train"][cfg.rebalance]) <= {MISSING}:
        raise DataError(
            f"{data}: attribute {cfg.rebalance!r} is missing on every training "
            "image; cannot balance over it (--rebalance-groups)"
        )
