"""Split folders (root/<split>/<class>/…) and audits of a checkpoint on the user's own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditclf.config import DataConfig
from auditclf.data import prepare_data
from auditclf.errors import DataError
from tests.conftest import MINIMAL_CONFIG, cli


def _images(folder: Path, n: int, shade: int) -> None:
    """``n`` 8×8 grayscale PNGs of one class (a shade plus noise) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shade + n)
    for i in range(n):
        pixels = np.clip(shade + rng.integers(-20, 20, (8, 8)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """Folders ``{relative/class/path: image count}`` under ``root``; the shade is set by
    the last part (the class), so a class looks alike in every split."""
    for relative, n in layout.items():
        _images(root / relative, n, {"cat": 40, "dog": 200, "owl": 120}[Path(relative).name])
    return root


def _prepare(root: Path, trains: bool = True, **fields):
    return prepare_data(DataConfig(dataset=str(root), **fields), seed=0, trains=trains)


def test_split_folders_are_splits_and_classes_the_union(tmp_path):
    root = _tree(
        tmp_path / "data",
        {
            "Train/cat": 6,
            "Train/dog": 6,
            "VALID/cat": 2,
            "VALID/dog": 2,
            "test/cat": 3,
            "test/owl": 2,
        },
    )
    data = _prepare(root)
    assert data.classes == ["cat", "dog", "owl"]
    assert data.summary["split_given"] is True
    assert data.summary["split_counts"] == {"train": 12, "val": 4, "test": 5}
    assert data.summary["class_distribution"]["test"] == {"cat": 3, "dog": 0, "owl": 2}
    assert set(data.view("test").ids) == {f"test/cat/{i}.png" for i in range(3)} | {
        f"test/owl/{i}.png" for i in range(2)
    }
    assert data.summary["audited"].startswith("the test split given by the data (5 of 21")


def test_split_folders_without_val_carve_it_from_train(tmp_path):
    root = _tree(
        tmp_path / "data", {"train/cat": 10, "train/dog": 10, "test/cat": 3, "test/dog": 3}
    )
    counts = _prepare(root).summary["split_counts"]
    assert counts["test"] == 6 and counts["val"] > 0 and counts["train"] + counts["val"] == 20


@pytest.mark.parametrize(
    ("layout", "needle"),
    [
        ({"train/cat": 3, "test/cat": 3, "dog": 3}, "look like splits but dog do not"),
        ({"val/cat": 3, "validation/cat": 3, "train/cat": 3}, "are both the val split"),
        ({"train/cat": 3, "test/cat": 3}, "holds images directly"),
    ],
)
def test_ambiguous_split_layouts_are_refused(tmp_path, layout, needle):
    root = _tree(tmp_path / "data", layout)
    if needle == "holds images directly":
        _images(root / "test", 2, 90)
    with pytest.raises(DataError, match=needle):
        _prepare(root)


def test_split_names_listed_as_classes_stay_classes(tmp_path):
    root = tmp_path / "data"
    _images(root / "train", 10, 40)
    _images(root / "test", 10, 200)
    data = _prepare(root, classes=["train", "test"])
    assert data.classes == ["train", "test"] and data.summary["split_given"] is False


def test_a_run_that_trains_nothing_audits_every_image(tmp_path):
    root = _tree(tmp_path / "data", {"cat": 5, "dog": 4})
    audited = _prepare(root, trains=False).summary
    assert audited["split_counts"] == {"train": 0, "val": 0, "test": 9}
    assert audited["audited"].startswith("all 9 images are test images")
    trained = _prepare(_tree(tmp_path / "more", {"cat": 10, "dog": 10})).summary
    assert 0 < trained["split_counts"]["test"] < 20 and "split at random" in trained["audited"]


def test_a_test_only_manifest_needs_no_train_images_unless_the_run_trains(tmp_path):
    _tree(tmp_path, {"cat": 3, "dog": 3})
    rows = [f"{c}/{i}.png,{c},test" for c in ("cat", "dog") for i in range(3)]
    manifest = tmp_path / "test.csv"
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    assert _prepare(manifest, trains=False).summary["split_counts"]["test"] == 6
    with pytest.raises(DataError, match="no 'train' images, and this run trains"):
        _prepare(manifest)


def test_checkpoint_audit_of_a_splitless_folder_audits_all_and_says_so(tmp_path):
    """Train on split folders (read as splits), then audit the checkpoint on other images."""
    layout = {
        f"{s}/{c}": n for s, n in (("train", 12), ("val", 3), ("test", 3)) for c in ("cat", "dog")
    }
    train_root = _tree(tmp_path / "split", layout)
    trained = cli(
        "train", "--dataset", train_root, "--epochs", "1", "--quiet", "--out", tmp_path / "model"
    )
    assert trained.status == 0, trained
    own = _tree(tmp_path / "own", {"cat": 5, "dog": 6})
    config = tmp_path / "audit.yaml"
    config.write_text(MINIMAL_CONFIG)
    result = cli(
        "run",
        "--config",
        config,
        "--dataset",
        own,
        "--checkpoint",
        tmp_path / "model" / "model.safetensors",
        "--out",
        tmp_path / "report",
        "--quiet",
    )
    assert result.status == 0, result  # no gates: nothing can fail
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["data"]["split_counts"] == {"train": 0, "val": 0, "test": 11}
    reasons = {item["section"]: item["reason"] for item in report["limitations"]}
    assert reasons["Test images"].startswith("all 11 images are test images")
    assert "Training data" in reasons
    assert report["models"]["baseline"]["metrics"]["data.imbalance_ratio"] is None
    assert not any(
        "no training images" in f["message"] for f in report["models"]["baseline"]["findings"]
    )


def test_an_ambiguous_layout_exits_3_in_one_line(tmp_path):
    root = _tree(tmp_path / "data", {"train/cat": 3, "test/cat": 3, "dog": 3})
    result = cli("run", "--dataset", root, "--out", tmp_path / "out", "--quiet")
    assert result.status == 3, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert "look like splits but dog do not" in result.err
