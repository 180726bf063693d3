"""The corruption probe and analysis: numbers recomputed from the table, a hand table with
known answers, the sanity checks (JUnit, verdict), the block size, mCE and the dry run."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from auditclf.analyses.base import AnalysisContext
from auditclf.analyses.corruption import corruption, reference_errors
from auditclf.catalog import names
from auditclf.config import AnalysisConfig, load_config
from auditclf.corruptions import CORRUPTIONS, corrupt, severity_table
from auditclf.data import prepare_data
from auditclf.dryrun import expected_metric_keys
from auditclf.gates import decide_verdict, evaluate_gates, gates_from_config
from auditclf.keys import corruption_column
from auditclf.pipeline import PhaseTimer, audit_model, build_model
from auditclf.probes.base import ProbeContext
from auditclf.probes.clean import clean_probe
from auditclf.probes.corruption import corruption_probe, image_seeds
from auditclf.report.junit import render_junit
from auditclf.results import AuditResult, ModelResult, Verdict
from tests.conftest import MINIMAL_CONFIG, cli
from tests.test_analyses import data_summary, sample_table

SMALL = {
    "data": {"dataset": "digits"},
    "train": {"epochs": 3},
    "analyses": {"bootstrap": 100},
    "robustness": {"enabled": False},
    "explain": {"enabled": False},
    "fairness": {"enabled": False},
    "harden": {"method": "none"},
    "corruptions": {"samples": 60, "names": ["gaussian_noise", "contrast", "rotate", "jpeg"]},
}


@pytest.fixture(scope="module")
def audited():
    """A basic CNN trained on digits and its audit with four corruptions on 60 images."""
    config = load_config(None, SMALL)
    data = prepare_data(config.data, seed=0)
    device = torch.device("cpu")
    prepared, _ = build_model(config, data, device, progress=False, timer=PhaseTimer())
    result, table = audit_model(
        "baseline", prepared, None, data, config, device, PhaseTimer(), debug=True
    )
    return config, data, prepared, result, table


def test_numbers_are_the_tables_and_the_checks_pass(audited):
    config, _, _, result, table = audited
    metrics = result.metrics
    rows = table[table["corrupted"] == 1]
    assert len(rows) == metrics["corruption.samples"] == 60
    assert table.loc[table["corrupted"] == 0, corruption_column("jpeg", 1, "pred")].isna().all()
    per_severity = []
    for severity in config.corruptions.severities:
        correct = rows[corruption_column("contrast", severity, "pred")] == rows["label"]
        assert metrics[f"corruption.contrast@{severity}.accuracy"] == correct.mean()
        per_severity.append(correct.mean())
    assert metrics["corruption.contrast.accuracy"] == pytest.approx(np.mean(per_severity))
    low, high = (
        metrics["corruption.contrast.accuracy.ci_low"],
        metrics["corruption.contrast.accuracy.ci_high"],
    )
    assert low <= metrics["corruption.contrast.accuracy"] <= high
    means = [metrics[f"corruption.{n}.accuracy"] for n in config.corruptions.names]
    assert metrics["corruption.mean.accuracy"] == pytest.approx(np.mean(means))
    assert metrics["corruption.worst.accuracy"] == min(means)
    flips = np.mean(
        [
            rows[corruption_column("rotate", s, "pred")] != rows["pred"]
            for s in config.corruptions.severities
        ]
    )
    assert metrics["corruption.rotate.flip_rate"] == pytest.approx(flips)
    assert metrics["corruption.reliable"] == 1
    checks = [k for k in metrics if k.startswith("corruption.check.")]
    assert len(checks) == 4 and all(metrics[k] == 1 for k in checks)
    # severity 5 of contrast (factor 0.05) must hurt a model trained on clean digits
    assert metrics["corruption.contrast@5.accuracy"] < metrics["corruption.clean_accuracy"]


def _probe(audited, batch_size: int) -> pd.DataFrame:
    config, data, prepared, _, _ = audited
    cfg = config.corruptions.model_copy(update={"batch_size": batch_size, "gallery": False})
    test = data.view("test")
    ctx = ProbeContext(
        model=prepared.adapter,
        test=test,
        classes=data.classes,
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        corruptions=cfg,
    )
    table = pd.DataFrame({"label": test.labels})
    return corruption_probe(ctx, clean_probe(ctx, table))


def test_no_number_depends_on_the_block_size(audited):
    table = audited[4]
    columns = [c for c in table.columns if c.startswith("cor.") and "batch" not in c]
    small = _probe(audited, 7)
    pd.testing.assert_frame_equal(small[columns], table[columns])


def test_the_gallery_shows_the_probes_corruption_of_that_image(audited):
    config, data, prepared, result, _ = audited
    gallery = result.artifacts["corruption_gallery"]
    test = data.view("test")
    row = list(test.ids).index(gallery["sample_id"])
    x = torch.from_numpy(np.asarray(test.images[row : row + 1])).float() / 255
    seed = image_seeds(0, [gallery["sample_id"]])
    images = result.arrays["corruption.gallery"]
    assert images.shape[:2] == (4, 4)  # corruptions × (clean, severities 1, 3, 5)
    expected = corrupt(x, "rotate", 3, seed)
    assert np.array_equal(images[2, 2], expected[0].numpy())


# --- the analysis on a hand table ------------------------------------------------------


def _hand_table(*, severity0_pred=None) -> pd.DataFrame:
    """4 images of classes [0, 1, 2, 0], all right when clean; fog at severities 1 and 2:
    severity 1 gets images 0 and 1 wrong, severity 2 only image 0 (accuracy rises by one
    image: within sampling error), each wrong answer at confidence 0.9 (clean 0.6)."""
    labels = [0, 1, 2, 0]
    proba = [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2]]
    table = sample_table(labels, proba)
    table["corrupted"] = 1.0
    columns = {
        corruption_column("fog", 1, "pred"): [1, 2, 2, 0],
        corruption_column("fog", 1, "confidence"): [0.9, 0.9, 0.5, 0.5],
        corruption_column("fog", 2, "pred"): [2, 1, 2, 0],
        corruption_column("fog", 2, "confidence"): [0.9, 0.5, 0.5, 0.5],
        "cor.check.severity0_pred": severity0_pred or labels,
        "cor.check.out_of_range": [0, 0, 0, 0],
        "cor.check.batch_confidence_diff": [0.0, 0.0, np.nan, np.nan],
        "cor.check.batch_pred_changed": [0, 0, np.nan, np.nan],
    }
    return table.assign(**{k: np.asarray(v, dtype=float) for k, v in columns.items()})


def _context() -> AnalysisContext:
    summary = data_summary(dict.fromkeys(["cat", "dog", "bird"], 10))
    return AnalysisContext(
        ["cat", "dog", "bird"], AnalysisConfig(bootstrap=0, ece_bins=10), 0, summary
    )


def test_hand_table_known_answers():
    section = corruption(_hand_table(), _context())
    m = section.metrics
    assert m["corruption.fog@1.accuracy"] == 0.5 and m["corruption.fog@2.accuracy"] == 0.75
    assert m["corruption.fog.accuracy"] == 0.625
    assert m["corruption.mean.relative_drop"] == pytest.approx(1 - 0.625 / 1.0)
    assert m["corruption.fog.flip_rate"] == 3 / 8
    # ECE over the 8 pooled answers: bin 0.5 holds 5 right at 0.5 → |1 − 0.5| × 5/8;
    # bin 0.9 holds 3 wrong at 0.9 → 0.9 × 3/8
    assert m["corruption.fog.ece"] == pytest.approx(0.5 * 5 / 8 + 0.9 * 3 / 8)
    assert m["corruption.fog.class.cat.accuracy"] == 0.5  # images 0 and 3: 0/2 and 2/2
    assert m["corruption.reliable"] == 1 and m["corruption.check.accuracy_falls_with_severity"] == 1
    confident = [f for f in section.findings if "more confident" in f.message]
    assert not confident  # severity 2 mean confidence 0.6 equals clean: not more confident


def test_a_failed_blocking_check_makes_gated_corruption_numbers_unreliable():
    section = corruption(_hand_table(severity0_pred=[0, 1, 2, 1]), _context())
    assert section.metrics["corruption.reliable"] == 0
    assert section.metrics["corruption.check.severity_zero_is_clean"] == 0
    assert section.headline.startswith("UNRELIABLE")
    model = ModelResult(
        card={}, metrics=section.metrics, notes={}, findings=[], sections=[section.to_dict()]
    )
    gates = gates_from_config(["corruption.mean.accuracy >= 0.1"])
    outcomes = evaluate_gates(gates, section.metrics, {})
    assert decide_verdict({"baseline": model}, outcomes) == Verdict.UNRELIABLE
    gates = gates_from_config(["performance.accuracy >= 0.1"])
    assert (
        decide_verdict({"baseline": model}, evaluate_gates(gates, {"performance.accuracy": 1}, {}))
        == Verdict.PASS
    )


def test_a_rise_with_severity_is_a_finding_not_a_failure():
    n = 60
    table = sample_table([0] * n, [[0.9, 0.05, 0.05]] * n)
    right, wrong = np.zeros(n), np.ones(n)
    columns = {
        corruption_column("jpeg", 1, "pred"): wrong,  # every image wrong at severity 1,
        corruption_column("jpeg", 2, "pred"): right,  # every one right at severity 2
        corruption_column("jpeg", 1, "confidence"): np.full(n, 0.95),
        corruption_column("jpeg", 2, "confidence"): np.full(n, 0.9),
        "corrupted": np.ones(n),
        "cor.check.severity0_pred": right,
        "cor.check.out_of_range": right,
        "cor.check.batch_confidence_diff": right,
        "cor.check.batch_pred_changed": right,
    }
    section = corruption(table.assign(**columns), _context())
    assert section.metrics["corruption.check.accuracy_falls_with_severity"] == 0
    assert section.metrics["corruption.reliable"] == 1
    warnings = [f.message for f in section.findings if f.severity == "warning"]
    infos = [f.message for f in section.findings if f.severity == "info"]
    assert any("jpeg 1→2 (+60 images)" in m and "numbers stand" in m for m in infos)
    # more confident (0.95 at severity 1 … 0.9 at the top) while wrong: no warning at the
    # top severity, where it is right again
    assert not any("more confident" in w for w in warnings)


def test_junit_has_a_case_per_corruption_check_and_a_rise_is_a_warning(digits_run):
    result = AuditResult.load(digits_run / "report.json")
    section = next(s for s in result.models["baseline"].sections if s["name"] == "corruption")
    rows = section["tables"]["checks"]["rows"]
    assert [r[1] for r in rows] == ["pass"] * 4
    rows[-1][1] = "warn"  # as a rise with severity writes it
    xml = ET.fromstring(render_junit(result))
    cases = xml.findall(".//testcase[@classname='auditclf.sanity.baseline.corruption']")
    assert [c.get("name") for c in cases] == [r[0] for r in rows]
    assert cases[-1].find("skipped") is not None
    assert all(c.find("failure") is None and c.find("skipped") is None for c in cases[:-1])
    hardened = xml.findall(".//testcase[@classname='auditclf.sanity.hardened.corruption']")
    assert len(hardened) == 4


def test_mce_is_errors_relative_to_the_baseline():
    base = {
        "corruption.fog@1.accuracy": 0.9,
        "corruption.fog@2.accuracy": 0.7,
        "corruption.jpeg@1.accuracy": 0.8,
        "corruption.jpeg@2.accuracy": 0.8,
    }
    hard = {
        "corruption.fog@1.accuracy": 0.95,
        "corruption.fog@2.accuracy": 0.85,
        "corruption.jpeg@1.accuracy": 0.6,
        "corruption.jpeg@2.accuracy": 0.8,
    }
    out = reference_errors(base, hard)
    assert out["corruption.fog.ce"] == pytest.approx((0.05 + 0.15) / (0.1 + 0.3))
    assert out["corruption.jpeg.ce"] == pytest.approx((0.4 + 0.2) / (0.2 + 0.2))
    assert out["corruption.mce"] == pytest.approx((0.5 + 1.5) / 2)
    assert reference_errors(base, {}) == {}


def test_the_dry_run_lists_corruption_keys():
    config = load_config(None, {**SMALL, "harden": {"method": "pgd"}})
    data = prepare_data(config.data, seed=0)
    keys = expected_metric_keys(config, data.summary)
    assert "corruption.jpeg@3.accuracy" in keys and "corruption.mean.accuracy" in keys
    assert "hardened.corruption.mce" in keys and "corruption.mce" not in keys
    assert "corruption.fog.accuracy" not in keys  # not configured


def test_the_readme_severity_table_is_the_modules():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert names("corruption") == CORRUPTIONS  # the catalogue the config reads, in order
    for row in severity_table():
        at = row["pixels_at_side"].get(28)
        line = (
            f"| `{row['name']}` | {_show(row['values'][0])} → {_show(row['values'][-1])} | "
            f"{row['unit']} | {f'{at[0]} → {at[1]} px' if at else ''} | {row['channels']} |"
        )
        assert line in readme, line


def _show(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


@pytest.mark.parametrize(
    ("gate", "status"),
    [
        ("corruption.contrast@5.accuracy >= 0.999", 1),  # contrast 0.05 is not survived
        ("corruption.mean.accuracy >= 0.1", 0),
        ("corruption.fog.accuracy >= 0.1", 2),  # fog is not among the configured names
    ],
)
def test_gates_on_corruption_keys(digits_run, tmp_path, gate, status):
    config = tmp_path / "audit.yaml"
    config.write_text(
        MINIMAL_CONFIG.replace("corruptions:\n  enabled: false\n", "")
        + "data:\n  dataset: digits\ncorruptions:\n  samples: 40\n  names: [contrast, jpeg]\n"
    )
    result = cli(
        "run",
        "--config",
        config,
        "--checkpoint",
        digits_run / "model.safetensors",
        "--gate",
        gate,
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert result.status == status, result
    if status == 2:
        assert result.err.count("\n") == 1 and "corruption.fog.accuracy" in result.err
