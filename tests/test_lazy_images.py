"""Folders and manifests decoded when read (auditclf.data.lazy; issue 11, item 2).

The lazy images must hold exactly the pixels of a decode into memory (the
eager ``to_chw_uint8`` of every file, in order), so every number of a folder
audit, its data hash and its duplicate scan are those of before.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditclf.config import DataConfig
from auditclf.data import LazyImages, lazy, prepare_data
from auditclf.data.images import decode_image, to_chw_uint8
from auditclf.errors import DataError


@pytest.fixture
def workers(monkeypatch) -> None:
    """Decode through DataLoader worker processes even a tiny set, in blocks of 5."""
    monkeypatch.setattr(lazy, "MIN_IMAGES_FOR_WORKERS", 0)
    monkeypatch.setattr(lazy, "SCAN_BLOCK", 5)
    monkeypatch.setattr(lazy, "available_cpus", lambda: (2, "cpu affinity"))
    monkeypatch.setattr(lazy.torch, "get_num_threads", lambda: 2)


def _mixed_folder(root: Path) -> Path:
    """Two classes of PNG and JPEG files: mostly 10×12 RGB, some gray, some 8×8."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            size = (8, 8) if i % 5 == 0 else (10, 12)
            shape = size if i % 4 == 0 else (*size, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            suffix = ".jpg" if i % 3 == 0 else ".png"
            Image.fromarray(pixels).save(root / name / f"{c}-{i}{suffix}")
    # One exact copy, to be found by the duplicate scan.
    (root / "dog" / "copy.png").write_bytes((root / "cat" / "0-1.png").read_bytes())
    return root


def _eager(images: LazyImages, cfg: DataConfig) -> np.ndarray:
    """The decode into memory that folders had before they were lazy."""
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    decoded = [decode_image(path) for path in images.paths]
    return to_chw_uint8(decoded, size=size, channels=cfg.channels)[0]


@pytest.mark.parametrize("fields", [{}, {"channels": 1, "image_size": 9}])
def test_lazy_folder_holds_the_eager_pixels_hash_and_duplicates(
    tmp_path, workers, fields
) -> None:
    cfg = DataConfig(dataset=str(_mixed_folder(tmp_path / "set")), **fields)
    data = prepare_data(cfg, seed=0)
    images = data.imageset.images
    eager = _eager(images, cfg)
    assert isinstance(images, LazyImages)
    assert images.shape == eager.shape and images.dtype == np.uint8
    assert np.array_equal(np.asarray(images), eager)
    pixels = hashlib.sha256(eager.tobytes())
    pixels.update(data.imageset.labels.astype("<i8").tobytes())
    pixels.update("\x1f".join(data.classes).encode())
    pixels.update("\x1f".join(map(str, data.split)).encode())
    assert data.summary["hash"] == pixels.hexdigest()
    duplicates = data.summary["duplicates"]
    assert sum(duplicates["within"].values()) + sum(duplicates["across"].values()) == 1
    assert duplicates["label_conflicts"] == 1


def test_lazy_manifest_holds_the_eager_pixels(tmp_path) -> None:
    folder = _mixed_folder(tmp_path / "set")
    rows = [[p.relative_to(folder).as_posix(), p.parent.name] for p in sorted(folder.rglob("*.*"))]
    with (folder / "set.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *rows[::-1]])
    cfg = DataConfig(dataset=str(folder / "set.csv"))
    images = prepare_data(cfg, seed=0).imageset.images
    assert list(images.paths) == [str(folder / path) for path, _ in rows[::-1]]
    assert np.array_equal(np.asarray(images), _eager(images, cfg))


def test_indexing_decodes_only_what_is_read(tmp_path) -> None:
    cfg = DataConfig(dataset=str(_mixed_folder(tmp_path / "set")))
    images = prepare_data(cfg, seed=0).imageset.images
    eager = _eager(images, cfg)
    mask = np.arange(len(images)) % 3 == 0
    for key in (slice(2, 9, 3), np.array([4, 0, 4]), [1, 2], mask):
        part = images[key]
        assert isinstance(part, LazyImages) and part.shape == eager[key].shape
        assert np.array_equal(np.asarray(part), eager[key])
    assert np.array_equal(images[np.int64(5)], eager[5]) and images[-1].shape == eager.shape[1:]
    assert len(images[mask][1:]) == mask.sum() - 1
    with pytest.raises(TypeError):
        images[:, 0]
    with pytest.raises(ValueError):
        np.asarray(images[:2], copy=False)
    Path(images.paths[0]).unlink()  # reading other rows never touches it
    assert np.array_equal(np.asarray(images[1:4]), eager[1:4])
    with pytest.raises(DataError, match="no such file"):
        np.asarray(images[:1])


def test_a_file_that_breaks_later_is_one_data_error_from_a_worker(tmp_path, workers) -> None:
    cfg = DataConfig(dataset=str(_mixed_folder(tmp_path / "set")))
    images = prepare_data(cfg, seed=0).imageset.images
    broken = Path(images.paths[17])
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(DataError) as caught:
        np.asarray(images)
    assert str(caught.value).startswith(f"{broken}: ") and "\n" not in str(caught.value)
