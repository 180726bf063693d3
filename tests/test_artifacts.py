"""artifacts.npz: the images and maps leave report.json, and a re-render draws them again."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from markupsafe import escape

from auditclf.report.artifacts import ARTIFACT_FILE
from auditclf.report.figures import MISSING_ARTIFACTS
from tests.conftest import cli

# bytes; the digits run, every section at full breadth, is about 1.0 MB (the default run's
# report.json at most 1 MB, issue 12, is test_default_run's)
REPORT_JSON_BOUND = 1_200_000
FIGURES_BOUND = 100_000  # the figures' and artifacts' share: captions and scores, no pixels


PIXEL_KEYS = {"image", "adversarial_image", "map", "adversarial_map"}  # inlined until issue 12


def _pictures(value, path: str = "$"):
    """Paths in a JSON value holding pixels: a data URI, or a value under a pixel key."""
    if isinstance(value, str) and value.startswith("data:"):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from ([f"{path}.{key}"] if key in PIXEL_KEYS else [])
            yield from _pictures(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _pictures(item, f"{path}[{i}]")


def test_report_json_holds_numbers_and_references_the_array_file(digits_run):
    text = (digits_run / "report.json").read_text()
    report = json.loads(text)
    assert len(text.encode()) < REPORT_JSON_BOUND
    for model in report["models"].values():
        pictured = [s.get("figures", {}) for s in model["sections"]] + [model["artifacts"]]
        assert len(json.dumps(pictured)) < FIGURES_BOUND
    assert list(_pictures(report)) == []
    data = (digits_run / ARTIFACT_FILE).read_bytes()
    assert report["artifacts"] == {
        "file": ARTIFACT_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    explained = report["models"]["baseline"]["artifacts"]["explanations"]["explained"]
    assert arrays["baseline/explain.image"].shape == (explained, 1, 8, 8)
    assert arrays["baseline/explain.gradcam.map"].shape == (explained, 8, 8)
    assert arrays["baseline/gallery.clean"].shape[1:] == (1, 8, 8)
    assert all(values.dtype == np.float32 for values in arrays.values())
    rows = (digits_run / "samples.csv").read_text().splitlines()
    assert "explain.gradcam.deletion_auc" in rows[0].split(",")


def test_a_rerender_draws_the_same_page_from_the_saved_files(digits_run, tmp_path):
    again = tmp_path / "again"
    result = cli("report", digits_run, "--out", again)
    assert result.status == 0, result
    assert (again / "report.html").read_text() == (digits_run / "report.html").read_text()
    assert (again / ARTIFACT_FILE).read_bytes() == (digits_run / ARTIFACT_FILE).read_bytes()
    saved = json.loads((again / "report.json").read_text())
    assert saved["artifacts"] == json.loads((digits_run / "report.json").read_text())["artifacts"]


def test_without_the_array_file_the_galleries_say_so(digits_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(digits_run, folder)
    (folder / ARTIFACT_FILE).unlink()
    result = cli("report", folder)
    assert result.status == 0, result
    html = (folder / "report.html").read_text()
    # the attack gallery and the attribution ones, HTML-escaped as every text of the page
    assert html.count(str(escape(MISSING_ARTIFACTS))) >= 2
    assert 'class="attr-row"' not in html
    assert json.loads((folder / "report.json").read_text())["artifacts"] is None


def _tampered(digits_run, tmp_path, change) -> str:
    """A copy of the run whose artifact file ``change`` rewrote (report.json's SHA-256
    updated to match); ``auditclf report`` on it must refuse with exit 3 and one line."""
    folder = tmp_path / "run"
    shutil.copytree(digits_run, folder)
    with np.load(folder / ARTIFACT_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    buffer = io.BytesIO()
    np.savez(buffer, **change(arrays))
    (folder / ARTIFACT_FILE).write_bytes(buffer.getvalue())
    report = json.loads((folder / "report.json").read_text())
    report["artifacts"]["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (folder / "report.json").write_text(json.dumps(report))
    result = cli("report", folder)
    assert result.status == 3, result
    assert result.err.strip().count("\n") == 0 and "Traceback" not in result.err
    assert ARTIFACT_FILE in result.err
    return result.err


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a | {"baseline/explain.image": a["baseline/explain.image"][:1]}, "float32 ["),
        (lambda a: a | {"baseline/gallery.clean": np.array([{"x": 1}])}, "object"),
        (lambda a: a | {"baseline/extra": np.zeros(1, np.float32)}, "baseline/extra.npy"),
        (lambda a: {k: v for k, v in a.items() if k != "baseline/gallery.clean"}, "lacks"),
    ],
    ids=["wrong shape", "pickled object", "extra member", "missing member"],
)
def test_a_bad_array_file_is_refused_in_one_line(digits_run, tmp_path, change, message):
    assert message in _tampered(digits_run, tmp_path, change)


def test_an_array_file_of_another_run_is_refused(digits_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(digits_run, folder)
    with (folder / ARTIFACT_FILE).open("ab") as handle:
        handle.write(b"\0")
    result = cli("report", folder)
    assert result.status == 3 and "SHA-256" in result.err and result.err.strip().count("\n") == 0
