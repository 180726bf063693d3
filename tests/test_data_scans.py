"""Tests of the duplicate scan and the stratified splits (auditclf.data.duplicates, .splits)."""

from __future__ import annotations

import numpy as np
import pytest

from auditclf.data.duplicates import content_hashes, scan_duplicates
from auditclf.data.splits import SPLITS, assign_splits, split_train_val, stratified_subsample
from auditclf.errors import DataError

FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}


def _images(pixels: list[int]) -> list[str]:
    """Content hashes of (N, 1, 2, 2) uint8 images; the same pixel value, the same image."""
    return content_hashes(np.repeat(np.asarray(pixels, dtype=np.uint8), 4).reshape(-1, 1, 2, 2))


def test_scan_counts_planted_duplicates() -> None:
    # (pixel value, label, split): 1 is copied within train, 2 leaks from train into test,
    # 3 occurs twice in val with different labels, 4 and 5 are unique.
    planted = [
        (1, 0, "train"),
        (1, 0, "train"),
        (2, 1, "train"),
        (2, 1, "test"),
        (3, 0, "val"),
        (3, 1, "val"),
        (4, 2, "test"),
        (5, 2, "train"),
    ]
    pixels, labels, split = zip(*planted, strict=True)
    ids = np.array([f"img{i}" for i in range(len(planted))])
    result = scan_duplicates(_images(pixels), np.array(labels), np.array(split, dtype=object), ids)
    assert result["within"] == {"train": 2 - 1, "val": 2 - 1, "test": 0}
    assert result["across"] == {"train-val": 0, "train-test": 1, "val-test": 0}
    assert result["label_conflicts"] == 1
    assert result["examples"] == {
        "train": [["img0", "img1"]],
        "train-test": [["img2", "img3"]],
        "val": [["img4", "img5"]],
        "label_conflicts": [["img4", "img5"]],
    }


def test_scan_counts_every_leaked_copy_and_every_extra_copy() -> None:
    # One image: 3 times in train, twice in test, once in val.
    split = np.array(["train", "train", "train", "test", "test", "val"], dtype=object)
    ids = np.array([f"img{i}" for i in range(6)])
    result = scan_duplicates(_images([9] * 6), np.zeros(6, dtype=np.int64), split, ids)
    assert result["within"] == {"train": 3 - 1, "val": 1 - 1, "test": 2 - 1}
    # Leakage counts the images of the later split that also occur in the earlier one.
    assert result["across"] == {"train-val": 1, "train-test": 2, "val-test": 2}
    assert result["label_conflicts"] == 0


def test_scan_of_distinct_images_is_clean() -> None:
    split = np.array(["train", "val", "test"], dtype=object)
    result = scan_duplicates(_images([1, 2, 3]), np.array([0, 0, 0]), split, np.array(list("abc")))
    assert result == {
        "within": dict.fromkeys(SPLITS, 0),
        "across": {"train-val": 0, "train-test": 0, "val-test": 0},
        "label_conflicts": 0,
        "examples": {},
    }


def _per_class(split: np.ndarray, labels: np.ndarray) -> list[list[int]]:
    return [
        [int(((split == name) & (labels == c)).sum()) for name in SPLITS] for c in np.unique(labels)
    ]


def test_assign_splits_is_stratified_exactly() -> None:
    labels = np.repeat(np.arange(3), 100)
    split = assign_splits(labels, FRACTIONS, seed=0, classes=["a", "b", "c"])
    # Test: 0.1 * 300 = 30, 10 a class; val: 0.2 / 0.9 of the other 270 = 60, 20 a class.
    assert _per_class(split, labels) == [[100 - 20 - 10, 20, 10]] * 3


def test_assign_splits_depends_on_the_seed_only() -> None:
    labels = np.repeat(np.arange(3), 100)
    first = assign_splits(labels, FRACTIONS, seed=0, classes=["a", "b", "c"])
    again = assign_splits(labels, FRACTIONS, seed=0, classes=["a", "b", "c"])
    other = assign_splits(labels, FRACTIONS, seed=1, classes=["a", "b", "c"])
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()
    assert _per_class(other, labels) == _per_class(first, labels)


def test_split_train_val_takes_the_val_share() -> None:
    labels = np.repeat(np.arange(2), 45)
    # The share as assign_splits computes it, val / (train + val); times 90 images that is
    # 20.000000000000004 in floating point, and must still give 20 images, not 21.
    split = split_train_val(labels, 0.2 / (0.7 + 0.2), seed=0, classes=["a", "b"])
    assert [int((split[labels == c] == "val").sum()) for c in (0, 1)] == [10, 10]


def test_a_class_with_one_image_cannot_be_split() -> None:
    labels = np.array([0] * 20 + [1] * 20 + [2])
    with pytest.raises(DataError, match=r"class\(es\) lonely have fewer than 3 images"):
        assign_splits(labels, FRACTIONS, seed=0, classes=["a", "b", "lonely"])


def test_too_small_a_test_split_says_why() -> None:
    # 5 classes of 5 images: a 10% test split holds 3 images, fewer than one per class.
    labels = np.repeat(np.arange(5), 5)
    with pytest.raises(DataError, match="greater or equal to the number of classes = 5"):
        assign_splits(labels, FRACTIONS, seed=0, classes=list("abcde"))


def test_stratified_subsample_keeps_class_proportions() -> None:
    labels = np.repeat(np.arange(3), [60, 30, 10])
    kept = stratified_subsample(labels, 50, seed=0, classes=["a", "b", "c"])
    assert np.bincount(labels[kept]).tolist() == [60 // 2, 30 // 2, 10 // 2]
    assert kept.tolist() == sorted(set(kept.tolist()))
    again = stratified_subsample(labels, 50, seed=0, classes=["a", "b", "c"])
    assert kept.tolist() == again.tolist()
    everything = stratified_subsample(labels, 100, seed=0, classes=["a", "b", "c"])
    assert everything.tolist() == list(range(100))
