"""Untrusted data that must be refused early, or shown safely (issue 10, items 8 to 11).

Each refusal runs ``auditclf run`` on a tiny generated set with every optional
part off and asserts the documented exit code, one stderr line naming the
culprit, no traceback and nothing written to ``--out``; the data errors come
before training, so none of them trains. One small run that reaches the report
(``tiny_run``) serves the checks that need a report: distinct keys for names
close to each other, a 10,000-character class name, HTML in names.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import EpsImagePlugin, Image

from auditclf.config import DataConfig
from auditclf.data import prepare_data
from auditclf.data.images import decode_image
from auditclf.errors import DataError, ExitStatus
from auditclf.evidence import load_samples
from auditclf.report.figures import LABEL_CHARS, class_distribution, confusion, short_label
from auditclf.report.markdown import render_markdown
from auditclf.results import AuditResult

from .conftest import MINIMAL_CONFIG, cli

OFF_CONFIG = MINIMAL_CONFIG  # a refusal that does not happen costs one epoch, not an audit
XSS = "<img src=x onerror=alert(1)>"
LONG = "L" * 10_000


# --- helpers ------------------------------------------------------------------------------


def _png(path: Path, seed: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def _folder(root: Path, counts: dict[str, int]) -> Path:
    """ImageFolder layout ``root/<class>/<i>.png``."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _png(root / name / f"{i}.png", seed=100 * c + i)
    return root


def _csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _manifest(folder: Path, labels: list[str], extra: dict[str, list[str]] | None = None) -> Path:
    """``folder/set.csv`` with one generated PNG per label (``<i>.png``) and extra columns."""
    extra = extra or {}
    rows = [
        [_png(folder / f"{i}.png", seed=i).name, label, *(v[i] for v in extra.values())]
        for i, label in enumerate(labels)
    ]
    return _csv(folder / "set.csv", ["path", "label", *extra], rows)


@pytest.fixture(scope="module")
def off_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("off") / "off.yaml"
    path.write_text(OFF_CONFIG)
    return path


def _refused(tmp_path: Path, config: Path, *argv, status: ExitStatus = ExitStatus.BAD_DATA):
    """Run a refused audit; assert its status, one error line, no traceback, no output."""
    out = tmp_path / "out"
    result = cli("run", "--config", config, *argv, "--quiet", "--out", out)
    assert result.status == status, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditclf: error: "), result.err
    assert "Traceback" not in result.err
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


def _reported(tmp_path: Path, folder: Path, *, status: ExitStatus = ExitStatus.BAD_DATA) -> str:
    """``auditclf report`` of ``folder`` into a fresh --out; assert the refusal."""
    out = tmp_path / "rendered"
    result = cli("report", folder, "--out", out)
    assert result.status == status, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


# --- one small run that reaches the report ------------------------------------------------

TINY_CLASSES = ["a.1", "a-1", XSS, LONG]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, off_config) -> Path:
    """1 epoch on 40 8×8 images of four classes whose names are hard on keys and displays.

    ``a.1`` and ``a-1`` are close but give different key parts; the manifest's own
    name, the data set's name in the report, is HTML.
    """
    folder = tmp_path_factory.mktemp("tiny")
    labels = [TINY_CLASSES[i % 4] for i in range(40)]
    manifest = _manifest(folder, labels)
    named = manifest.rename(folder / f"{XSS}.csv")
    out = folder / "out"
    result = cli("run", "--config", off_config, "--dataset", named, "--quiet", "--out", out)
    assert result.status == ExitStatus.OK, result
    return out


def test_close_class_names_keep_distinct_keys_and_ordinary_keys_unchanged(tiny_run) -> None:
    metrics = json.loads((tiny_run / "report.json").read_text())["models"]["baseline"]["metrics"]

    for part in ("a_1", "a-1", "img_src_x_onerror_alert_1", "l" * 10_000):
        assert f"performance.class.{part}.recall" in metrics, part
    assert sum(k.startswith("performance.class.") and k.endswith(".support") for k in metrics) == 4


def test_a_long_class_name_is_shortened_for_display_and_kept_whole_in_data(tiny_run) -> None:
    report = json.loads((tiny_run / "report.json").read_text())
    html = (tiny_run / "report.html").read_text()

    assert LONG in report["data"]["classes"]
    assert LONG in set(load_samples(tiny_run / "samples.csv")["label_name"])
    assert f"<td>{'L' * LABEL_CHARS}…</td>" in html  # the per-class tables
    assert f"<td>{'L' * (LABEL_CHARS + 1)}" not in html


def test_summary_md_escapes_html_and_markdown_of_names(tiny_run) -> None:
    result = AuditResult.load(tiny_run / "report.json")
    result.models["baseline"].findings.append(
        {
            "severity": "warning",
            "section": "performance",
            "metric": None,
            "message": f"class {XSS} | [click](https://example.invalid) ![x](y)\nsecond line",
        }
    )
    text = render_markdown(result)
    html = MarkdownIt("commonmark").enable("table").render(text)

    written = (tiny_run / "summary.md").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in written and XSS not in written
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and XSS not in text
    assert "<img" not in html and "<a " not in html
    (finding,) = [line for line in text.splitlines() if "click" in line]
    assert finding.startswith("- warning: class") and finding.endswith("second line")


def test_report_of_an_edited_report_with_clashing_class_names_is_refused(
    tiny_run, tmp_path: Path
) -> None:
    folder = shutil.copytree(tiny_run, tmp_path / "edited")
    report = json.loads((folder / "report.json").read_text())
    report["data"]["classes"][1] = "A.1"  # the key part of a.1
    (folder / "report.json").write_text(json.dumps(report))

    line = _reported(tmp_path, folder)

    assert "'a.1'" in line and "'A.1'" in line and "a_1" in line


@pytest.mark.parametrize(
    ("column", "cell", "why"),
    [
        ("proba.0", "abc", "is not a finite number"),
        ("confidence", "", "is empty"),
        ("margin", "nan", "is not a finite number"),
        ("label", "1.5", "is not a class index"),
        ("pred", "-1", "is not a class index"),
        ("proba.2", "1.7", "is not a probability in [0, 1]"),
    ],
)
def test_report_on_a_samples_csv_with_a_bad_cell_names_column_and_line(
    tiny_run, tmp_path: Path, column: str, cell: str, why: str
) -> None:
    folder = shutil.copytree(tiny_run, tmp_path / "edited")
    table = load_samples(folder / "samples.csv")
    text = table.astype(object).where(table.notna(), "").astype(str)
    text.loc[2, column] = cell  # data row 3: line 4 of the file
    text.to_csv(folder / "samples.csv", index=False)

    line = _reported(tmp_path, folder)

    assert f"samples.csv line 4: column '{column}'" in line and why in line


def test_samples_csv_empty_attack_cells_load_and_lines_follow_quoted_newlines(
    tmp_path: Path,
) -> None:
    header = "model,sample_id,label,pred,confidence,proba.0,proba.1,pgd_linf@0.1.pred"
    good = "\n".join(
        [header, 'baseline,"two\nlines",0,0,0.9,0.9,0.1,', "baseline,b,1,1,0.8,0.2,0.8,1"]
    )
    path = tmp_path / "samples.csv"
    path.write_text(good + "\n")

    table = load_samples(path)

    assert np.isnan(table.loc[0, "pgd_linf@0.1.pred"]) and table.loc[1, "pgd_linf@0.1.pred"] == 1
    path.write_text(good + "\nbaseline,c,1,x,0.8,0.2,0.8,\n")
    with pytest.raises(DataError, match=r"samples\.csv line 5: column 'pred': 'x'"):
        load_samples(path)


# --- item 8: names that would share a metric key, refused before training ----------------


def test_class_names_sharing_a_key_are_refused_naming_both(tmp_path: Path, off_config) -> None:
    manifest = _manifest(tmp_path / "set", ["a.1", "a_1", "b"] * 10)

    line = _refused(tmp_path, off_config, "--dataset", manifest)

    assert str(manifest) in line and "classes 'a.1' and 'a_1'" in line


def test_group_values_sharing_a_key_are_refused_naming_both(tmp_path: Path, off_config) -> None:
    sites = ["North", "north", "south"] * 10
    manifest = _manifest(tmp_path / "set", ["a", "b", "c"] * 10, {"site": sites})

    line = _refused(tmp_path, off_config, "--dataset", manifest)

    assert "attribute 'site'" in line and "'North'" in line and "'north'" in line


# --- item 10: one class ------------------------------------------------------------------


def test_a_folder_with_one_class_is_refused_before_training(tmp_path: Path, off_config) -> None:
    root = _folder(tmp_path / "set", {"only": 12})

    line = _refused(tmp_path, off_config, "--dataset", root)

    assert str(root) in line and "one class only ('only')" in line


def test_a_class_list_leaving_one_class_with_images_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "set", ["a"] * 12)
    config = tmp_path / "audit.yaml"
    config.write_text(OFF_CONFIG + f"data:\n  dataset: {manifest}\n  classes: [a, b]\n")

    line = _refused(tmp_path, config)

    assert str(manifest) in line and "one class only ('a')" in line


def test_figures_draw_a_10000_character_class_name_shortened() -> None:
    names = [LONG, "$\\notacommand$", "b"]
    counts = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]

    drawn = confusion({"labels": names, "counts": counts, "normalised": counts})
    splits = dict.fromkeys(("train", "val", "test"), [1, 1, 1])
    bars = class_distribution({"classes": names, "splits": splits})

    assert drawn.startswith("data:image/png;base64,") and bars.startswith("data:image/png")
    assert short_label(LONG) == "L" * LABEL_CHARS + "…" and short_label("b") == "b"


# --- item 11: paths outside the dataset folder ------------------------------------------


def _outside_manifest(tmp_path: Path, target: str) -> Path:
    rows = [[_png(tmp_path / "set" / f"{i}.png", seed=i).name, "ab"[i % 2]] for i in range(6)]
    rows.append([target, "a"])
    return _csv(tmp_path / "set" / "set.csv", ["path", "label"], rows)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_manifest_paths_outside_the_folder_are_refused_naming_the_line(
    tmp_path: Path, off_config, kind: str
) -> None:
    secret = _png(tmp_path / "secret.png", seed=99)
    if kind == "symlink":
        (tmp_path / "set").mkdir()
        (tmp_path / "set" / "link.png").symlink_to(secret)
    target = {"dotdot": "../secret.png", "absolute": str(secret), "symlink": "link.png"}[kind]
    manifest = _outside_manifest(tmp_path, target)

    line = _refused(tmp_path, off_config, "--dataset", manifest)

    assert f"{manifest} line 8" in line and "outside the dataset folder" in line
    assert "data.allow_outside_root" in line


def test_folder_symlink_outside_is_refused_and_allowed_on_request(
    tmp_path: Path, off_config
) -> None:
    root = _folder(tmp_path / "set", {"a": 6, "b": 6})
    link = root / "b" / "z.png"
    link.symlink_to(_png(tmp_path / "secret.png", seed=99))

    line = _refused(tmp_path, off_config, "--dataset", root)

    assert str(link) in line and "outside the dataset folder" in line
    allowed = prepare_data(DataConfig(dataset=str(root), allow_outside_root=True), seed=0)
    assert "b/z.png" in set(allowed.imageset.ids)


# --- item 11: labels that mark a missing label, non-UTF-8 CSVs ---------------------------


@pytest.mark.parametrize("label", ["nan", "NaN", "-1", "", "null"])
def test_missing_label_markers_name_their_line(tmp_path: Path, off_config, label: str) -> None:
    manifest = _manifest(tmp_path / "set", ["a", "b"] * 3 + [label] + ["a", "b"] * 3)

    line = _refused(tmp_path, off_config, "--dataset", manifest)

    assert f"{manifest} line 8" in line and "label" in line


def test_a_label_listed_in_data_classes_is_a_class(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "set", ["-1", "1"] * 6)

    data = prepare_data(DataConfig(dataset=str(manifest), classes=["-1", "1"]), seed=0)

    assert data.classes == ["-1", "1"]


def test_a_latin1_manifest_names_the_line_not_a_byte_offset(tmp_path: Path, off_config) -> None:
    rows = [[_png(tmp_path / f"{i}.png", seed=i).name, "ab"[i % 2]] for i in range(6)]
    rows[3][1] = "café"
    manifest = _csv(tmp_path / "set.csv", ["path", "label"], rows, encoding="latin-1")

    line = _refused(tmp_path, off_config, "--dataset", manifest)

    assert f"{manifest} line 5" in line and "UTF-8" in line and "position" not in line


def test_a_latin1_metadata_file_names_the_line(tmp_path: Path, off_config) -> None:
    root = _folder(tmp_path / "set", {"a": 6, "b": 6})
    rows = [[f"a/{i}.png", "nord"] for i in range(6)] + [["b/0.png", "Zürich"]]
    metadata = _csv(tmp_path / "meta.csv", ["path", "city"], rows, encoding="latin-1")

    line = _refused(tmp_path, off_config, "--dataset", root, "--metadata", metadata)

    assert f"{metadata} line 8" in line and "UTF-8" in line


# --- item 11: image formats behind a .png name -------------------------------------------


def test_tiff_content_behind_a_png_name_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "tiff.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path, format="TIFF")

    assert decode_image(path).tolist() == [[[10, 20, 30]] * 8] * 8


def test_eps_behind_a_png_name_is_refused_without_parsing_it(
    tmp_path: Path, off_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: parsed.append(1))
    root = _folder(tmp_path / "set", {"a": 6, "b": 6})
    bad = root / "b" / "3.png"
    bad.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")

    line = _refused(tmp_path, off_config, "--dataset", root)

    assert str(bad) in line and "looks like EPS" in line and not parsed
