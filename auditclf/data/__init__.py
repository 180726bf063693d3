"""Data: load an image set, split it, scan it, and describe it for the report."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from auditclf.config import DataConfig
from auditclf.data.attributes import (
    DIGIT_SETS,
    clean_values,
    digit_attributes,
    read_metadata,
    value_counts,
)
from auditclf.data.datasets import DATASETS, ImageSet, load_imageset
from auditclf.data.duplicates import content_hashes, scan_duplicates
from auditclf.data.lazy import LazyImages
from auditclf.data.splits import SPLITS, assign_splits, split_train_val, stratified_subsample
from auditclf.errors import DataError
from auditclf.keys import check_distinct_key_parts

if TYPE_CHECKING:
    from auditclf.data.shift import ShiftData

__all__ = ["DATASETS", "ImageSet", "LazyImages", "PreparedData", "SplitView", "prepare_data"]


@dataclass
class SplitView:
    """One split's arrays: images (n, C, H, W) uint8 (in memory or lazy), labels (n,),
    ids (n,), attributes."""

    images: np.ndarray | LazyImages
    labels: np.ndarray
    ids: np.ndarray
    attributes: pd.DataFrame
    masks: np.ndarray | None


@dataclass
class PreparedData:
    """The audited data: the image set, each image's split and the data card (``summary``);
    ``shift``: the shift set audited beside the test split (``shift.dataset``), if any."""

    imageset: ImageSet
    split: np.ndarray
    summary: dict
    shift: ShiftData | None = None

    @property
    def classes(self) -> list[str]:
        return self.imageset.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.imageset.images.shape[1:])

    def view(self, name: str) -> SplitView:
        keep = self.split == name
        s = self.imageset
        return SplitView(
            s.images[keep],
            s.labels[keep],
            s.ids[keep],
            s.attributes[keep].reset_index(drop=True),
            None if s.masks is None else s.masks[keep],
        )


def data_hash(pixels: hashlib._Hash, imageset: ImageSet, split: np.ndarray) -> str:
    """SHA-256 over pixels, labels, class names and the split: what the model saw.

    ``pixels`` is a SHA-256 already fed every image's bytes in order (by
    :func:`content_hashes`, in the pass that scans for duplicates).
    """
    digest = pixels.copy()
    digest.update(imageset.labels.astype("<i8").tobytes())
    digest.update("\x1f".join(imageset.classes).encode())
    digest.update("\x1f".join(map(str, split)).encode())
    return digest.hexdigest()


def _subsample(imageset: ImageSet, n: int, seed: int) -> ImageSet:
    keep = stratified_subsample(imageset.labels, n, seed=seed, classes=imageset.classes)
    imageset.images, imageset.labels, imageset.ids = (
        imageset.images[keep],
        imageset.labels[keep],
        imageset.ids[keep],
    )
    imageset.attributes = imageset.attributes.iloc[keep].reset_index(drop=True)
    if imageset.split is not None:
        imageset.split = imageset.split[keep]
    if imageset.masks is not None:
        imageset.masks = imageset.masks[keep]
    imageset.notes.append(f"stratified subsample of {len(keep)} images (data.max_samples)")
    return imageset


def _resolve_split(
    imageset: ImageSet, cfg: DataConfig, seed: int, trains: bool
) -> tuple[np.ndarray, str]:
    """The split of every image, and a sentence saying which images are audited and why.

    A run that trains nothing (a checkpoint audited without hardening or
    rebalancing) audits every image of a folder or manifest that carries no
    split; a built-in set keeps its seeded split, on which its checkpoints are
    trained.
    """
    given = imageset.split
    if given is None:
        if not trains and cfg.dataset not in DATASETS:
            scope = (
                f"all {len(imageset.labels)} images are test images: this run trains nothing "
                "(a checkpoint audited without hardening or rebalancing) and the data gives "
                "no split"
            )
            return np.full(len(imageset.labels), "test", dtype=object), scope
        split = assign_splits(
            imageset.labels, cfg.split.model_dump(), seed=seed, classes=imageset.classes
        )
        why = (
            "this run trains a model, or retrains one (hardening, rebalancing)"
            if trains
            else "a built-in set: its checkpoints are trained on that split"
        )
        scope = (
            f"the test split ({int((split == 'test').sum())} of {len(split)} images) is "
            f"audited: the data gives no split, so it is split at random by class ({why})"
        )
        return split, scope
    split = _given_split(imageset, cfg, seed, trains)
    scope = (
        f"the test split given by the data ({int((split == 'test').sum())} of {len(split)} "
        "images) is audited"
    )
    return split, scope


def _given_split(imageset: ImageSet, cfg: DataConfig, seed: int, trains: bool) -> np.ndarray:
    """The data's own split, val carved out of an undecided train part.

    The carving does not depend on ``trains``, so a checkpoint trained here and
    audited later sees the same split (and data hash) it was trained with.
    """
    split = imageset.split.copy()
    undecided = split == "train?"  # torchvision sets and split folders without val
    if undecided.any():
        fractions = cfg.split.model_dump()
        idx = np.flatnonzero(undecided)
        val_share = fractions["val"] / (fractions["train"] + fractions["val"])
        split[idx] = split_train_val(
            imageset.labels[idx], val_share, seed=seed, classes=imageset.classes
        )
    if not (split == "test").any():
        raise DataError(f"{imageset.source}: the given split has no 'test' images")
    if trains and not (split == "train").any():
        raise DataError(
            f"{imageset.source}: the given split has no 'train' images, and this run trains "
            "(a model, or hardening/rebalancing); audit a checkpoint with harden.method none"
        )
    return split


def class_distribution(labels: np.ndarray, split: np.ndarray, classes: list[str]) -> dict:
    """{split: {class: count}} for every split and class (zeros included)."""
    return {
        name: {c: int(((split == name) & (labels == i)).sum()) for i, c in enumerate(classes)}
        for name in SPLITS
    }


def attach_attributes(
    imageset: ImageSet, split: np.ndarray, metadata: Path | None
) -> dict[str, str]:
    """Add the built-in and metadata attributes to ``imageset``; {attribute: definition}."""
    definitions = {c: "a column of the CSV manifest" for c in imageset.attributes.columns}
    if imageset.name == "shapes":
        definitions["background"] = "the generated image's background colour"
    parts = [imageset.attributes]
    digits = imageset.name in DIGIT_SETS and imageset.images.shape[1] == 1
    if digits and (split == "train").any():  # stroke tertiles are cut on the train split
        derived, derived_definitions = digit_attributes(imageset.images, split)
        parts.append(derived)
        definitions.update(derived_definitions)
    if metadata is not None:
        joined, notes = read_metadata(metadata, imageset.ids)
        parts.append(joined)
        definitions.update(dict.fromkeys(joined.columns, f"from the metadata file {metadata}"))
        imageset.notes.extend(notes)
    names = [c for part in parts for c in part.columns]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise DataError(f"{metadata}: attribute(s) {', '.join(twice)} already come from the data")
    imageset.attributes = clean_values(pd.concat(parts, axis=1))
    _check_attribute_keys(imageset, metadata, set(parts[-1].columns) if metadata else set())
    return definitions


def _check_attribute_keys(imageset: ImageSet, metadata: Path | None, from_metadata: set) -> None:
    """Refuse attribute names, or values of one attribute, that would share a metric key."""
    attributes = imageset.attributes
    sources = {c: str(metadata) if c in from_metadata else imageset.source for c in attributes}
    check_distinct_key_parts(attributes.columns, "attributes", str(metadata or imageset.source))
    for column in attributes.columns:
        values = pd.unique(attributes[column])
        check_distinct_key_parts(values, f"values of attribute {column!r}", sources[column])


def check_classes(imageset: ImageSet) -> None:
    """Refuse, before any training, class lists an audit cannot use (exit 3).

    Two classes at least must have images, and no two class names may share a
    metric key.
    """
    check_distinct_key_parts(imageset.classes, "classes", imageset.source)
    present = np.unique(imageset.labels)
    if len(present) < 2:
        only = ", ".join(repr(imageset.classes[c]) for c in present)
        raise DataError(
            f"{imageset.source}: the data holds images of one class only ({only}); "
            "a classifier audit needs two classes at least"
        )


def prepare_data(
    cfg: DataConfig, *, seed: int, metadata: Path | None = None, trains: bool = True
) -> PreparedData:
    """Load the set named in ``cfg``, subsample, split, add attributes, scan, summarise.

    ``metadata`` is a CSV of per-image group attributes (see
    :mod:`auditclf.data.attributes`). ``trains`` is false for a run that trains
    nothing (a checkpoint audited, nothing retrained): then a folder or manifest
    without a split is all test images, and a given split needs no train part.
    """
    imageset = load_imageset(cfg, seed)
    if len(imageset.labels) == 0:
        raise DataError(f"{imageset.source}: no images")
    if imageset.attributes.empty:
        imageset.attributes = pd.DataFrame(index=pd.RangeIndex(len(imageset.labels)))
    check_classes(imageset)
    if cfg.max_samples is not None and cfg.max_samples < len(imageset.labels):
        imageset = _subsample(imageset, cfg.max_samples, seed)
    split, scope = _resolve_split(imageset, cfg, seed, trains)
    definitions = attach_attributes(imageset, split, metadata)
    pixels = hashlib.sha256()
    hashes = content_hashes(imageset.images, whole=pixels)  # the one pass over every pixel
    duplicates = scan_duplicates(hashes, imageset.labels, split, imageset.ids)
    summary = {
        "dataset": imageset.name,
        "description": imageset.description,
        "source": imageset.source,
        "classes": imageset.classes,
        "input_shape": list(imageset.images.shape[1:]),
        "num_images": int(len(imageset.labels)),
        "split_given": imageset.split is not None,
        "audited": scope,
        "split_counts": {name: int((split == name).sum()) for name in SPLITS},
        "class_distribution": class_distribution(imageset.labels, split, imageset.classes),
        "attributes": list(imageset.attributes.columns),
        "attribute_definitions": definitions,
        "attribute_counts": {
            name: value_counts(imageset.attributes, split == name) for name in SPLITS
        },
        "has_masks": imageset.masks is not None,
        "duplicates": duplicates,
        "hash": data_hash(pixels, imageset, split),
        "notes": imageset.notes,
    }
    return PreparedData(imageset, split, summary)
