"""Tests of the analyses (auditclf.analyses): hand-computed tables, invariances, failures.

Expected values are written as the arithmetic that produces them, from the
confusion matrix or the rows in the comment beside them.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from auditclf.analyses import ANALYSES, AnalysisContext, Section, run_analyses
from auditclf.analyses.bootstrap import clopper_pearson, recall_posterior_draws, resampled_rows
from auditclf.analyses.calibration import (
    bin_index,
    calibration,
    ece_bootstrap,
    expected_calibration_error,
)
from auditclf.analyses.imbalance import imbalance
from auditclf.analyses.performance import performance
from auditclf.config import (
    AnalysisConfig,
    CorruptionConfig,
    ExplainConfig,
    RobustnessConfig,
    parse_eps,
)
from auditclf.data.splits import SPLITS
from auditclf.device_defaults import section_for_device
from auditclf.keys import deploy_column
from auditclf.probes.attacks import stand_in_columns
from auditclf.probes.attributions import stand_in_columns as stand_in_explanations
from auditclf.probes.corruption import stand_in_columns as stand_in_corruptions
from auditclf.probes.deploy import stand_in_columns as stand_in_deploy
from auditclf.registry import Entry

METRIC_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_@/\-]+)+$")
CLASSES = ["cat", "dog", "bird"]

# The hand table: 8 rows, 3 classes. Predictions are the argmax of each row.
# Confusion (rows true, columns predicted): cat [2, 1, 0], dog [0, 3, 0], bird [1, 0, 1].
HAND_LABELS = [0, 0, 0, 1, 1, 1, 2, 2]
HAND_PROBA = [
    [0.7, 0.2, 0.1],  # cat -> cat
    [0.5, 0.3, 0.2],  # cat -> cat
    [0.3, 0.6, 0.1],  # cat -> dog, cat second: a top-2 hit
    [0.15, 0.8, 0.05],  # dog -> dog
    [0.1, 0.9, 0.0],  # dog -> dog
    [0.2, 0.7, 0.1],  # dog -> dog
    [0.1, 0.3, 0.6],  # bird -> bird
    [0.5, 0.4, 0.1],  # bird -> cat, bird last: a top-2 miss
]


def sample_table(labels, proba, classes: list[str] = CLASSES) -> pd.DataFrame:
    """A sample table for one model; pred is the argmax of ``proba``."""
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame(
        {
            "model": "baseline",
            "sample_id": [f"img{i}" for i in range(len(labels))],
            "label": labels,
            "label_name": names[labels],
            "pred": pred,
            "pred_name": names[pred],
            "correct": (pred == labels).astype(np.int64),
            "confidence": proba.max(axis=1),
            "margin": 0.0,  # no analysis reads it
        }
    )
    for k in range(proba.shape[1]):
        table[f"proba.{k}"] = proba[:, k]
    return table


def random_table(n: int, classes: list[str], *, seed: int) -> pd.DataFrame:
    """``n`` rows with noisy but better-than-chance predictions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), labels] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return sample_table(labels, proba, classes)


def data_summary(
    train: dict[str, int],
    *,
    within: dict[str, int] | None = None,
    across: dict[str, int] | None = None,
    label_conflicts: int = 0,
) -> dict:
    """A data_summary as prepare_data builds it, with 2 val and 1 test image per class."""
    distribution = {
        "train": dict(train),
        "val": dict.fromkeys(train, 2),
        "test": dict.fromkeys(train, 1),
    }
    return {
        "split_given": False,
        "audited": "the test split is audited",
        "split_counts": {s: sum(distribution[s].values()) for s in SPLITS},
        "class_distribution": distribution,
        "duplicates": {
            "within": dict.fromkeys(SPLITS, 0) | (within or {}),
            "across": {"train-val": 0, "train-test": 0, "val-test": 0} | (across or {}),
            "label_conflicts": label_conflicts,
            "examples": {},
        },
    }


def context(
    classes: list[str] = CLASSES, *, seed: int = 0, summary: dict | None = None, **config
) -> AnalysisContext:
    summary = summary or data_summary(dict.fromkeys(classes, 10))
    return AnalysisContext(list(classes), AnalysisConfig(**config), seed, summary)


def exactly(expected):
    """Equal up to float rounding of the arithmetic written in the test."""
    return pytest.approx(expected, rel=0, abs=1e-12)


# --- performance -------------------------------------------------------------------------


def test_performance_of_the_hand_table() -> None:
    section = performance(sample_table(HAND_LABELS, HAND_PROBA), context(bootstrap=0))
    # Recall = diagonal / row sum: cat 2/3, dog 3/3, bird 1/2.
    # Precision = diagonal / column sum: cat 2/3, dog 3/4, bird 1/1.
    # F1 = 2PR / (P + R): cat 2/3, dog 2(3/4)(1) / (7/4) = 6/7, bird 2(1)(1/2) / (3/2) = 2/3.
    expected = {
        "performance.accuracy": (2 + 3 + 1) / 8,
        "performance.balanced_accuracy": (2 / 3 + 3 / 3 + 1 / 2) / 3,
        "performance.f1_macro": (2 / 3 + 6 / 7 + 2 / 3) / 3,
        "performance.f1_weighted": (3 * 2 / 3 + 3 * 6 / 7 + 2 * 2 / 3) / 8,
        # Top-2 misses only the last row; k = 3 is not reported for 3 classes (always 1).
        "performance.top_k_accuracy@2": 7 / 8,
        "performance.worst_class_recall": 1 / 2,
        "performance.class.cat.precision": 2 / 3,
        "performance.class.cat.recall": 2 / 3,
        "performance.class.cat.f1": 2 / 3,
        "performance.class.cat.support": 3.0,
        "performance.class.dog.precision": 3 / 4,
        "performance.class.dog.recall": 3 / 3,
        "performance.class.dog.f1": 6 / 7,
        "performance.class.dog.support": 3.0,
        "performance.class.bird.precision": 1 / 1,
        "performance.class.bird.recall": 1 / 2,
        "performance.class.bird.f1": 2 / 3,
        "performance.class.bird.support": 2.0,
    }
    # approx on a dict also fails on a missing or extra key.
    points = {k: v for k, v in section.metrics.items() if ".ci_" not in k}
    assert points == exactly(expected)
    # With bootstrap=0 only the exact intervals remain: accuracy 6 of 8, bird 1 of 2, ...
    accuracy_ci = (
        section.metrics["performance.accuracy.ci_low"],
        section.metrics["performance.accuracy.ci_high"],
    )
    assert accuracy_ci == exactly(clopper_pearson(6, 8, 0.95))
    bird_low = section.metrics["performance.class.bird.recall.ci_low"]
    assert bird_low == exactly(clopper_pearson(1, 2, 0.95)[0])
    assert section.notes == {}
    confusion = section.figures["confusion"]
    assert confusion["labels"] == CLASSES
    assert confusion["counts"] == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert confusion["normalised"] == [
        exactly([2 / 3, 1 / 3, 0]),
        exactly([0, 3 / 3, 0]),
        exactly([1 / 2, 0, 1 / 2]),
    ]
    # Recall more than 5 points below accuracy (0.75): cat (0.667) and bird (0.5).
    assert [(f.severity, f.metric) for f in section.findings] == [
        ("warning", "performance.class.cat.recall"),
        ("warning", "performance.class.bird.recall"),
    ]
    assert "most often confused with 'cat' (1 of 2)" in section.findings[1].message


def test_a_class_never_predicted_has_null_precision_with_a_reason() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    proba = [
        [0.8, 0.2, 0.0],  # cat -> cat
        [0.6, 0.4, 0.0],  # cat -> cat
        [0.3, 0.7, 0.0],  # dog -> dog
        [0.1, 0.9, 0.0],  # dog -> dog
        [0.6, 0.3, 0.1],  # bird -> cat
        [0.2, 0.7, 0.1],  # bird -> dog
    ]
    section = performance(sample_table(labels, proba), context(bootstrap=0))
    metrics = section.metrics
    assert metrics["performance.class.bird.precision"] is None
    assert section.notes["performance.class.bird.precision"] == "class 'bird' was never predicted"
    assert metrics["performance.class.bird.recall"] == 0 / 2
    # F1 = 2TP / (2TP + FP + FN) is defined (0) when only precision is not.
    assert metrics["performance.class.bird.f1"] == 0 / (0 + 0 + 2)
    assert metrics["performance.class.cat.precision"] == exactly(2 / 3)
    # cat and dog: P 2/3, R 1, F1 = 2*2 / (2*2 + 1 + 0) = 4/5; bird's F1 (0) counts in the mean.
    assert metrics["performance.f1_macro"] == exactly((4 / 5 + 4 / 5 + 0) / 3)
    never = [f for f in section.findings if "never predicted" in f.message]
    assert [(f.severity, f.message) for f in never] == [
        ("warning", "class 'bird' is never predicted on the test split")
    ]


def test_a_class_without_test_images_is_left_out_of_recall_means() -> None:
    # bird has no test images and is never predicted: recall, precision and F1 are all 0/0.
    labels = [0, 0, 1, 1]
    proba = [[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0]]
    section = performance(sample_table(labels, proba), context(bootstrap=0))
    metrics = section.metrics
    for part in ("precision", "recall", "f1"):
        assert metrics[f"performance.class.bird.{part}"] is None
        assert section.notes[f"performance.class.bird.{part}"]
    assert section.notes["performance.class.bird.recall"] == "class 'bird' has no test images"
    assert metrics["performance.class.bird.support"] == 0.0
    assert metrics["performance.balanced_accuracy"] == exactly((1 / 2 + 2 / 2) / 2)
    assert metrics["performance.worst_class_recall"] == exactly(1 / 2)


# --- calibration -------------------------------------------------------------------------

# The hand table's (confidence, correct) pairs: (0.7, 1) (0.5, 1) (0.6, 0) (0.8, 1)
# (0.9, 1) (0.7, 1) (0.6, 1) (0.5, 0). ECE = Σ_bins |Σ(correct − confidence)| / N.
HAND_ECE = {
    # One bin per distinct confidence: 0.5: 1 − 1.0; 0.6: 1 − 1.2; 0.7: 2 − 1.4; 0.8; 0.9.
    15: ((0.0 + 0.2 + 0.6 + 0.2 + 0.1) / 8, max(0.0, 0.2 / 2, 0.6 / 2, 0.2, 0.1)),
    # (0.4, 0.6]: 0.5 0.5 0.6 0.6, 2 right; (0.6, 0.8]: 0.7 0.7 0.8, 3 right; (0.8, 1]: 0.9.
    5: ((0.2 + 0.8 + 0.1) / 8, max(0.2 / 4, 0.8 / 3, 0.1 / 1)),
    # (0, 0.5]: the two 0.5s (the edge belongs to the lower bin), 1 right: gap 0;
    # (0.5, 1]: the other six, 5 right, confidences sum to 4.3.
    2: ((0.0 + 0.7) / 8, max(0.0, 0.7 / 6)),
}


@pytest.mark.parametrize("bins", sorted(HAND_ECE))
def test_calibration_of_the_hand_table(bins: int) -> None:
    section = calibration(
        sample_table(HAND_LABELS, HAND_PROBA), context(ece_bins=bins, bootstrap=0)
    )
    ece, mce = HAND_ECE[bins]
    # Brier per row, Σ_k (p_k − [k = y])²: 0.09+0.04+0.01, 0.25+0.09+0.04, 0.49+0.36+0.01,
    # 0.0225+0.04+0.0025, 0.01+0.01+0, 0.04+0.09+0.01, 0.01+0.09+0.16, 0.25+0.16+0.81.
    brier = (0.14 + 0.38 + 0.86 + 0.065 + 0.02 + 0.14 + 0.26 + 1.22) / 8
    true_class_proba = [0.7, 0.5, 0.3, 0.8, 0.9, 0.7, 0.6, 0.1]
    nll = -sum(math.log(p) for p in true_class_proba) / 8
    assert section.metrics == exactly(
        {
            "performance.ece": ece,
            "performance.mce": mce,
            "performance.brier": brier,
            "performance.nll": nll,
            "performance.mean_confidence": (0.7 + 0.5 + 0.6 + 0.8 + 0.9 + 0.7 + 0.6 + 0.5) / 8,
        }
    )
    reliability = section.figures["reliability"]
    assert sum(reliability["count"]) == 8
    assert len(reliability["edges"]) == bins + 1


def test_reliability_counts_with_five_bins() -> None:
    section = calibration(sample_table(HAND_LABELS, HAND_PROBA), context(ece_bins=5))
    assert section.figures["reliability"]["count"] == [0, 0, 4, 3, 1]
    assert section.figures["confidence_histogram"]["correct"] == [0, 0, 2, 3, 1]
    assert section.figures["confidence_histogram"]["wrong"] == [0, 0, 2, 0, 0]
    assert [row[1] for row in section.tables["bins"].rows] == [4, 3, 1]


def test_bins_are_open_below_and_closed_above() -> None:
    assert bin_index(np.array([1.0]), 15).tolist() == [14]
    assert bin_index(np.array([0.2]), 5).tolist() == [0]
    assert bin_index(np.array([0.0, 0.2000001, 0.4, 0.9999]), 5).tolist() == [0, 1, 1, 4]
    # 0.28 * 25 rounds to 7.000000000000001; 0.28 still closes bin 6, (0.24, 0.28].
    assert bin_index(np.array([0.28, 0.56]), 25).tolist() == [6, 13]
    for bins in range(2, 31):
        edges = np.arange(1, bins + 1) / bins
        assert bin_index(edges, bins).tolist() == list(range(bins)), bins


def test_confidence_one_and_one_fifth_land_in_the_outer_bins() -> None:
    # 5 classes; row 1 is uniform (argmax 0, confidence 0.2), row 2 certain (confidence 1.0).
    proba = [[0.2] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]]
    classes = list("abcde")
    section = calibration(sample_table([0, 0], proba, classes), context(classes, ece_bins=5))
    assert section.figures["reliability"]["count"] == [1, 0, 0, 0, 1]
    # Bin 0: accuracy 1, confidence 0.2; bin 4: accuracy 1, confidence 1.
    assert section.metrics["performance.ece"] == exactly((1 - 0.2) / 2)
    assert section.metrics["performance.mce"] == exactly(1 - 0.2)


def test_confidently_wrong_predictions_reach_the_brier_maximum() -> None:
    proba = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    section = calibration(sample_table([0, 0], proba), context())
    # Each row: (0 − 1)² + (1 − 0)² = 2, the top of the multiclass Brier range [0, 2].
    assert section.metrics["performance.brier"] == 2.0
    assert section.metrics["performance.ece"] == 1.0
    # The true class's probability 0 is clipped to 1e-15 before the log.
    assert section.metrics["performance.nll"] == pytest.approx(-math.log(1e-15), rel=1e-9)
    assert [f.metric for f in section.findings] == ["performance.ece"]


# --- bootstrap ---------------------------------------------------------------------------

INTERVAL_METRICS = (
    "performance.accuracy",
    "performance.balanced_accuracy",
    "performance.worst_class_recall",
)


def test_without_draws_only_the_exact_intervals_remain() -> None:
    section = performance(random_table(60, CLASSES, seed=1), context(bootstrap=0))
    intervals = {key.rsplit(".", 1)[0] for key in section.metrics if ".ci_" in key}
    assert intervals == {"performance.accuracy"} | {
        f"performance.class.{name}.recall" for name in CLASSES
    }


def test_intervals_bracket_the_point_estimate() -> None:
    section = performance(random_table(200, CLASSES, seed=1), context(bootstrap=500))
    for key in INTERVAL_METRICS:
        low, point, high = (section.metrics[k] for k in (f"{key}.ci_low", key, f"{key}.ci_high"))
        assert low <= point <= high, key
        assert low < high, key


@pytest.mark.parametrize(
    ("hits", "n", "expected"),
    [
        # Textbook exact 95% intervals (Clopper & Pearson 1934; e.g. R's binom.test).
        (0, 10, (0.0, 0.30850)),
        (10, 10, (0.69150, 1.0)),
        (5, 10, (0.18709, 0.81291)),
        (50, 50, (0.92888, 1.0)),
    ],
)
def test_clopper_pearson_matches_textbook_values(hits, n, expected) -> None:
    low, high = clopper_pearson(hits, n, 0.95)
    assert low == pytest.approx(expected[0], abs=1e-5)
    assert high == pytest.approx(expected[1], abs=1e-5)


def test_a_perfect_score_still_has_an_interval() -> None:
    labels = [0] * 50 + [1] * 50
    proba = [[0.9, 0.1]] * 50 + [[0.1, 0.9]] * 50
    table = sample_table(labels, proba, ["a", "b"])
    section = performance(table, context(["a", "b"], bootstrap=500))
    assert section.metrics["performance.accuracy"] == 1.0
    assert section.metrics["performance.accuracy.ci_low"] == pytest.approx(0.96378, abs=1e-5)
    for key in ("performance.balanced_accuracy", "performance.worst_class_recall"):
        assert section.metrics[f"{key}.ci_low"] < 0.99, key


def test_worst_class_interval_is_the_minimum_over_posterior_draws() -> None:
    support, hits = np.array([40, 40, 0]), np.array([38, 30, 0])
    draws = recall_posterior_draws(support, hits, n_draws=4000, seed=3)
    assert np.isnan(draws[:, 2]).all()
    # Jeffreys posterior means: (hits + 1/2) / (n + 1)
    assert draws[:, 0].mean() == pytest.approx(38.5 / 41, abs=0.005)
    assert draws[:, 1].mean() == pytest.approx(30.5 / 41, abs=0.005)
    assert (np.nanmin(draws, axis=1) <= draws[:, 1]).all()


def test_each_ece_resample_matches_the_ece_of_the_same_rows() -> None:
    table = random_table(40, CLASSES, seed=2)
    confidence = table["confidence"].to_numpy()
    correct = table["correct"].to_numpy().astype(float)
    draws = ece_bootstrap(confidence, correct, 15, n_boot=50, seed=7)
    rows = next(resampled_rows(40, n_boot=50, seed=7, stream="ece"))
    for b, idx in enumerate(rows):
        ece, _ = expected_calibration_error(confidence[idx], correct[idx], 15)
        assert draws[b] == pytest.approx(ece, abs=1e-12)


def _intervals(section: Section) -> dict[str, float | None]:
    return {
        k: v
        for k, v in section.metrics.items()
        if ".ci_" in k and k.rsplit(".", 1)[0] in INTERVAL_METRICS
    }


def test_intervals_depend_on_the_seed_only() -> None:
    table = random_table(200, CLASSES, seed=1)
    first = _intervals(performance(table, context(seed=0, bootstrap=200)))
    again = _intervals(performance(table, context(seed=0, bootstrap=200)))
    other = _intervals(performance(table, context(seed=1, bootstrap=200)))
    assert len(first) == 2 * len(INTERVAL_METRICS)
    assert first == again
    assert first != other


# --- every registered analysis -----------------------------------------------------------


def _invariance_case() -> tuple[pd.DataFrame, AnalysisContext]:
    """4 classes: "Sea Lion" needs key cleaning, bird is never predicted, ant never occurs."""
    classes = ["cat", "Sea Lion", "bird", "ant"]
    rng = np.random.default_rng(5)
    n = 40
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += 1.0
    logits[:, 2] = logits[:, :2].min(axis=1) - 0.5
    logits[:, 3] = -30.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    summary = data_summary(
        {"cat": 40, "Sea Lion": 20, "bird": 10, "ant": 0},
        within={"train": 2},
        across={"train-test": 1},
        label_conflicts=1,
    )
    # Attack columns shaped as the attack probe writes them, with predictions that get
    # worse with eps, so the robustness analysis has something to summarise.
    robustness = section_for_device("robustness", RobustnessConfig(), "cpu")[0]
    columns, artifacts = stand_in_columns(robustness, 1, len(classes), labels)
    for name in [c for c in columns if c.endswith(".pred")]:
        eps = parse_eps(name.split("@")[1].rsplit(".", 1)[0])
        fooled = rng.random(n) < min(1.0, 2 * eps)
        columns[name] = np.where(fooled, (labels + 1) % 3, labels).astype(float)
    table = sample_table(labels, proba, classes).assign(**columns)
    table["attr.site"] = np.where(np.arange(n) % 2, "north", "<south>")
    # bootstrap=0: resamples are drawn over row positions, so shuffled rows give other
    # (equally valid) intervals; the point estimates must not move.
    ctx = context(classes, summary=summary, bootstrap=0)
    explained, explain = stand_in_explanations(
        ExplainConfig(), labels, len(classes), has_masks=True, adversarial=True
    )
    table = pd.concat([table, pd.DataFrame(explained, index=table.index)], axis=1)
    # Corruption columns as the probe writes them, worse with severity, on 30 of the rows.
    corrupted, corruption = stand_in_corruptions(CorruptionConfig(names=["fog", "jpeg"]), labels)
    for name in [c for c in corrupted if c.endswith(".pred")]:
        severity = int(name.split("@")[1].split(".")[0])
        wrong = rng.random(n) < 0.12 * severity
        corrupted[name] = np.where(wrong, (labels + 2) % 3, labels).astype(float)
        corrupted[name.replace(".pred", ".confidence")] = rng.uniform(0.3, 1.0, n)
    corrupted["cor.check.severity0_pred"] = table["pred"].to_numpy(dtype=float)
    corrupted["corrupted"] = (np.arange(n) < 30).astype(float)
    table = pd.concat([table, pd.DataFrame(corrupted, index=table.index)], axis=1)
    # An exported file that disagrees on a few images, as the deploy probe writes it.
    deployed, deploy = stand_in_deploy(["onnx"], labels, robustness, 1, corruptions=True)
    deployed[deploy_column("onnx", "pred")] = np.where(
        np.arange(n) % 7 == 0, (labels + 1) % 3, labels
    )
    deployed[deploy_column("onnx", "corruption_accuracy")] = rng.uniform(0.4, 1.0, n)
    table = pd.concat([table, pd.DataFrame(deployed, index=table.index)], axis=1)
    ctx.artifacts = {
        "robustness": artifacts,
        "explanations": explain,
        "corruption": corruption,
        "deploy": deploy,
    }
    # A shift set: the same images, fainter (every other prediction moved), its own groups.
    shifted = sample_table(labels, np.roll(proba, n // 2, axis=0), classes)
    ctx.shift = {"scanner_b": shifted.assign(**{"attr.site": np.where(labels, "east", "west")})}
    return table, ctx


@pytest.mark.parametrize("entry", list(ANALYSES), ids=lambda entry: entry.name)
def test_analysis_is_invariant_to_row_order_and_well_formed(entry: Entry) -> None:
    table, ctx = _invariance_case()
    original = entry.obj(table, ctx)
    shuffled = entry.obj(table.sample(frac=1.0, random_state=3), ctx)

    assert original.name == entry.name
    assert original.error is None
    assert original.metrics
    # Metrics are sums and counts; only float addition order may differ, in the last bits.
    assert shuffled.metrics.keys() == original.metrics.keys()
    for key, value in original.metrics.items():
        if value is None:
            assert shuffled.metrics[key] is None, key
        else:
            assert shuffled.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert shuffled.notes == original.notes
    assert [(f.severity, f.message) for f in shuffled.findings] == [
        (f.severity, f.message) for f in original.findings
    ]

    for key, value in original.metrics.items():
        assert METRIC_KEY.match(key), key
        assert value is None or type(value) is float, key
        if value is None:
            assert original.notes.get(key, "undefined") != "undefined", key


# --- run_analyses ------------------------------------------------------------------------


def test_a_failing_analysis_becomes_an_error_section(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
        raise ZeroDivisionError("no rows to divide")

    registered = ANALYSES.names()
    # First in line, so the analyses after it must still run.
    failing = Entry("broken", broken, "always fails")
    monkeypatch.setattr(ANALYSES, "_entries", {"broken": failing, **ANALYSES._entries})
    table, ctx = _invariance_case()
    sections = run_analyses(table, ctx)

    assert [s.name for s in sections] == ["broken", *registered]
    failed = sections[0]
    assert failed.error == "ZeroDivisionError: no rows to divide"
    assert failed.title == "always fails"
    assert failed.metrics == {}
    assert [(f.severity, f.section) for f in failed.findings] == [("error", "broken")]
    assert "the broken analysis failed: no rows to divide" in failed.findings[0].message
    for section in sections[1:]:
        assert section.error is None and section.metrics, section.name
    with pytest.raises(ZeroDivisionError, match="no rows to divide"):
        run_analyses(table, ctx, debug=True)


# --- imbalance ---------------------------------------------------------------------------

TWO_CLASSES = ["cat", "dog"]


def _two_class_table() -> pd.DataFrame:
    return sample_table([0, 1, 1], [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]], TWO_CLASSES)


def _imbalance_findings(section: Section) -> list[tuple[str, str | None]]:
    return [(f.severity, f.metric) for f in section.findings]


def test_imbalance_ratio_and_threshold() -> None:
    summary = data_summary({"cat": 30, "dog": 10})
    at = imbalance(
        _two_class_table(), context(TWO_CLASSES, summary=summary, imbalance_threshold=3.0)
    )
    assert at.metrics["data.imbalance_ratio"] == 30 / 10
    assert at.metrics["data.class.cat.train_share"] == 30 / (30 + 10)
    assert at.metrics["data.class.dog.train_share"] == 10 / (30 + 10)
    assert at.metrics["data.split.train.count"] == 30 + 10
    assert at.metrics["data.split.val.count"] == 2 + 2
    assert _imbalance_findings(at) == []  # 3.0 is not over a threshold of 3.0

    over = imbalance(
        _two_class_table(), context(TWO_CLASSES, summary=summary, imbalance_threshold=2.9)
    )
    assert _imbalance_findings(over) == [("warning", "data.imbalance_ratio")]
    assert "'cat' has 30 training images, 'dog' only 10" in over.findings[0].message
    # Test recall per class beside the counts: cat 1/1, dog 1/2.
    assert over.tables["distribution"].rows == [["cat", 30, 2, 1, 1.0], ["dog", 10, 2, 1, 0.5]]


def test_a_class_without_training_images_is_an_error() -> None:
    classes = ["cat", "dog", "bird"]
    summary = data_summary({"cat": 30, "dog": 10, "bird": 0})
    section = imbalance(sample_table(HAND_LABELS, HAND_PROBA), context(classes, summary=summary))
    assert section.metrics["data.imbalance_ratio"] is None
    assert section.notes["data.imbalance_ratio"] == "class(es) bird have no training images"
    assert section.metrics["data.class.bird.train_share"] == 0 / 40
    assert _imbalance_findings(section) == [("error", "data.imbalance_ratio")]
    assert "'bird'" in section.findings[0].message


def test_duplicates_and_leakage_are_counted_and_reported() -> None:
    summary = data_summary(
        {"cat": 10, "dog": 10},
        within={"train": 4, "test": 1},
        across={"train-test": 2, "train-val": 1},
        label_conflicts=1,
    )
    section = imbalance(_two_class_table(), context(TWO_CLASSES, summary=summary))
    assert section.metrics["data.duplicates.within"] == 4 + 1
    assert section.metrics["data.duplicates.leakage"] == 2 + 1
    assert section.metrics["data.duplicates.label_conflicts"] == 1
    assert _imbalance_findings(section) == [
        ("warning", "data.duplicates.leakage"),
        ("warning", "data.duplicates.label_conflicts"),
    ]
    assert section.findings[0].message.startswith("2 test image(s) also occur in the training")


def test_clean_data_has_no_duplicate_findings() -> None:
    section = imbalance(
        _two_class_table(), context(TWO_CLASSES, summary=data_summary({"cat": 10, "dog": 10}))
    )
    assert section.metrics["data.duplicates.leakage"] == 0
    assert _imbalance_findings(section) == []
