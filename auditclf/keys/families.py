"""Every metric-key family: how it is spelt, what it means, which way is better,
whether it is a headline, how its interval siblings are spelt, and its unit.

A family's ``pattern`` is the key with ``<placeholders>`` for the parts that vary
(``robustness.<attack>@<eps>.accuracy``); :data:`PLACEHOLDERS` says what each may
hold. Headline families are the ones ``compare`` and ``--baseline`` check by
default (see :mod:`auditclf.compare`). Intervals come in two spellings, both part of
the public contract: ``KEY.ci_low``/``KEY.ci_high`` (:data:`CI`) for most keys, and
``KEY_ci_low``/``KEY_ci_high`` (:data:`DIFFERENCE_CI`) for a fairness metric's
difference between groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HIGHER, LOWER, NEUTRAL = 1, -1, 0
CI = (".ci_low", ".ci_high")
DIFFERENCE_CI = ("_ci_low", "_ci_high")

PROPORTION = "proportion (0–1)"  # shown as % / percentage points
COUNT = "count"
FLAG = "1 = yes, 0 = no"
RATIO = "ratio"
CORRELATION = "rank correlation (−1–1)"

_NAME = r"[a-z0-9_-]+"  # what keys.parts.key_part gives
_NUMBER = r"[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
PLACEHOLDERS = {
    "attack": r"(?!worst@)[a-z0-9_]+",  # `worst` is the worst case over attacks, its own family
    "eps": rf"{_NUMBER}(?:/{_NUMBER})?",  # as eps_label writes it: 0.1, 8/255
    "k": r"[0-9]+",
    "method": r"[a-z0-9_]+",
    "check": r"[a-z0-9_]+",
    "class": _NAME,
    "attribute": _NAME,
    "value": _NAME,
    "split": _NAME,
    # a corruption's name; `mean`, `worst` and `check` head their own families
    "corruption": r"(?!(?:mean|worst|check)\b)[a-z0-9_]+",
    "severity": r"[1-5]",
    "name": _NAME,  # a shift set's name (shift.name, or its folder's or file's)
    "format": r"onnx-int8|onnx|torchscript",  # an exported format (export.formats)
}
_PLACEHOLDER = re.compile(r"<([a-z]+)>")


@dataclass(frozen=True)
class KeyFamily:
    """One family of metric keys; ``key(**params)`` spells one, ``match(key)`` reads one."""

    pattern: str
    meaning: str
    direction: int = NEUTRAL
    headline: bool = False
    interval: tuple[str, str] | None = None
    unit: str = PROPORTION
    regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PLACEHOLDER.split(self.pattern)
        text = "".join(
            f"(?P<{p}>{PLACEHOLDERS[p]})" if i % 2 else re.escape(p) for i, p in enumerate(parts)
        )
        object.__setattr__(self, "regex", re.compile(text))

    @property
    def params(self) -> list[str]:
        return _PLACEHOLDER.findall(self.pattern)

    def key(self, **params: object) -> str:
        """The key for these values (``eps="8/255"``); every placeholder must be given."""
        if set(params) != set(self.params):
            raise TypeError(f"{self.pattern}: give exactly {', '.join(self.params) or 'nothing'}")
        return _PLACEHOLDER.sub(lambda m: str(params[m[1]]), self.pattern)

    def match(self, key: str) -> dict[str, str] | None:
        """The placeholder values when ``key`` (no model prefix, no bound) is of this family."""
        found = self.regex.fullmatch(key)
        return None if found is None else found.groupdict()

    def interval_keys(self, key: str) -> tuple[str, str] | None:
        """The names of ``key``'s interval bounds, as this family spells them."""
        return None if self.interval is None else (key + self.interval[0], key + self.interval[1])


F = KeyFamily

# performance
ACCURACY = F("performance.accuracy", "test accuracy", HIGHER, True, CI)
BALANCED_ACCURACY = F("performance.balanced_accuracy", "mean per-class recall", HIGHER, True, CI)
WORST_CLASS_RECALL = F(
    "performance.worst_class_recall", "lowest per-class recall", HIGHER, True, CI
)
CLASS_RECALL = F("performance.class.<class>.recall", "recall of one class", HIGHER, False, CI)
ECE = F(
    "performance.ece",
    "expected calibration error (15 equal-width bins)",
    LOWER,
    True,
    CI,
    "calibration error (0–1)",
)
BRIER = F("performance.brier", "multiclass Brier score", LOWER, True, unit="Brier score (0–2)")
TOP_K_ACCURACY = F(
    "performance.top_k_accuracy@<k>", "true class among the k most probable", HIGHER, True
)
PERFORMANCE = (
    ACCURACY,
    BALANCED_ACCURACY,
    WORST_CLASS_RECALL,
    F("performance.f1_macro", "F1 averaged over classes", HIGHER, True),
    F("performance.f1_weighted", "F1 averaged over classes, weighted by support", HIGHER, True),
    TOP_K_ACCURACY,
    F("performance.class.<class>.precision", "precision of one class", HIGHER),
    CLASS_RECALL,
    F("performance.class.<class>.f1", "F1 of one class", HIGHER),
    F("performance.class.<class>.support", "test images of one class", unit=COUNT),
    ECE,
    F("performance.mce", "maximum calibration error", LOWER, True, unit="calibration error (0–1)"),
    BRIER,
    F("performance.nll", "log loss", LOWER, True, unit="nats"),
    F("performance.mean_confidence", "mean top-class probability"),
)

# robustness
ROBUST_ACCURACY = F(
    "robustness.<attack>@<eps>.accuracy", "robust accuracy under one attack", HIGHER, True, CI
)
WORST_ACCURACY = F(
    "robustness.worst@<eps>.accuracy",
    "per image, the worst result over every L∞ attack at that eps",
    HIGHER,
    True,
    CI,
)
ROBUST_CLASS_ACCURACY = F(
    "robustness.<attack>@<eps>.class.<class>.accuracy", "robust accuracy per true class", HIGHER
)
ROBUST_GROUP_ACCURACY = F(
    "robustness.<attack>@<eps>.group.<attribute>.<value>.accuracy",
    "robust accuracy per group",
    HIGHER,
)
MIN_EPS_MEDIAN = F(
    "robustness.min_eps.median",
    "median minimal L∞ perturbation that flips an image",
    HIGHER,
    True,
    unit="eps (pixel units)",
)
CLASS_MIN_EPS_MEDIAN = F(
    "robustness.class.<class>.min_eps.median",
    "median minimal L∞ perturbation per class",
    HIGHER,
    unit="eps (pixel units)",
)
SUCCESS_RATE = F(
    "robustness.<attack>@<eps>.success_rate",
    "share of correctly classified images the attack flips",
    LOWER,
)
SAMPLES = F("robustness.samples", "images attacked", unit=COUNT)
CLEAN_ACCURACY = F("robustness.clean_accuracy", "accuracy of the attacked subset", HIGHER, True, CI)
RELIABLE = F("robustness.reliable", "1 when every sanity check passed", HIGHER, True, unit=FLAG)
CHECK = F("robustness.check.<check>", "1 when this sanity check passed", HIGHER, unit=FLAG)
ROBUSTNESS = (
    CLEAN_ACCURACY,
    SAMPLES,
    ROBUST_ACCURACY,
    SUCCESS_RATE,
    WORST_ACCURACY,
    ROBUST_CLASS_ACCURACY,
    ROBUST_GROUP_ACCURACY,
    MIN_EPS_MEDIAN,
    CLASS_MIN_EPS_MEDIAN,
    RELIABLE,
    CHECK,
)

# corruptions
_CE = "calibration error (0–1)"
CORRUPTION_SEVERITY_ACCURACY = F(
    "corruption.<corruption>@<severity>.accuracy",
    "accuracy under one corruption at one severity",
    HIGHER,
    False,
    CI,
)
CORRUPTION_ACCURACY = F(
    "corruption.<corruption>.accuracy",
    "accuracy under one corruption, mean over its severities",
    HIGHER,
    False,
    CI,
)
CORRUPTION_MEAN_ACCURACY = F(
    "corruption.mean.accuracy",
    "accuracy under corruptions, mean over every corruption and severity",
    HIGHER,
    True,
    CI,
)
CORRUPTION_WORST_ACCURACY = F(
    "corruption.worst.accuracy",
    "accuracy under the most damaging corruption (mean over its severities)",
    HIGHER,
    True,
    CI,
)
CORRUPTION_MCE = F(
    "corruption.mce",
    "mean corruption error: errors under each corruption ÷ the baseline's, averaged "
    "(retrained models; 1 = as robust as the baseline)",
    LOWER,
    True,
    unit=RATIO,
)
CORRUPTION_CE = F(
    "corruption.<corruption>.ce",
    "corruption error ÷ the baseline's under one corruption (retrained models)",
    LOWER,
    unit=RATIO,
)
CORRUPTION_CLASS_ACCURACY = F(
    "corruption.<corruption>.class.<class>.accuracy",
    "accuracy per true class under one corruption, mean over severities",
    HIGHER,
)
CORRUPTION_GROUP_ACCURACY = F(
    "corruption.<corruption>.group.<attribute>.<value>.accuracy",
    "accuracy per group under one corruption, mean over severities",
    HIGHER,
)
CORRUPTION_RELIABLE = F(
    "corruption.reliable",
    "1 when every blocking corruption sanity check passed",
    HIGHER,
    True,
    unit=FLAG,
)
CORRUPTION = (
    F("corruption.samples", "images corrupted", unit=COUNT),
    F("corruption.clean_accuracy", "accuracy of the corrupted subset, clean", HIGHER, True, CI),
    CORRUPTION_SEVERITY_ACCURACY,
    CORRUPTION_ACCURACY,
    CORRUPTION_MEAN_ACCURACY,
    CORRUPTION_WORST_ACCURACY,
    F(
        "corruption.<corruption>.relative_drop",
        "share of clean accuracy lost under one corruption (mean over severities)",
        LOWER,
    ),
    F(
        "corruption.mean.relative_drop",
        "share of clean accuracy lost under corruptions (mean over all)",
        LOWER,
        True,
    ),
    CORRUPTION_MCE,
    CORRUPTION_CE,
    F(
        "corruption.<corruption>.flip_rate",
        "predictions changed from the clean prediction (mean over severities)",
        LOWER,
    ),
    F("corruption.mean.flip_rate", "predictions changed, mean over all", LOWER, True),
    F(
        "corruption.<corruption>.ece",
        "expected calibration error under one corruption (all severities pooled)",
        LOWER,
        unit=_CE,
    ),
    F("corruption.mean.ece", "ECE under corruptions, mean over corruptions", LOWER, True, unit=_CE),
    F(
        "corruption.<corruption>.mean_confidence",
        "mean top-class probability under one corruption (all severities pooled)",
    ),
    CORRUPTION_CLASS_ACCURACY,
    CORRUPTION_GROUP_ACCURACY,
    CORRUPTION_RELIABLE,
    F("corruption.check.<check>", "1 when this corruption sanity check passed", HIGHER, unit=FLAG),
)

# explanations
_AUC = "AUC (0–1)"
EXPLAIN = (
    F("explain.<method>.deletion_auc", "faithfulness: deletion curve area", LOWER, True, unit=_AUC),
    F(
        "explain.<method>.insertion_auc",
        "faithfulness: insertion curve area",
        HIGHER,
        True,
        unit=_AUC,
    ),
    F("explain.<method>.random_deletion_auc", "deletion AUC of random maps", unit=_AUC),
    F("explain.<method>.random_insertion_auc", "insertion AUC of random maps", unit=_AUC),
    F("explain.<method>.deletion_gain", "deletion AUC below the random maps'", HIGHER, unit=_AUC),
    F("explain.<method>.insertion_gain", "insertion AUC above the random maps'", HIGHER, unit=_AUC),
    F(
        "explain.<method>.randomization_correlation",
        "maps before/after re-initialising the top layers (near 1: insensitive to the model)",
        LOWER,
        unit=CORRELATION,
    ),
    F(
        "explain.<method>.noise_rank_correlation",
        "stability: map of the image against the image plus slight noise",
        HIGHER,
        unit=CORRELATION,
    ),
    F("explain.<method>.noise_topk_overlap", "stability: top-10% overlap under noise", HIGHER),
    F(
        "explain.<method>.adversarial_rank_correlation",
        "map of the image against its PGD adversarial version",
        HIGHER,
        unit=CORRELATION,
    ),
    F(
        "explain.<method>.adversarial_topk_overlap",
        "top-10% overlap with the adversarial version's map",
        HIGHER,
    ),
    F("explain.<method>.mask_mass", "share of |attribution| on the object", HIGHER),
    F("explain.<method>.pointing_accuracy", "share of maps whose maximum is on the object", HIGHER),
    F("explain.mask_area", "mean share of the image covered by the object mask"),
    F("explain.<method>.region_share", "share of |attribution| in the shortcut region", LOWER),
    F(
        "explain.shortcut.class.<class>.swap_flip_rate",
        "predictions changed when the shortcut region is pasted from other images",
        LOWER,
    ),
    F(
        "explain.shortcut.class.<class>.region_share",
        "the class's maps' share in the shortcut region",
        LOWER,
    ),
    F(
        "explain.shortcut.class.<class>.region_enrichment",
        "region share ÷ the region's area",
        LOWER,
        unit=RATIO,
    ),
    F("explain.shortcut.flagged_classes", "classes with a likely shortcut", LOWER, unit=COUNT),
    F("explain.shortcut.swap_flip_rate", "mean swap flip rate", LOWER),
    F(
        "explain.integrated_gradients.convergence_delta",
        "mean completeness error of Integrated Gradients",
        LOWER,
        unit="logit",
    ),
    F("explain.<method>.maps", "maps scored", unit=COUNT),
)

# fairness: each metric measured per group, then summarised over the groups
# (spelling after `group.<value>.` or `<attribute>.`, meaning, direction, unit)
FAIRNESS_METRICS = (
    ("accuracy", "accuracy", HIGHER, PROPORTION),
    ("balanced_accuracy", "balanced accuracy", HIGHER, PROPORTION),
    ("macro_recall", "macro recall", HIGHER, PROPORTION),
    ("ece", "expected calibration error", LOWER, "calibration error (0–1)"),
    ("class.<class>.tpr", "true-positive rate of one class (one-vs-rest)", HIGHER, PROPORTION),
    ("class.<class>.fpr", "false-positive rate of one class (one-vs-rest)", LOWER, PROPORTION),
    ("class.<class>.selection_rate", "share predicted as one class", NEUTRAL, PROPORTION),
    ("<attack>@<eps>.accuracy", "robust accuracy on the attacked images", HIGHER, PROPORTION),
)


def _fairness_families() -> tuple[KeyFamily, ...]:
    group = "fairness.<attribute>.group.<value>"
    families = [F(f"{group}.size", "test images in the group", unit=COUNT)]
    for metric, meaning, way, unit in FAIRNESS_METRICS:
        over = "fairness.<attribute>." + metric
        interval = CI if metric == "accuracy" else None
        headline = not metric.startswith("class.")  # per-class gaps move by whole images
        families += [
            F(f"{group}.{metric}", f"{meaning} in the group", way, False, interval, unit),
            F(f"{over}.min", f"lowest group's {meaning}", way, unit=unit),
            F(f"{over}.max", f"highest group's {meaning}", way, unit=unit),
            F(
                f"{over}.difference",
                f"{meaning}: max − min over groups",
                LOWER,
                headline,
                DIFFERENCE_CI,
                unit,
            ),
            F(f"{over}.ratio", f"{meaning}: min / max over groups", HIGHER, unit=RATIO),
        ]
    families += [
        F(
            "fairness.<attribute>.equalized_odds_difference",
            "largest per-class TPR-or-FPR difference between groups",
            LOWER,
            True,
            CI,
        ),
        F(
            "fairness.<attribute>.demographic_parity_difference",
            "largest per-class selection-rate difference between groups",
            LOWER,
            True,
            CI,
        ),
    ]
    return tuple(families)


FAIRNESS = _fairness_families()

# data: describes the data, not the model, so no direction
IMBALANCE_RATIO = F("data.imbalance_ratio", "largest / smallest training-class count", unit=RATIO)
DATA = (
    IMBALANCE_RATIO,
    F("data.class.<class>.train_share", "share of training images in the class"),
    F("data.split.<split>.count", "images per split", unit=COUNT),
    F("data.duplicates.within", "exact duplicates within a split", unit=COUNT),
    F("data.duplicates.leakage", "test images duplicated in training", unit=COUNT),
    F("data.duplicates.label_conflicts", "duplicates with different labels", unit=COUNT),
)


# distribution shift: a second test set from another source, audited whole (shift.dataset)
SHIFT_ACCURACY = F("shift.<name>.accuracy", "accuracy on the shift set", HIGHER, True, CI)
SHIFT_GAP = F(
    "shift.<name>.accuracy.gap",
    "test accuracy − shift-set accuracy (Newcombe interval)",
    LOWER,
    True,
    CI,
)
SHIFT = (
    SHIFT_ACCURACY,
    SHIFT_GAP,
    F("shift.<name>.balanced_accuracy", "mean per-class recall on the shift set", HIGHER, True, CI),
    F(
        "shift.<name>.ece",
        "expected calibration error on the shift set (15 equal-width bins)",
        LOWER,
        True,
        CI,
        "calibration error (0–1)",
    ),
    F("shift.<name>.samples", "images in the shift set", unit=COUNT),
    F(
        "shift.<name>.class.<class>.recall",
        "recall of one class on the shift set",
        HIGHER,
        False,
        CI,
    ),
    F(
        "shift.<name>.group.<attribute>.<value>.accuracy",
        "accuracy of one group of the shift set",
        HIGHER,
        False,
        CI,
    ),
)


# deployment: each exported file (export.formats) run by its own runtime on the test split
DEPLOY_AGREEMENT = F(
    "deploy.<format>.agreement",
    "share of test images where the exported model's top-1 class equals the PyTorch model's",
    HIGHER,
    True,
    CI,
)
DEPLOY_DROP = F(
    "deploy.<format>.accuracy.drop",
    "PyTorch accuracy − exported accuracy on the same images (Newcombe paired interval)",
    LOWER,
    True,
    CI,
)
MS = "milliseconds"
DEPLOY = (
    DEPLOY_AGREEMENT,
    DEPLOY_DROP,
    F("deploy.<format>.accuracy", "accuracy of the exported model", HIGHER, True, CI),
    F(
        "deploy.<format>.balanced_accuracy",
        "mean per-class recall of the exported model",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.ece",
        "expected calibration error of the exported model (15 equal-width bins)",
        LOWER,
        False,
        CI,
        "calibration error (0–1)",
    ),
    F(
        "deploy.<format>.max_logit_diff",
        "largest |exported − PyTorch| logit over test images and classes",
        LOWER,
        True,
        unit="logit units",
    ),
    F(
        "deploy.<format>.max_proba_diff",
        "largest |exported − PyTorch| softmax probability over test images and classes",
        LOWER,
    ),
    F(
        "deploy.<format>.latency_p50_ms",
        "median CPU latency at batch 1 after warm-up (varies run to run)",
        LOWER,
        unit=MS,
    ),
    F(
        "deploy.<format>.latency_p95_ms",
        "95th-percentile CPU latency at batch 1 after warm-up (varies run to run)",
        LOWER,
        unit=MS,
    ),
    F(
        "deploy.<format>.throughput",
        "CPU images per second at batch 64 (varies run to run)",
        HIGHER,
        unit="images per second",
    ),
    F("deploy.<format>.size_mb", "size of the exported file", LOWER, unit="megabytes"),
    F(
        "deploy.<format>.class.<class>.recall",
        "recall of one class by the exported model",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.group.<attribute>.<value>.accuracy",
        "accuracy of one group by the exported model",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.transfer@<eps>.accuracy",
        "accuracy of the exported model on the PyTorch model's PGD-L∞ adversarial images",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.square@<eps>.accuracy",
        "accuracy of the exported model under black-box Square, querying the file itself",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.corruption.accuracy",
        "accuracy of the exported model under the corruption probe's images (mean over "
        "every corruption and severity)",
        HIGHER,
        False,
        CI,
    ),
    F(
        "deploy.<format>.corruption.agreement",
        "top-1 agreement with the PyTorch model under the corruption probe's images",
        HIGHER,
    ),
)

FAMILIES: tuple[KeyFamily, ...] = (
    PERFORMANCE + ROBUSTNESS + CORRUPTION + EXPLAIN + FAIRNESS + DATA + SHIFT + DEPLOY
)
SECTIONS = (
    "performance",
    "robustness",
    "corruption",
    "fairness",
    "explain",
    "data",
    "shift",
    "deploy",
)
