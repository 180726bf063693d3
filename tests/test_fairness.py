"""Tests of the fairness audit: group metrics recomputed independently, small and
single-class groups, robust accuracy per group, intervals, attributes from data, bad
input, and two tiny end-to-end runs (digits with metadata; shapes with rebalancing).

Expected group values come from fairlearn's MetricFrame over the *rows* of
``samples.csv`` and from boolean masks, never from the code under test.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from auditclf.analyses import ANALYSES, AnalysisContext
from auditclf.analyses.calibration import expected_calibration_error
from auditclf.analyses.cells import confusion_rates, ece_from_cells, multinomial_draws
from auditclf.analyses.fairness import fairness
from auditclf.config import AnalysisConfig, DataConfig, FairnessConfig
from auditclf.data import prepare_data
from auditclf.data.attributes import MISSING, digit_attributes, slant
from auditclf.errors import DataError
from auditclf.evidence import load_samples, new_table, save_samples
from auditclf.seeding import numpy_rng

from .conftest import cli

CLASSES = ["cat", "dog", "Sea Lion", "bird"]
ATTACKS = ("fgsm@0.1", "pgd_linf@0.1")
TOL = 1e-9


def _table(seed: int = 0) -> pd.DataFrame:
    """A sample table with every kind of group the audit must handle.

    site: north (300) and south (250), large; "<b>east</b>" (40) with HTML in the
    name; tiny (10), below the minimum size; ones (45), every image of class "dog";
    60 rows with no site at all ("" → "(missing)"). Two attack columns run on every
    other row.
    """
    rng = np.random.default_rng(seed)
    sizes = {"north": 300, "south": 250, "<b>east</b>": 40, "tiny": 10, "ones": 45, "": 60}
    site = np.concatenate([[name] * n for name, n in sizes.items()])
    n, k = len(site), len(CLASSES)
    labels = rng.integers(0, k, n)
    labels[site == "ones"] = 1
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += np.where(site == "south", 0.6, 1.6)  # south is worse
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    names = np.asarray(CLASSES, dtype=object)
    table = pd.DataFrame(
        {
            "model": "baseline",
            "sample_id": [f"img{i:04d}" for i in range(n)],
            "label": labels,
            "label_name": names[labels],
            "pred": pred,
            "pred_name": names[pred],
            "correct": (pred == labels).astype(int),
            "confidence": proba.max(axis=1),
            "margin": 0.0,
        }
    )
    for c in range(k):
        table[f"proba.{c}"] = proba[:, c]
    table["attacked"] = (np.arange(n) % 2 == 0).astype(float)
    for i, column in enumerate(ATTACKS):
        fooled = rng.random(n) < 0.3 + 0.2 * i
        adv = np.where(fooled, (labels + 1) % k, pred).astype(float)
        table[f"adv.{column}.pred"] = np.where(table["attacked"] == 1, adv, np.nan)
    table["attr.site"] = site
    return table


def _context(**fairness_settings) -> AnalysisContext:
    settings = FairnessConfig(**fairness_settings).model_dump(mode="json")
    return AnalysisContext(list(CLASSES), AnalysisConfig(), 0, {}, fairness=settings)


@pytest.fixture(scope="module")
def samples_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fairness") / "samples.csv"
    save_samples(_table(), path)
    return path


@pytest.fixture(scope="module")
def audited(samples_csv):
    """(the rows of samples.csv, the fairness section computed from them)."""
    rows = load_samples(samples_csv)
    return rows, fairness(rows, _context())


def _expected_by_group(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{group: {metric key part: value}} from a row-level MetricFrame and boolean masks."""
    site = rows["attr.site"].replace("", MISSING)
    y, p = rows["label"].to_numpy(), rows["pred"].to_numpy()
    metrics = {
        "accuracy": accuracy_score,
        "balanced_accuracy": balanced_accuracy_score,
    }
    with warnings.catch_warnings():
        # Expected: the group "ones" holds only dogs, some predicted as other classes.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        frame = MetricFrame(metrics=metrics, y_true=y, y_pred=p, sensitive_features=site)
    expected: dict[str, dict[str, float]] = {}
    for group in site.unique():
        mask = (site == group).to_numpy()
        yg, pg = y[mask], p[mask]
        values = {name: frame.by_group.loc[group, name] for name in metrics}
        assert values["accuracy"] == pytest.approx(np.mean(yg == pg), abs=TOL)
        recalls = recall_score(
            yg, pg, labels=range(len(CLASSES)), average=None, zero_division=np.nan
        )
        values["macro_recall"] = np.nan if np.isnan(recalls).any() else recalls.mean()
        values["ece"] = expected_calibration_error(
            rows["confidence"].to_numpy()[mask], (yg == pg).astype(float), 15
        )[0]
        for c, name in enumerate(CLASSES):
            cls = re.sub(r"[^a-z0-9_-]+", "_", name.lower())
            positives, negatives = yg == c, yg != c
            values[f"class.{cls}.tpr"] = np.mean(pg[positives] == c) if positives.any() else None
            values[f"class.{cls}.fpr"] = np.mean(pg[negatives] == c) if negatives.any() else None
            values[f"class.{cls}.selection_rate"] = np.mean(pg == c)
        for column in ATTACKS:
            adv = rows[f"adv.{column}.pred"].to_numpy()[mask]
            ran = ~np.isnan(adv)
            values[f"{column}.accuracy"] = np.mean(adv[ran] == yg[ran])
            values[f"{column}.attacked"] = int(ran.sum())
        values["size"] = int(mask.sum())
        expected[group] = values
    return expected


GROUP_KEYS = {
    "north": "north",
    "south": "south",
    "<b>east</b>": "b_east_b",
    "tiny": "tiny",
    "ones": "ones",
    MISSING: "missing",
}


def test_every_group_metric_matches_fairlearn_and_masks_over_samples_csv(audited) -> None:
    rows, section = audited
    expected = _expected_by_group(rows)
    checked = set()
    for group, values in expected.items():
        prefix = f"fairness.site.group.{GROUP_KEYS[group]}"
        assert section.metrics[f"{prefix}.size"] == values["size"]
        checked.add(f"{prefix}.size")
        for name, value in values.items():
            if name in ("size",) or name.endswith(".attacked"):
                continue
            key = f"{prefix}.{name}"
            enough = values[f"{name.split('.accuracy')[0]}.attacked"] if "@" in name else None
            small = (enough if enough is not None else values["size"]) < 30
            got = section.metrics[key]
            checked.add(key)
            if small:
                assert got is None, key
                assert section.notes[key].startswith("insufficient data (n = "), key
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                assert got is None, key
                assert "undefined" in section.notes[key] or "averages" in section.notes[key], key
            else:
                assert got == pytest.approx(value, abs=TOL), key
    group_keys = {
        k for k in section.metrics if k.startswith("fairness.site.group.") and ".ci_" not in k
    }
    assert group_keys == checked  # every group metric was recomputed


def test_aggregates_leave_out_small_groups(audited) -> None:
    rows, section = audited
    expected = _expected_by_group(rows)
    eligible = {g: v for g, v in expected.items() if v["size"] >= 30}
    # tiny (10 images) is left out even though its accuracy is the extreme value.
    assert "tiny" not in eligible and expected["tiny"]["size"] == 10
    accuracies = [v["accuracy"] for v in eligible.values()]
    metrics = section.metrics
    assert metrics["fairness.site.accuracy.min"] == pytest.approx(min(accuracies), abs=TOL)
    assert metrics["fairness.site.accuracy.max"] == pytest.approx(max(accuracies), abs=TOL)
    assert metrics["fairness.site.accuracy.difference"] == pytest.approx(
        max(accuracies) - min(accuracies), abs=TOL
    )
    assert metrics["fairness.site.accuracy.ratio"] == pytest.approx(
        min(accuracies) / max(accuracies), abs=TOL
    )
    assert metrics["fairness.site.group.tiny.accuracy"] is None
    assert section.notes["fairness.site.group.tiny.accuracy"] == (
        "insufficient data (n = 10 < 30 test images)"
    )
    # The single-class group has no FPR for dog; the gap uses the groups that have one.
    fprs = [v["class.dog.fpr"] for g, v in eligible.items() if g != "ones"]
    assert metrics["fairness.site.class.dog.fpr.difference"] == pytest.approx(
        max(fprs) - min(fprs), abs=TOL
    )
    # Equalized odds: the largest per-class TPR or FPR difference.
    gaps = [
        metrics[f"fairness.site.class.{c}.{r}.difference"]
        for c in ("cat", "dog", "sea_lion", "bird")
        for r in ("tpr", "fpr")
    ]
    assert metrics["fairness.site.equalized_odds_difference"] == max(
        g for g in gaps if g is not None
    )
    low = metrics["fairness.site.accuracy.difference_ci_low"]
    high = metrics["fairness.site.accuracy.difference_ci_high"]
    assert 0 <= low < metrics["fairness.site.accuracy.difference"] < high
    small = [f for f in section.findings if "insufficient data" in f.message]
    assert len(small) == 1 and "tiny (n = 10)" in small[0].message


def test_a_single_class_group_has_null_undefined_rates_with_reasons(audited) -> None:
    _, section = audited
    metrics, notes = section.metrics, section.notes
    ones = "fairness.site.group.ones"
    assert metrics[f"{ones}.accuracy"] is not None
    assert metrics[f"{ones}.class.dog.fpr"] is None
    assert notes[f"{ones}.class.dog.fpr"] == (
        "every test image in the group is of class 'dog': FPR is undefined"
    )
    for cls, name in (("cat", "cat"), ("sea_lion", "Sea Lion"), ("bird", "bird")):
        assert metrics[f"{ones}.class.{cls}.tpr"] is None
        assert notes[f"{ones}.class.{cls}.tpr"] == (
            f"no test image of class {name!r} in the group: TPR is undefined"
        )
        assert metrics[f"{ones}.class.{cls}.fpr"] is not None  # 0 or more, but defined
    assert metrics[f"{ones}.macro_recall"] is None
    assert "class(es) cat, Sea Lion, bird have no test image" in notes[f"{ones}.macro_recall"]


def test_robust_accuracy_per_group_appears_only_with_attack_columns(audited) -> None:
    rows, section = audited
    for column in ATTACKS:
        assert f"fairness.site.{column}.accuracy.difference" in section.metrics
        # east has 40 images, 20 attacked: too few for robust accuracy, enough for accuracy.
        key = f"fairness.site.group.b_east_b.{column}.accuracy"
        assert section.metrics[key] is None
        assert section.notes[key] == "insufficient data (n = 20 < 30 attacked images)"
    assert "site.robust" in section.tables
    clean = rows.drop(columns=[c for c in rows.columns if c.startswith("adv.")])
    plain = fairness(clean, _context())
    assert not any("@" in key for key in plain.metrics)
    assert "site.robust" not in plain.tables


def test_fairness_sentences_name_the_configured_confidence_level(audited) -> None:
    """The headline and the gap warning give analyses.confidence_level, not a fixed 95%."""
    rows, _ = audited
    settings = FairnessConfig(n_boot=50).model_dump(mode="json")
    context = AnalysisContext(
        list(CLASSES), AnalysisConfig(confidence_level=0.9), 0, {}, fairness=settings
    )
    section = fairness(rows, context)
    headline = section.attributes[0]["headline"]
    warning = next(f.message for f in section.findings if f.severity == "warning")
    assert "(90% CI " in headline
    assert warning.count("(90% CI ") == 2  # the lowest group's interval and the gap's
    assert "95%" not in headline + warning


def test_count_formulas_match_metricframe_so_the_bootstrap_resamples_the_same_metrics(
    audited,
) -> None:
    rows, section = audited
    site = rows["attr.site"].replace("", MISSING).to_numpy()
    y, p = rows["label"].to_numpy(), rows["pred"].to_numpy()
    k = len(CLASSES)
    for group, key in GROUP_KEYS.items():
        mask = site == group
        counts = np.bincount(y[mask] * k + p[mask], minlength=k * k).reshape(k, k)
        rates = confusion_rates(counts)
        assert rates["accuracy"] == pytest.approx(np.mean(y[mask] == p[mask]), abs=TOL)
        if mask.sum() >= 30:
            prefix = f"fairness.site.group.{key}"
            assert rates["balanced_accuracy"] == pytest.approx(
                section.metrics[f"{prefix}.balanced_accuracy"], abs=TOL
            )
            assert rates["tpr"][0] == pytest.approx(
                section.metrics[f"{prefix}.class.cat.tpr"] or np.nan, abs=TOL, nan_ok=True
            )
    confidence = rows["confidence"].to_numpy()
    correct = (y == p).astype(int)
    bins = np.searchsorted(np.arange(1, 15) / 15, confidence, side="left")
    counts = np.zeros((2, 15))
    sums = np.zeros((2, 15))
    np.add.at(counts, (correct, bins), 1)
    np.add.at(sums, (correct, bins), confidence)
    mean = sums / np.maximum(counts, 1)
    assert ece_from_cells(counts, mean) == pytest.approx(
        expected_calibration_error(confidence, correct.astype(float), 15)[0], abs=TOL
    )


def test_interval_of_the_difference_agrees_with_fairlearns_own_bootstrap(samples_csv) -> None:
    rows = load_samples(samples_csv)
    rows = rows[rows["attr.site"].isin(["north", "south", "<b>east</b>"])].reset_index(drop=True)
    ours = fairness(rows, _context(n_boot=4000)).metrics
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score},
        y_true=rows["label"],
        y_pred=rows["pred"],
        sensitive_features=rows["attr.site"],
        n_boot=300,
        ci_quantiles=[0.025, 0.975],
        random_state=1,
    )
    low, high = (float(q.iloc[0]) for q in frame.difference_ci())
    assert ours["fairness.site.accuracy.difference_ci_low"] == pytest.approx(low, abs=0.03)
    assert ours["fairness.site.accuracy.difference_ci_high"] == pytest.approx(high, abs=0.03)


def test_multinomial_draws_resample_the_rows() -> None:
    counts = np.array([[30, 10], [5, 55]])
    draws = np.concatenate(list(multinomial_draws(counts, 2000, numpy_rng(0, "t"))))
    assert draws.shape == (2000, 2, 2)
    assert (draws.sum(axis=(1, 2)) == counts.sum()).all()
    assert draws.mean(axis=0) == pytest.approx(counts, rel=0.03)


def test_intersection_lists_every_combination_and_the_html_survives(audited) -> None:
    rows, _ = audited
    rows = rows.assign(**{"attr.dev": np.where(np.arange(len(rows)) % 3 == 0, "x", "y")})
    rows.loc[rows["attr.site"] == "tiny", "attr.dev"] = "y"  # tiny × x is empty
    section = fairness(rows, _context(intersect=True, groups=["site", "dev"]))
    assert [b["name"] for b in section.attributes] == ["site", "dev", "site × dev"]
    key = "fairness.site_x_dev.group.tiny_x_x"
    assert section.metrics[f"{key}.size"] == 0
    assert section.notes[f"{key}.accuracy"] == "insufficient data (n = 0 < 30 test images)"
    labels = [g["label"] for g in section.attributes[2]["groups"]]
    assert "<b>east</b> × x" in labels and len(labels) == 6 * 2


def test_a_missing_attribute_is_a_data_error_naming_it(audited) -> None:
    rows, _ = audited
    with pytest.raises(DataError, match=r"no attribute column 'sex'.*available: site"):
        fairness(rows, _context(groups=["site", "sex"]))
    section = next(e.obj for e in ANALYSES if e.name == "fairness")(rows, _context(enabled=False))
    assert section.metrics == {} and "fairness.enabled is false" in section.headline


# --- attributes from the data --------------------------------------------------------------


def test_stroke_tertiles_come_from_the_training_split_and_slant_has_a_sign() -> None:
    # Ink mass = k full pixels; train masses 1..9, test masses 10 and 0.
    images = np.zeros((11, 1, 4, 4), dtype=np.uint8)
    for i, mass in enumerate([*range(1, 10), 10, 0]):
        images[i, 0].flat[:mass] = 255
    split = np.array(["train"] * 9 + ["test"] * 2, dtype=object)
    attributes, definitions = digit_attributes(images, split)
    low, high = np.quantile(np.arange(1, 10), [1 / 3, 2 / 3])
    assert f"thin < {low:.1f} ≤ medium < {high:.1f} ≤ thick" in definitions["stroke"]
    assert list(attributes["stroke"][:9]) == ["thin"] * 3 + ["medium"] * 3 + ["thick"] * 3
    assert list(attributes["stroke"][9:]) == ["thick", "thin"]  # test never moves the cuts
    assert attributes["slant"][10] == MISSING  # a blank image has no slant
    # "/" leans right (its top is to the right), "\" leans left.
    forward, backward = np.zeros((2, 1, 8, 8), dtype=np.uint8)
    for r in range(8):
        forward[0, r, 7 - r] = backward[0, r, r] = 255
    assert slant(np.stack([forward, backward])) == pytest.approx([1.0, -1.0])


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), shade).save(path)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_csv_manifest_with_attribute_columns_reaches_the_sample_table(tmp_path) -> None:
    rows = []
    for i in range(40):
        _png(tmp_path / f"i{i}.png", 3 * i)
        split = "test" if i % 2 else "train"
        rows.append([f"i{i}.png", str(i % 2), split, "" if i % 10 == 1 else f"s{i % 3}"])
    manifest = _csv(tmp_path / "m.csv", ["path", "label", "split", "site"], rows)
    data = prepare_data(DataConfig(dataset=str(manifest)), seed=0)
    assert data.summary["attribute_counts"]["test"]["site"][MISSING] == 4
    test = data.view("test")
    table = new_table("baseline", test.ids, test.labels, data.classes, test.attributes)
    table = table.assign(pred=table["label"], confidence=0.9, **{"proba.0": 0.5, "proba.1": 0.5})
    ctx = AnalysisContext(data.classes, AnalysisConfig(), 0, data.summary)
    ctx.fairness = FairnessConfig(min_group_size=2).model_dump(mode="json")
    section = fairness(table, ctx)
    assert section.metrics["fairness.site.group.missing.size"] == 4
    assert section.attributes[0]["definition"] == "a column of the CSV manifest"


def test_a_folder_joins_a_metadata_csv_on_path_or_id(tmp_path) -> None:
    root = tmp_path / "folder"
    for label in ("a", "b"):
        for i in range(10):
            _png(root / label / f"{i}.png", 20 * i + (label == "b"))
    rows = [[f"{label}/{i}.png", "north" if i < 5 else "south"] for label in "ab" for i in range(9)]
    meta = _csv(tmp_path / "meta.csv", ["path", "site"], [*rows, ["c/9.png", "west"]])
    data = prepare_data(DataConfig(dataset=str(root)), seed=0, metadata=meta)
    site = dict(zip(data.imageset.ids, data.imageset.attributes["site"], strict=True))
    assert site["a/0.png"] == "north" and site["b/8.png"] == "south"
    assert site["a/9.png"] == site["b/9.png"] == MISSING  # no row: the (missing) group
    assert any("1 row(s) of meta.csv name no image" in n for n in data.summary["notes"])
    assert "from the metadata file" in data.summary["attribute_definitions"]["site"]

    by_id = _csv(tmp_path / "by_id.csv", ["id", "site"], [["./a/1.png", "x"]])
    data = prepare_data(DataConfig(dataset=str(root)), seed=0, metadata=by_id)
    assert data.imageset.attributes["site"].tolist().count("x") == 1

    twice = _csv(tmp_path / "twice.csv", ["path", "site"], [["a/1.png", "x"], ["a/1.png", "y"]])
    with pytest.raises(DataError, match=r"twice.csv line 3: path 'a/1.png' also on line 2"):
        prepare_data(DataConfig(dataset=str(root)), seed=0, metadata=twice)
    nothing = _csv(tmp_path / "none.csv", ["id", "site"], [["zzz", "x"]])
    with pytest.raises(DataError, match=r"no row's id matches an image"):
        prepare_data(DataConfig(dataset=str(root)), seed=0, metadata=nothing)


# --- the command line ----------------------------------------------------------------------


def test_a_missing_or_empty_attribute_exits_3_before_training(tmp_path) -> None:
    result = cli("run", "--dataset", "digits", "--groups", "stroke,site", "--out", tmp_path / "o")
    assert result.status == 3, result
    assert result.err.count("\n") == 1
    assert "no attribute column 'site' (--groups); available: stroke, slant" in result.err
    result = cli("run", "--dataset", "digits", "--rebalance-groups", "site", "--out", tmp_path)
    assert result.status == 3 and "'site' (--rebalance-groups)" in result.err
    rows = []
    for i in range(20):
        _png(tmp_path / f"i{i}.png", 10 * i)
        rows.append([f"i{i}.png", str(i % 2), ""])
    manifest = _csv(tmp_path / "m.csv", ["path", "label", "site"], rows)
    result = cli("run", "--dataset", manifest, "--out", tmp_path / "o")
    assert result.status == 3, result
    assert "attribute 'site' is empty or missing on every test image" in result.err
    assert not (tmp_path / "o").exists()


FAST_RUN = """\
seed: 0
data: {dataset: digits}
train: {epochs: 1}
analyses: {bootstrap: 50}
robustness: {enabled: false}
corruptions: {enabled: false}
harden: {method: none}
explain: {enabled: false}
fairness: {n_boot: 50}
"""


def test_digits_with_metadata_escapes_html_in_groups_and_keeps_json_whole(tmp_path) -> None:
    """Built-in attributes, a metadata join on ids, an intersection and a gate on a
    fairness key checked before training, in one tiny run."""
    config = tmp_path / "audit.yaml"
    config.write_text(FAST_RUN)
    hostile = "<script>alert(1)</script>"
    ids = [f"digits/{i:04d}" for i in range(1797)]
    meta = _csv(
        tmp_path / "meta.csv",
        ["id", "scanner"],
        [[i, hostile if n % 3 == 0 else "flatbed"] for n, i in enumerate(ids) if n % 50],
    )
    out = tmp_path / "out"
    result = cli(
        "run",
        "--config",
        config,
        "--metadata",
        meta,
        "--groups",
        "stroke,scanner",
        "--intersect",
        "--gate",
        "fairness.stroke.accuracy.difference<=1",
        "--out",
        out,
        "--quiet",
    )
    assert result.status == 0, result
    report = json.loads((out / "report.json").read_text())
    section = next(s for s in report["models"]["baseline"]["sections"] if s["name"] == "fairness")
    blocks = {b["name"]: b for b in section["attributes"]}
    assert set(blocks) == {"stroke", "scanner", "stroke × scanner"}
    assert [g["label"] for g in blocks["scanner"]["groups"]] == [hostile, "flatbed", MISSING]
    assert "thin <" in blocks["stroke"]["definition"]
    html = (out / "report.html").read_text()
    assert hostile not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for text in ("Accuracy per group of stroke", "<strong>Groups:</strong> built in", "thin"):
        assert text in html, text
    assert "Not checked.</strong> subgroup" not in html

    # samples.csv carries the attributes; recompute one group's accuracy from it.
    samples = load_samples(out / "samples.csv")
    thin = samples[samples["attr.stroke"] == "thin"]
    metrics = report["models"]["baseline"]["metrics"]
    assert metrics["fairness.stroke.group.thin.accuracy"] == pytest.approx(
        (thin["pred"] == thin["label"]).mean(), abs=TOL
    )


def test_rebalancing_a_rare_background_shows_the_lowest_group_before_and_after(tmp_path) -> None:
    config = tmp_path / "audit.yaml"
    config.write_text(
        "data:\n  dataset: shapes\n  split: {train: 0.6, val: 0.1, test: 0.3}\n"
        "  shapes: {n_per_class: 40, size: 16, background_probs: [0.3, 0.3, 0.3, 0.1]}\n"
        "train: {epochs: 2}\nanalyses: {bootstrap: 0}\nrobustness: {enabled: false}\n"
        "corruptions: {enabled: false}\n"
        "harden: {method: none}\nexplain: {enabled: false}\nfairness: {n_boot: 20}\n"
    )
    out = tmp_path / "out"
    result = cli(
        "run",
        "--config",
        config,
        "--rebalance-groups",
        "background",
        "--min-group-size",
        "3",
        "--out",
        out,
        "--quiet",
    )
    assert result.status == 0, result
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"baseline", "rebalanced"}
    rebalanced = report["models"]["rebalanced"]
    assert "group-balanced sampling over 'background'" in rebalanced["card"]["source"]
    assert rebalanced["metrics"]["fairness.background.group.gray.size"] >= 3
    assert (out / "rebalanced.safetensors").is_file()
    html = (out / "report.html").read_text()
    assert "Baseline vs rebalanced" in html
    assert "the lowest group&#39;s accuracy went from" in html
    for group in ("blue", "green", "red", "gray"):
        assert f"fairness.background.group.{group}.accuracy" in html
    assert "Group-balanced retraining over background" in (out / "summary.md").read_text()
