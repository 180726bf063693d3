"""The shift set (``--shift-dataset``): its interval, its rows in the sample table, its
analysis beside an unchanged test-split audit, its keys in the dry run, and its refusals.
The example's run (tests/test_examples.py) checks its accuracy against samples.csv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditclf.analyses import analyse
from auditclf.analyses.bootstrap import newcombe_difference
from auditclf.config import AuditConfig, DataConfig, ShiftConfig
from auditclf.data import prepare_data
from auditclf.data.shift import prepare_shift
from auditclf.dryrun import expected_metric_keys
from auditclf.errors import DataError, UsageError
from auditclf.evidence import load_samples, new_table, save_samples, split_sets
from auditclf.gates import check_gate_keys, gates_from_config
from auditclf.keys import shift_set

from .conftest import cli

CONFIG = AuditConfig.model_validate(
    {
        "data": {"dataset": "digits"},
        "analyses": {"bootstrap": 50},
        "robustness": {"enabled": False},
        "explain": {"enabled": False},
        "corruptions": {"enabled": False},
    }
)


def test_newcombe_interval_matches_the_published_examples():
    """Newcombe (1998), Table II: 56/70 − 48/80 and 9/10 − 3/10, method 10."""
    assert newcombe_difference(56, 70, 48, 80, 0.95) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert newcombe_difference(9, 10, 3, 10, 0.95) == pytest.approx((0.1705, 0.8090), abs=1e-4)
    assert all(np.isnan(newcombe_difference(0, 0, 1, 2, 0.95)))


@pytest.fixture(scope="module")
def digits():
    return prepare_data(CONFIG.data, seed=0)


def _predicted(table: pd.DataFrame, right: float, seed: int) -> pd.DataFrame:
    """``table`` with the clean probe's columns: a share ``right`` of predictions correct."""
    rng = np.random.default_rng(seed)
    labels = table["label"].to_numpy()
    wrong = rng.random(len(labels)) >= right
    pred = np.where(wrong, (labels + 1) % 10, labels)
    proba = np.full((len(labels), 10), 0.02)
    proba[np.arange(len(labels)), pred] = 0.82
    columns = {"pred": pred, "pred_name": pred.astype(str), "correct": (~wrong).astype(int)}
    columns |= {"confidence": proba.max(axis=1), "margin": np.where(wrong, -1.0, 1.0)}
    columns |= {f"proba.{k}": proba[:, k] for k in range(10)}
    return table.assign(**columns)


def _tables(digits, shift_right: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test rows alone, and with 300 shift rows of another attribute appended."""
    test = digits.view("test")
    rows = _predicted(
        new_table("baseline", test.ids, test.labels, digits.classes, test.attributes), 0.9, seed=1
    )
    labels = np.arange(300) % 10
    extra = pd.DataFrame({"scanner": np.where(labels % 2, "B", "C")})
    shifted = new_table(
        "baseline",
        np.arange(300).astype(str),
        labels,
        digits.classes,
        extra,
        images=shift_set("other"),
    )
    return rows, pd.concat([rows, _predicted(shifted, shift_right, seed=2)], ignore_index=True)


def test_shift_rows_change_no_test_metric_and_get_their_own(digits, tmp_path):
    alone, both = _tables(digits, shift_right=0.6)
    _, before, _, _ = analyse(alone, CONFIG, digits.summary, {})
    sections, after, _, findings = analyse(both, CONFIG, digits.summary, {})
    shift_keys = {k for k in after if k.startswith("shift.")}
    assert {k: after[k] for k in after if k not in shift_keys} == before
    shifted = both[both["set"] == "shift.other"]
    assert after["shift.other.accuracy"] == pytest.approx(shifted["correct"].mean(), abs=1e-9)
    assert after["shift.other.samples"] == 300
    assert after["shift.other.accuracy.gap"] == pytest.approx(
        before["performance.accuracy"] - after["shift.other.accuracy"], abs=1e-12
    )
    assert after["shift.other.accuracy.gap.ci_low"] > 0  # 90% against 60%: a finding
    assert any(f["metric"] == "shift.other.accuracy.gap" for f in findings)
    b = shifted["attr.scanner"] == "B"
    assert after["shift.other.group.scanner.b.accuracy"] == shifted["correct"][b].mean()
    assert "shift.other.class.3.recall.ci_low" in after
    # samples.csv: the same metrics read back (the test rows' empty shift attribute dropped)
    save_samples(both, tmp_path / "samples.csv")
    _, reread, _, _ = analyse(load_samples(tmp_path / "samples.csv"), CONFIG, digits.summary, {})
    assert reread == after


def test_a_shift_set_as_good_as_the_test_split_is_no_finding(digits):
    _, both = _tables(digits, shift_right=0.9)
    _, metrics, _, findings = analyse(both, CONFIG, digits.summary, {})
    assert (
        metrics["shift.other.accuracy.gap.ci_low"] < 0 < metrics["shift.other.accuracy.gap.ci_high"]
    )
    assert not [f for f in findings if f["section"] == "shift"]


def test_a_table_without_a_set_column_is_all_test_rows_and_a_strange_set_is_refused(digits):
    alone, both = _tables(digits, shift_right=0.9)
    test, shifts = split_sets(alone.drop(columns="set"), "samples.csv")
    assert len(test) == len(alone) and shifts == {}
    test, shifts = split_sets(both, "samples.csv")
    assert list(shifts) == ["other"] and "attr.scanner" not in test.columns
    with pytest.raises(DataError, match="samples.csv: column 'set': 'train'"):
        split_sets(both.assign(set="train"), "samples.csv")


def _folder(root, classes, size=8) -> None:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((size, size), 40 * i, dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / c / f"{i}.png")


def test_the_dry_run_lists_the_shift_keys_so_gates_on_them_are_accepted(digits, tmp_path):
    _folder(tmp_path / "Scanner B", digits.classes, size=12)  # resized to 8×8, named by folder
    shift = prepare_shift(
        ShiftConfig(dataset=str(tmp_path / "Scanner B")),
        CONFIG.data,
        digits.classes,
        digits.input_shape,
        seed=0,
    )
    assert shift.name == "scanner_b" and shift.view.images.shape == (30, 1, 8, 8)
    summary = {**digits.summary, "shift": shift.summary}
    config = CONFIG.model_copy(
        update={"harden": CONFIG.harden.model_copy(update={"method": "pgd"})}
    )
    keys = expected_metric_keys(config, summary)
    assert {"shift.scanner_b.accuracy.gap", "hardened.shift.scanner_b.ece.ci_high"} <= keys
    check_gate_keys(gates_from_config(["shift.scanner_b.accuracy >= 0.7"]), keys)
    with pytest.raises(UsageError, match="closest: shift.scanner_b.accuracy"):
        check_gate_keys(gates_from_config(["shift.scanner-b.accuracy >= 0.7"]), keys)


def test_a_shift_set_with_other_classes_exits_3_before_training(tmp_path):
    _folder(tmp_path / "other", ["0", "1", "2"])
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--shift-dataset",
        tmp_path / "other",
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert result.status == 3, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert str(tmp_path / "other") in result.err and "classes" in result.err
    assert not (tmp_path / "out").exists()


def test_a_built_in_shift_set_of_another_size_is_refused():
    mnist = DataConfig(dataset="mnist5k")
    with pytest.raises(DataError, match="images are 1×8×8 .* 1×28×28; a built-in set is not"):
        prepare_shift(
            ShiftConfig(dataset="digits"), mnist, [str(d) for d in range(10)], (1, 28, 28), seed=0
        )
