"""``artifacts.npz``: a run's images and maps, in one array file beside ``report.json``.

``report.json`` holds numbers; the pixels the report shows (the attack gallery, the
explained images and their attribution maps) are float32 arrays, written once into
``artifacts.npz`` and referenced from ``report.json`` by name and SHA-256
(``"artifacts": {"file": "artifacts.npz", "sha256": ...}``); ``report.html`` inlines
them as PNGs, and ``auditclf report DIR`` reads them back to draw it again.

The file is NumPy's npz format (what ``np.savez_compressed`` writes, loadable with
``np.load(path, allow_pickle=False)``), written with fixed member times so that the
same arrays give the same bytes. Members are ``<model>/<array>.npy``
(``baseline/explain.gradcam.map``), the array names spelt by :mod:`auditclf.keys`.

A saved report is untrusted: reading refuses (exit 3, one line) a file whose SHA-256
is not the one ``report.json`` records, a member ``report.json`` does not call for or
one it lacks, and an array that is not float32 of the shape ``report.json`` implies;
shapes are checked in each member's header before its data is read, and nothing is
unpickled.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from auditclf.errors import DataError, UsageError
from auditclf.keys import CORRUPTION_GALLERY, explain_column, gallery_array
from auditclf.report.figures import GALLERY_IMAGES
from auditclf.results import AuditResult, ModelResult

ARTIFACT_FILE = "artifacts.npz"
DTYPE = np.dtype(np.float32)
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest: the bytes do not vary


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The npz file of ``arrays`` (name → array), deflated, members in name order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_MEMBER_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as stream:
                np.lib.format.write_array(
                    stream, np.ascontiguousarray(arrays[name]), allow_pickle=False
                )
    return buffer.getvalue()


def write_artifacts(path: Path, result: AuditResult) -> None:
    """Write every model's arrays to ``path`` and reference the file from ``result``
    (``result.artifacts``); with no arrays (a report read without its artifact file)
    nothing is written and the reference is dropped."""
    arrays = {
        f"{name}/{array}": values
        for name, model in result.models.items()
        for array, values in model.arrays.items()
    }
    if not arrays:
        result.artifacts = None
        return
    data = npz_bytes(arrays)
    Path(path).write_bytes(data)
    result.artifacts = {"file": Path(path).name, "sha256": hashlib.sha256(data).hexdigest()}


def _count(value, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{source}: {what} is not a count ({str(value)[:40]!r})")
    return value


def expected_shapes(model: ModelResult, input_shape, source: str) -> dict[str, tuple]:
    """{array name: shape} of the arrays ``model``'s report entry calls for: its attack
    gallery's images, its corruption gallery and its explained images and maps (see the
    probes)."""
    channels, height, width = input_shape
    shapes = {}
    gallery = model.artifacts.get("gallery")
    if gallery:
        items = _count(len(gallery["items"]), "artifacts.gallery.items", source)
        shapes |= {gallery_array(w): (items, channels, height, width) for w in GALLERY_IMAGES}
    corrupted = model.artifacts.get("corruption_gallery")
    if corrupted:  # per corruption: the clean image, then each gallery severity
        rows = _count(len(corrupted["names"]), "artifacts.corruption_gallery.names", source)
        columns = _count(
            len(corrupted["severities"]) + 1, "artifacts.corruption_gallery.severities", source
        )
        shapes[CORRUPTION_GALLERY] = (rows, columns, channels, height, width)
    run = model.artifacts.get("explanations")
    if run:  # the images whenever the probe explained any, the maps of the methods that ran
        n = _count(run.get("explained"), "artifacts.explanations.explained", source)
        images, maps = ["image"], ["map"]
        if run.get("adversarial_eps") is not None:
            images, maps = [*images, "adversarial_image"], [*maps, "adversarial_map"]
        shapes |= {explain_column(w): (n, channels, height, width) for w in images}
        for method in run.get("methods", []):
            if not isinstance(method, str):
                raise UsageError(f"{source}: artifacts.explanations.methods holds a non-name")
            shapes |= {explain_column(w, method): (n, height, width) for w in maps}
    return shapes


def _all_expected(result: AuditResult, source: str) -> dict[tuple[str, str], tuple]:
    shape = result.data.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise UsageError(f"{source}: data.input_shape is not [channels, height, width]")
    shape = [_count(side, "data.input_shape", source) for side in shape]
    try:
        return {
            (name, array): dims
            for name, model in result.models.items()
            for array, dims in expected_shapes(model, shape, source).items()
        }
    except (AttributeError, TypeError) as exc:
        raise UsageError(f"{source}: malformed artifacts entry ({exc})") from None


def read_artifacts(folder: Path, result: AuditResult) -> None:
    """Give ``result``'s models the arrays of ``folder``'s artifact file, checked against
    ``report.json``; without the file (or a reference to it) they get none, and the
    report's galleries say so."""
    source = str(Path(folder) / "report.json")
    reference = result.artifacts
    if reference is None:
        return
    if (
        not isinstance(reference, dict)
        or reference.get("file") != ARTIFACT_FILE
        or not isinstance(reference.get("sha256"), str)
    ):
        raise UsageError(f'{source}: "artifacts" is not {{"file": "{ARTIFACT_FILE}", "sha256"}}')
    path = Path(folder) / ARTIFACT_FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != reference["sha256"]:
        raise DataError(f"{path}: its SHA-256 is not the one {source} records (another run's?)")
    expected = _all_expected(result, source)
    arrays = _checked_arrays(path, data, {f"{m}/{a}": dims for (m, a), dims in expected.items()})
    for name, array in expected:
        result.models[name].arrays[array] = arrays[f"{name}/{array}"]


def _header(archive: zipfile.ZipFile, member: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype an .npy member declares, read before its data."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{member}: .npy format version {version}")
        read = np.lib.format.read_array_header_1_0
        if version == (2, 0):
            read = np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    return shape, dtype


def _checked_arrays(path: Path, data: bytes, expected: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The arrays of the npz ``data``, each float32 of its expected shape (checked in each
    member's header, before its data is read); DataError else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = sorted(info.filename for info in archive.infolist())
            wanted = sorted(f"{name}.npy" for name in expected)
            if members != wanted:
                extra = sorted(set(members) - set(wanted))
                lacking = sorted(set(wanted) - set(members))
                if extra:
                    raise DataError(f"{path}: holds {extra[0][:80]!r}, which report.json lacks")
                if lacking:
                    raise DataError(f"{path}: lacks {lacking[0][:80]!r}, which report.json needs")
                raise DataError(f"{path}: holds a member twice")
            for name, shape in expected.items():
                found, dtype = _header(archive, f"{name}.npy")
                if dtype != DTYPE or found != shape:
                    raise DataError(
                        f"{path}: {name} is {dtype} {list(found)}, not float32 {list(shape)}"
                    )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in expected}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise DataError(f"{path}: not a readable artifact file ({exc})") from None
