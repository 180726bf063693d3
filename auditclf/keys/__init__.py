"""Metric keys and sample-table column names: the one place they are spelt and read.

Every metric key belongs to one family of :mod:`auditclf.keys.families` (its
spelling, meaning, direction, headline status, interval siblings and unit);
:func:`parse` finds it, whatever the model prefix (``hardened.``) or interval
bound (``.ci_low``, or ``_ci_low`` for a fairness difference) around it. The
analyses spell keys with a family's ``key(...)`` or the helpers below; gates,
``compare``, the ledgers and the report ask this module which way a key is
better, whether it is a headline and how its interval bounds are named.
Class and group names become key parts through :func:`key_part`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from auditclf.keys.families import (
    FAMILIES,
    HIGHER,
    LOWER,
    NEUTRAL,
    PLACEHOLDERS,
    PROPORTION,
    SECTIONS,
    KeyFamily,
)
from auditclf.keys.parts import check_distinct_key_parts, key_part

__all__ = [
    "ATTR_PREFIX",
    "FAMILIES",
    "AdvColumn",
    "CORRUPTION_GALLERY",
    "HIGHER",
    "LOWER",
    "NEUTRAL",
    "PROBA_PREFIX",
    "ParsedKey",
    "SET_COLUMN",
    "TEST_SET",
    "adv_column",
    "attack_at",
    "check_distinct_key_parts",
    "check_outcomes",
    "checks_sentence",
    "class_metric",
    "corruption_at",
    "corruption_check_column",
    "corruption_column",
    "deploy_column",
    "DEPLOY_FORMATS",
    "DEPLOY_PREFIX",
    "parse_corruption_column",
    "direction",
    "explain_column",
    "fairness_key",
    "gallery_array",
    "families_matching",
    "family_lines",
    "interval",
    "interval_keys",
    "is_bound",
    "is_headline",
    "key_part",
    "model_free",
    "model_key",
    "parse",
    "parse_adv_column",
    "robust_metric",
    "shift_name",
    "shift_set",
    "shown_in_points",
]

ADV_PREFIX = "adv."
PROBA_PREFIX = "proba."  # proba.<k>: the predicted probability of class k
ATTR_PREFIX = "attr."  # attr.<attribute>: an image's group in one attribute
EXPLAIN_PREFIX = "explain."
SET_COLUMN = "set"  # set: the test split (TEST_SET) or a shift set (shift_set(name))
TEST_SET = "test"
SHIFT_SET_PREFIX = "shift."
_ADV_COLUMN = re.compile(
    re.escape(ADV_PREFIX)
    + rf"(?P<attack>{PLACEHOLDERS['attack']})@(?P<eps>{PLACEHOLDERS['eps']})\.(?P<what>[a-z_]+)"
)


def attack_at(attack: str, eps: str) -> str:
    """``pgd_linf@8/255``: one attack at one eps, as keys and columns spell it."""
    return f"{attack}@{eps}"


def adv_column(attack: str, eps: str, what: str) -> str:
    """The sample-table column of one attack × eps: ``adv.<attack>@<eps>.<what>``
    (``what``: ``pred``, ``margin``, ``valid``)."""
    return f"{ADV_PREFIX}{attack_at(attack, eps)}.{what}"


def explain_column(what: str, method: str | None = None) -> str:
    """The sample-table column of an explanation score: ``explain.<method>.<what>`` for
    one method's map of the row's image (``deletion_auc``; its mean over the explained
    rows is the metric of the same name), ``explain.<what>`` for the image itself
    (``rank``: its place among the explained images, ``swap_flip_rate``). Empty on the
    rows not explained. The artifact file's per-image arrays are spelt the same way
    (``explain.image``, ``explain.gradcam.map``); row ``rank`` of an array is that image."""
    return f"{EXPLAIN_PREFIX}{what}" if method is None else f"{EXPLAIN_PREFIX}{method}.{what}"


def shift_set(name: str) -> str:
    """``shift.<name>``: the ``set`` column's value on a shift set's rows (``name`` already a
    key part, as in the ``shift.<name>.*`` keys)."""
    return f"{SHIFT_SET_PREFIX}{name}"


def shift_name(value: str) -> str | None:
    """The shift set's name in a ``set`` value (``shift.scanner_b`` → ``scanner_b``); None
    when the value is not a shift set's as :func:`shift_set` spells it."""
    name = value[len(SHIFT_SET_PREFIX) :] if value.startswith(SHIFT_SET_PREFIX) else ""
    return name if re.fullmatch(PLACEHOLDERS["name"], name) else None


def gallery_array(what: str) -> str:
    """The artifact file's array of the attack gallery's images: ``gallery.<what>``
    (``clean``, ``adversarial``, ``perturbation``), one row per gallery item."""
    return f"gallery.{what}"


DEPLOY_PREFIX = "deploy."
DEPLOY_FORMATS = ("onnx", "torchscript", "onnx-int8")  # what export.formats may name


def deploy_column(fmt: str, what: str) -> str:
    """The sample-table column of one exported format: ``deploy.<format>.<what>`` (``what``:
    ``pred``, ``confidence``, ``logit_diff``, ``proba_diff``, ``transfer_pred``)."""
    return f"{DEPLOY_PREFIX}{fmt}.{what}"


COR_PREFIX = "cor."
# the artifact file's array of the corruption gallery: (corruptions, clean + severities, C, H, W)
CORRUPTION_GALLERY = "corruption.gallery"
_COR_COLUMN = re.compile(
    re.escape(COR_PREFIX)
    + rf"(?P<corruption>{PLACEHOLDERS['corruption']})@(?P<severity>{PLACEHOLDERS['severity']})"
    + r"\.(?P<what>[a-z_]+)"
)


def corruption_at(corruption: str, severity: int | str) -> str:
    """``fog@3``: one corruption at one severity, as keys and columns spell it."""
    return f"{corruption}@{severity}"


def corruption_column(corruption: str, severity: int | str, what: str) -> str:
    """The sample-table column of one corruption × severity: ``cor.<corruption>@<severity>.
    <what>`` (``what``: ``pred``, ``confidence``)."""
    return f"{COR_PREFIX}{corruption_at(corruption, severity)}.{what}"


def corruption_check_column(what: str) -> str:
    """``cor.check.<what>``: a per-image measurement of a corruption sanity check."""
    return f"{COR_PREFIX}check.{what}"


def parse_corruption_column(name: str) -> tuple[str, int, str] | None:
    """``cor.fog@3.pred`` → ``("fog", 3, "pred")``; None for any other column."""
    found = _COR_COLUMN.fullmatch(name)
    return None if found is None else (found["corruption"], int(found["severity"]), found["what"])


class AdvColumn(NamedTuple):
    """An attack column read back: which attack, at which eps, and what it holds."""

    attack: str
    eps: str
    what: str


def parse_adv_column(name: str) -> AdvColumn | None:
    """``adv.fgsm@0.1.pred`` → ``AdvColumn("fgsm", "0.1", "pred")``; None for any other
    column."""
    found = _ADV_COLUMN.fullmatch(name)
    return None if found is None else AdvColumn(found["attack"], found["eps"], found["what"])


def robust_metric(attack: str, eps: str) -> str:
    """``fgsm@0.1.accuracy``: robust accuracy as it ends a robustness or fairness key."""
    return f"{attack_at(attack, eps)}.accuracy"


CHECK_PREFIX = "robustness.check."


def check_outcomes(metrics: dict, section: str = "robustness") -> tuple[list[str], list[str]]:
    """(passed, failed) names of a section's sanity checks (``robustness``, ``corruption``),
    read from their ``<section>.check.<name>`` flags, in the order the analysis wrote them:
    the one source the CLI line and the summary read (the report's table, headline and
    finding, and JUnit, come from the same checks as they were written)."""
    prefix = f"{section}.check."
    passed, failed = [], []
    for key, value in metrics.items():
        if key.startswith(prefix) and value is not None:
            (passed if value == 1 else failed).append(key[len(prefix) :])
    return passed, failed


def checks_sentence(metrics: dict, section: str = "robustness") -> str | None:
    """ "reliable: 9 of 9 sanity checks passed" or "UNRELIABLE: 2 of 9 sanity checks failed
    (gradients_nonzero, loss_rises)"; None when no check ran. The reliability is the
    section's ``<section>.reliable`` flag where it has one: a corruption check that is a
    finding only (``accuracy_falls_with_severity``) fails without making it unreliable."""
    passed, failed = check_outcomes(metrics, section)
    total = len(passed) + len(failed)
    if not total:
        return None
    if not failed:
        return f"reliable: {total} of {total} sanity checks passed"
    if metrics.get(f"{section}.reliable") == 1:  # only checks that are findings failed
        return (
            f"reliable: {len(passed)} of {total} sanity checks passed; "
            f"{', '.join(failed)} did not hold (a finding, not a blocking check)"
        )
    return f"UNRELIABLE: {len(failed)} of {total} sanity checks failed ({', '.join(failed)})"


def class_metric(class_part: str, rate: str) -> str:
    """``class.3.tpr``: a one-vs-rest rate of one class as it ends a fairness key."""
    return f"class.{class_part}.{rate}"


def fairness_key(attribute: str, metric: str, *, group: str | None = None) -> str:
    """``fairness.<attribute>.<metric>`` (a summary over groups: ``accuracy.difference``,
    ``equalized_odds_difference``), or with ``group`` the metric in one group
    (``fairness.<attribute>.group.<value>.<metric>``); names already key parts."""
    where = f"fairness.{attribute}" if group is None else f"fairness.{attribute}.group.{group}"
    return f"{where}.{metric}"


def model_key(model: str, key: str) -> str:
    """The key as gates spell it: the baseline's as it is, another model's with its name
    in front (``hardened.performance.accuracy``)."""
    return key if model == "baseline" else f"{model}.{key}"


def model_free(key: str) -> str:
    """``hardened.performance.accuracy`` → ``performance.accuracy``."""
    head, _, rest = key.partition(".")
    if head not in SECTIONS and rest.partition(".")[0] in SECTIONS:
        return rest
    return key


@dataclass(frozen=True)
class ParsedKey:
    """A metric key read back: its family, placeholder values and bound, if any."""

    metric: str  # without model prefix and bound suffix
    family: KeyFamily
    params: dict[str, str]
    bound: str | None  # "low" or "high" for an interval bound


def families_matching(metric: str) -> list[KeyFamily]:
    """Every family whose pattern ``metric`` (no prefix, no bound) fits; one, for a key
    this version writes."""
    return [f for f in FAMILIES if f.regex.fullmatch(metric)]


@lru_cache(maxsize=8192)
def _parse_model_free(key: str) -> ParsedKey | None:
    for family in FAMILIES:
        params = family.match(key)
        if params is not None:
            return ParsedKey(key, family, params, None)
    for family in FAMILIES:
        for bound, suffix in zip(("low", "high"), family.interval or (), strict=False):
            params = family.match(key[: -len(suffix)]) if key.endswith(suffix) else None
            if params is not None:
                return ParsedKey(key[: -len(suffix)], family, params, bound)
    return None


def parse(key: str) -> ParsedKey | None:
    """The family of ``key`` (any model prefix, any interval bound); None when it has none
    (a key of another auditclf version)."""
    return _parse_model_free(model_free(key))


def direction(key: str) -> int:
    """HIGHER (+1) when a larger value is better, LOWER (-1) when smaller is, else NEUTRAL;
    an interval bound has its metric's direction."""
    parsed = parse(key)
    return NEUTRAL if parsed is None else parsed.family.direction


def is_bound(key: str) -> bool:
    """Whether ``key`` is an interval bound (``….ci_low``, ``…difference_ci_high``)."""
    parsed = parse(key)
    return parsed is not None and parsed.bound is not None


def is_headline(key: str) -> bool:
    """Whether ``key`` is compared by default (see :mod:`auditclf.compare`)."""
    parsed = parse(key)
    return parsed is not None and parsed.bound is None and parsed.family.headline


def shown_in_points(key: str) -> bool:
    """Whether a change of ``key`` is shown in percentage points (a proportion)."""
    parsed = parse(key)
    return parsed is not None and parsed.family.unit == PROPORTION


def interval_keys(key: str) -> tuple[str, str] | None:
    """The names of ``key``'s interval bounds as its family spells them (model prefix
    kept); None when its family has no interval."""
    parsed = parse(key)
    if parsed is None or parsed.bound is not None:
        return None
    return parsed.family.interval_keys(key)


def interval(metrics: dict, key: str) -> list | None:
    """``[low, high]`` of ``key`` in ``metrics``, or None when either bound is missing."""
    names = interval_keys(key)
    if names is None:
        return None
    low, high = metrics.get(names[0]), metrics.get(names[1])
    return None if low is None or high is None else [low, high]


def family_lines() -> list[str]:
    """One line per key family, for ``auditclf metrics --list-keys``: pattern, which way
    is better, headline or not, the interval siblings' spellings, meaning and unit."""
    width = max(len(f.pattern) for f in FAMILIES)
    ways = {HIGHER: "higher", LOWER: "lower", NEUTRAL: "-"}

    def line(pattern: str, way: str, headline: str, siblings: str, meaning: str) -> str:
        return f"{pattern:<{width}}  {way:<6}  {headline:<8}  {siblings:<27}  {meaning}"

    lines = [line("key", "better", "headline", "interval", "meaning [unit]")]
    for family in FAMILIES:
        siblings = f"KEY{family.interval[0]} KEY{family.interval[1]}" if family.interval else "-"
        headline = "yes" if family.headline else "-"
        meaning = f"{family.meaning} [{family.unit}]"
        lines.append(line(family.pattern, ways[family.direction], headline, siblings, meaning))
    lines.append("hardened.<key>, rebalanced.<key>: the same metric of a retrained model")
    return lines
