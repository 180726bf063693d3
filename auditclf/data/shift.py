"""The shift set: a second test set from another source (``shift.dataset``), audited whole.

It is loaded by the same safe loaders as the audited data (a built-in name, a folder
or a CSV manifest; untrusted like any dataset) and checked before any training: its
class names must be exactly the audited data's (labels are mapped by name, so their
order may differ), and its images are brought to the audited data's size and channels
as the loaders bring a folder's images to one size (resized, RGB ↔ gray); a built-in
set held in memory is not resized, so one of another size is refused. Its attributes
(a manifest's columns, ``shift.metadata``) give the per-group numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from auditclf.config import DataConfig, ShiftConfig
from auditclf.data import SplitView
from auditclf.data.attributes import clean_values, read_metadata, value_counts
from auditclf.data.datasets import ImageSet, load_imageset
from auditclf.data.duplicates import content_hashes
from auditclf.data.lazy import LazyImages
from auditclf.errors import DataError
from auditclf.keys import check_distinct_key_parts, key_part


@dataclass
class ShiftData:
    """A loaded shift set: its name (a key part), every image as one view, and its card
    (``summary``, kept in ``report.json``'s ``data.shift``)."""

    name: str
    view: SplitView
    summary: dict


def shift_name(cfg: ShiftConfig, imageset: ImageSet) -> str:
    """``shift.name``, else the set's own (a folder's name, a manifest's file name without
    ``.csv``, a built-in set's name), as a key part."""
    if cfg.name is not None:
        return key_part(cfg.name)
    return key_part(imageset.name or Path(cfg.dataset).resolve().name)


def prepare_shift(
    cfg: ShiftConfig,
    data_cfg: DataConfig,
    classes: list[str],
    input_shape: tuple[int, ...],
    *,
    seed: int,
) -> ShiftData:
    """Load ``cfg.dataset`` with the audited data's settings (``data_cfg``), its labels mapped
    onto ``classes`` and its images brought to ``input_shape``; DataError (exit 3) naming
    the shift set when its classes differ or its images cannot be brought to that shape."""
    channels, height, width = input_shape
    loading = data_cfg.model_copy(
        update={
            "dataset": cfg.dataset,
            "classes": None,
            "image_size": height if height == width else None,
            "channels": channels,
            "max_samples": None,
        }
    )
    imageset = load_imageset(loading, seed)
    _check_classes(imageset, classes)
    index = {name: i for i, name in enumerate(classes)}
    order = np.array([index[name] for name in imageset.classes], dtype=np.int64)
    labels = order[imageset.labels]
    images = _resized(imageset, input_shape)
    attributes = _attributes(imageset, cfg.metadata)
    digest = hashlib.sha256()
    content_hashes(images, whole=digest)  # decodes every image: a bad file is refused now
    digest.update(labels.astype("<i8").tobytes())
    name = shift_name(cfg, imageset)
    everything = np.ones(len(labels), dtype=bool)
    summary = {
        "name": name,
        "dataset": imageset.name,
        "source": imageset.source,
        "num_images": int(len(labels)),
        "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)},
        "attributes": list(attributes.columns),
        "attribute_counts": value_counts(attributes, everything),
        "hash": digest.hexdigest(),
        "notes": imageset.notes,
    }
    view = SplitView(images, labels, imageset.ids, attributes, None)
    return ShiftData(name, view, summary)


def _check_classes(imageset: ImageSet, classes: list[str]) -> None:
    """Refuse a shift set whose class names are not exactly ``classes`` (any order)."""
    missing = [c for c in classes if c not in imageset.classes]
    extra = [c for c in imageset.classes if c not in classes]
    if missing or extra:
        named = "; ".join(
            f"{what} {', '.join(repr(c) for c in names[:5])}{' …' if len(names) > 5 else ''}"
            for what, names in (("lacks", missing), ("adds", extra))
            if names
        )
        raise DataError(
            f"{imageset.source}: the shift set's classes are not the audited data's: it "
            f"{named} (shift.dataset)"
        )


def _resized(imageset: ImageSet, input_shape: tuple[int, ...]) -> np.ndarray | LazyImages:
    """The images at ``input_shape``: files are decoded to it; an array must have it."""
    images, shape = imageset.images, tuple(int(d) for d in input_shape)
    if tuple(images.shape[1:]) == shape:
        return images
    if isinstance(images, LazyImages):
        imageset.notes.append(f"resized to {shape[1]}×{shape[2]}, the audited data's size")
        return LazyImages(images.paths, shape, images.max_pixels)
    got = "×".join(map(str, images.shape[1:]))
    raise DataError(
        f"{imageset.source}: the shift set's images are {got} (C×H×W), the audited data's "
        f"{'×'.join(map(str, shape))}; a built-in set is not resized (shift.dataset)"
    )


def _attributes(imageset: ImageSet, metadata: Path | None) -> pd.DataFrame:
    """A manifest's attribute columns and those of ``metadata``, values cleaned and checked
    to give distinct key parts."""
    parts = [imageset.attributes.reset_index(drop=True)]
    if metadata is not None:
        joined, notes = read_metadata(metadata, imageset.ids)
        imageset.notes.extend(notes)
        twice = sorted(set(parts[0].columns) & set(joined.columns))
        if twice:
            raise DataError(
                f"{metadata}: attribute(s) {', '.join(twice)} already come from the data"
            )
        parts.append(joined)
    attributes = pd.concat(parts, axis=1)
    if attributes.columns.empty:
        return pd.DataFrame(index=pd.RangeIndex(len(imageset.labels)))
    attributes = clean_values(attributes)
    source = str(metadata or imageset.source)
    check_distinct_key_parts(attributes.columns, "attributes", source)
    for column in attributes.columns:
        values = pd.unique(attributes[column])
        check_distinct_key_parts(values, f"values of attribute {column!r}", source)
    return attributes
