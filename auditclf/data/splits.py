"""Stratified train/val/test splits and stratified subsampling, from the run seed."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from auditclf.errors import DataError
from auditclf.seeding import derive_seed

SPLITS = ("train", "val", "test")


def _stratified_take(
    indices: np.ndarray, labels: np.ndarray, size: float | int, seed: int, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(size, float):
        # sklearn takes ceil(share * n); drop float noise first, or 0.2 / 0.9 of 270 images
        # (60.000000000000014) becomes 61.
        size = math.ceil(round(size * len(indices), 9))
    try:
        return train_test_split(indices, test_size=size, stratify=labels, random_state=seed % 2**32)
    except ValueError as exc:
        counts = np.bincount(labels)
        rare = [classes[c] for c in np.flatnonzero((counts > 0) & (counts < 3))]
        if not rare:
            raise DataError(f"cannot split stratified: {exc}") from None
        raise DataError(
            f"cannot split stratified: class(es) {', '.join(rare)} have fewer than 3 "
            "images; add images, or give a split column in a CSV manifest"
        ) from None


def assign_splits(
    labels: np.ndarray, fractions: dict[str, float], *, seed: int, classes: list[str]
) -> np.ndarray:
    """Return an array of "train"/"val"/"test", stratified by class.

    ``fractions`` maps each split to its share; the test share is taken first,
    then val from the rest, each with sklearn's ``train_test_split``.
    """
    labels = np.asarray(labels)
    indices = np.arange(len(labels))
    rest, test = _stratified_take(
        indices, labels, fractions["test"], derive_seed(seed, "split", "test"), classes
    )
    val_share = fractions["val"] / (fractions["train"] + fractions["val"])
    split = np.empty(len(labels), dtype=object)
    split[rest] = split_train_val(labels[rest], val_share, seed=seed, classes=classes)
    split[test] = "test"
    return split


def split_train_val(
    labels: np.ndarray, val_share: float, *, seed: int, classes: list[str]
) -> np.ndarray:
    """Return "train"/"val" per label, stratified, with ``val_share`` of them in val."""
    indices = np.arange(len(labels))
    train, val = _stratified_take(
        indices, np.asarray(labels), val_share, derive_seed(seed, "split", "val"), classes
    )
    split = np.empty(len(labels), dtype=object)
    split[train], split[val] = "train", "val"
    return split


def stratified_subsample(
    labels: np.ndarray, n: int, *, seed: int, classes: list[str]
) -> np.ndarray:
    """Indices of a class-stratified subsample of size ``n`` (sorted)."""
    if n >= len(labels):
        return np.arange(len(labels))
    indices = np.arange(len(labels))
    _, kept = _stratified_take(indices, labels, n, derive_seed(seed, "subsample"), classes)
    return np.sort(kept)
