"""Robustness: robust accuracy per attack × eps, worst case, per class, per group, and
a verdict on whether these numbers can be trusted.

Robust accuracy is the share of attacked test images still classified
correctly under the attack (a proportion: exact Clopper–Pearson intervals);
attack success rate is the share of the correctly classified ones that the
attack flips. Both are monotone in eps: an image an attack fooled at a smaller
eps counts as fooled at every larger eps of the same norm (the larger ball
contains that adversarial image), and the probe attacks only the survivors at
the next eps. The worst case at an eps takes, per image, the worst result over
every L∞ attack at any eps up to it, as AutoAttack reports it (Croce & Hein
2020).

The sanity checks follow Carlini et al., "On Evaluating Adversarial
Robustness" (2019) and Athalye et al., "Obfuscated Gradients Give a False
Sense of Security" (2018): an evaluation that fails one of them may be
reporting robustness that is not there (gradient masking, a randomised model,
a broken attack), so ``robustness.reliable`` becomes 0 and gates that read a
robustness number make the run exit 5.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part
from auditclf.analyses.bootstrap import clopper_pearson
from auditclf.catalog import ATTACK_NORMS
from auditclf.config import parse_eps, preset_note
from auditclf.evidence import ATTR_PREFIX
from auditclf.gradients import NO_GRADIENTS, WHITE_BOX_CHECKS
from auditclf.keys import adv_column, attack_at, parse_adv_column
from auditclf.keys.families import (
    CHECK,
    CLASS_MIN_EPS_MEDIAN,
    CLEAN_ACCURACY,
    MIN_EPS_MEDIAN,
    RELIABLE,
    ROBUST_ACCURACY,
    ROBUST_CLASS_ACCURACY,
    ROBUST_GROUP_ACCURACY,
    SAMPLES,
    SUCCESS_RATE,
    WORST_ACCURACY,
)

DLR_SLACK = 0.05  # a margin loss often finds a few more than CE; far more means CE is masked
CHANCE_SLACK = 0.02
BLACK_BOX_SLACK = 0.005
REPEAT_ATOL = 1e-4
LOSS_SLACK = 0.01
BISECTION_CURVE = "minimal perturbation (PGD-L∞ bisection)"
OUTCOME = {True: "pass", False: "FAIL", None: "n/a"}  # a check's result in its table


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not applicable in this run
    measured: str
    meaning: str

    def __post_init__(self) -> None:
        # a NumPy comparison gives np.bool_, which is never `is False`: one kind of outcome
        # for the table, the headline, the finding, the metric keys and JUnit alike
        if self.passed is not None:
            self.passed = bool(self.passed)


def attack_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """{attack: [eps labels in increasing order]} found in the sample table."""
    found: dict[str, list[str]] = defaultdict(list)
    for name in table.columns:
        column = parse_adv_column(name)
        if column and column.what == "pred":
            found[column.attack].append(column.eps)
    return {a: sorted(e, key=parse_eps) for a, e in found.items()}


def _rows(table: pd.DataFrame, attack: str, eps: str) -> pd.Series:
    return table[adv_column(attack, eps, "pred")].notna()


def _accuracy(
    table: pd.DataFrame, attack: str, eps: str, rows: pd.Series | None = None
) -> tuple[float, int, int]:
    """(robust accuracy, hits, n) on the rows the attack ran on (∩ ``rows``)."""
    mask = _rows(table, attack, eps) if rows is None else rows & _rows(table, attack, eps)
    hits = int((table.loc[mask, adv_column(attack, eps, "pred")] == table.loc[mask, "label"]).sum())
    n = int(mask.sum())
    return (hits / n if n else float("nan")), hits, n


def _at_or_below(radii: list[str], eps: str) -> str | None:
    """The largest eps label of ``radii`` not above ``eps`` (None: all are above)."""
    below = [e for e in radii if parse_eps(e) <= parse_eps(eps)]
    return max(below, key=parse_eps) if below else None


def worst_case(table: pd.DataFrame, grid: dict[str, list[str]], eps: str) -> pd.Series:
    """Per image: 1 if no L∞ attack fooled it at any eps up to ``eps``, else 0 (NaN: none
    ran). Each attack's columns are already monotone, so its result at its largest eps not
    above ``eps`` says whether it fooled the image at any of them."""
    results = [
        (table[adv_column(a, at, "pred")] == table["label"]).where(_rows(table, a, at))
        for a, radii in grid.items()
        if ATTACK_NORMS.get(a) == "linf" and (at := _at_or_below(radii, eps)) is not None
    ]
    if not results:
        return pd.Series(np.nan, index=table.index)
    return pd.concat(results, axis=1).min(axis=1, skipna=True)


def _put_proportion(section: Section, key: str, hits: int, n: int, level: float) -> tuple:
    if n == 0:
        section.put(key, None, reason="no image was attacked")
        return None
    section.put(key, hits / n)
    ci = clopper_pearson(hits, n, level)
    section.put_interval(key, ci)
    return ci


def sanity_checks(
    table: pd.DataFrame, grid: dict[str, list[str]], num_classes: int, artifacts: dict
) -> list[Check]:
    """The trustworthiness checks; tolerances are about one image unless stated."""
    attacked = table["attacked"] == 1
    n = int(attacked.sum())
    tol = 1.0 / max(n, 1)
    checks = []

    invalid = 0
    for name in table.columns:
        column = parse_adv_column(name)
        if column is not None and column.what == "valid":
            # count each adversarial image once: where the attack ran at this eps, not where
            # it carries a smaller eps's image
            here = table[adv_column(column.attack, column.eps, "ran")] == 1
            invalid += int((table.loc[here, name] == 0).sum())
    checks.append(
        Check(
            "adversarial_valid",
            invalid == 0,
            f"{invalid} invalid adversarial image(s)",
            "every adversarial image is finite, in [0, 1] and within eps; it was "
            "re-evaluated by a plain eval-mode forward pass",
        )
    )

    worst_gap, where = -1.0, ""
    for attack, radii in grid.items():
        for eps in radii:
            acc, _, _ = _accuracy(table, attack, eps)
            clean_here = float(
                (
                    table.loc[_rows(table, attack, eps), "pred"]
                    == table.loc[_rows(table, attack, eps), "label"]
                ).mean()
            )
            if acc - clean_here > worst_gap:
                worst_gap, where = acc - clean_here, attack_at(attack, eps)
    checks.append(
        Check(
            "below_clean",
            worst_gap <= tol,
            f"largest excess over clean accuracy {worst_gap:+.3f} ({where})",
            "no attack leaves more images correct than no attack at all",
        )
    )

    if "fgsm" in grid and "pgd_linf" in grid:
        shared = [e for e in grid["fgsm"] if e in grid["pgd_linf"]]
        gaps = {
            e: _accuracy(table, "pgd_linf", e)[0] - _accuracy(table, "fgsm", e)[0] for e in shared
        }
        worst = max(gaps, key=gaps.get)
        checks.append(
            Check(
                "pgd_beats_fgsm",
                gaps[worst] <= tol,
                f"largest PGD − FGSM accuracy {gaps[worst]:+.3f} at eps {worst}",
                "many PGD steps are at least as strong as one FGSM step",
            )
        )

    if "apgd_dlr" in grid and ("pgd_linf" in grid or "apgd_ce" in grid):
        gaps = []
        for eps in grid["apgd_dlr"]:
            ce = [
                _accuracy(table, a, eps)[0]
                for a in ("pgd_linf", "apgd_ce")
                if eps in grid.get(a, [])
            ]
            if ce:
                gaps.append((min(ce) - _accuracy(table, "apgd_dlr", eps)[0], eps))
        gap, eps = max(gaps)
        checks.append(
            Check(
                "dlr_agrees_with_ce",
                gap <= DLR_SLACK + tol,
                f"APGD-DLR finds {gap:+.3f} lower accuracy than CE attacks at eps {eps}",
                "a margin loss does not find far more adversarial "
                "examples than cross-entropy (else the CE gradient is masked, e.g. "
                "by a saturated softmax)",
            )
        )

    large = artifacts.get("large_eps")
    linf_at_large = [a for a, r in grid.items() if ATTACK_NORMS.get(a) == "linf" and large in r]
    worst = worst_case(table, grid, large) if large and linf_at_large else None
    if worst is not None and worst.notna().any():
        acc = float(worst.mean())
        checks.append(
            Check(
                "large_eps_reaches_chance",
                acc <= 1 / num_classes + CHANCE_SLACK,
                f"worst-case accuracy {acc:.3f} at L∞ eps {large} (chance {1 / num_classes:.3f})",
                "at a huge budget any image can be changed into another class; if the "
                "worst case over the attacks and every eps up to it stays high, the attacks "
                "are not reaching the model (a weak large-eps step alone cannot fail this: "
                "images fooled at a smaller eps count)",
            )
        )

    if "square" in grid:
        gaps = []
        for eps in grid["square"]:
            rows = _rows(table, "square", eps)
            white = [
                _accuracy(table, a, eps, rows)[0]
                for a, r in grid.items()
                if a != "square" and ATTACK_NORMS.get(a) == "linf" and eps in r
            ]
            if white:
                square, _, n_sq = _accuracy(table, "square", eps)
                gaps.append((min(white) - square, eps, n_sq))
        if gaps:
            gap, eps, n_sq = max(gaps)
            checks.append(
                Check(
                    "black_box_not_stronger",
                    gap <= max(BLACK_BOX_SLACK, 1 / max(n_sq, 1)),
                    f"Square beats the white-box attacks by {gap:+.3f} at eps {eps} "
                    f"on {n_sq} images",
                    "a black-box attack that needs no gradient must not beat gradient attacks",
                )
            )

    if "sanity.grad_zero" in table:
        zero = table.loc[attacked, "sanity.grad_zero"].mean()
        checks.append(
            Check(
                "gradients_nonzero",
                zero <= tol,
                f"{zero:.1%} of images have a zero or non-finite input gradient",
                "attacks follow the gradient; where it vanishes they are blind",
            )
        )
    if "sanity.repeat_diff" in table:
        diff = float(table.loc[attacked, "sanity.repeat_diff"].max())
        checks.append(
            Check(
                "deterministic_forward",
                diff <= REPEAT_ATOL,
                f"largest logit change between two identical passes {diff:.2g}",
                "a randomised model (dropout or BatchNorm left in training mode, "
                "random transforms) needs expectation over transformation",
            )
        )
    if "sanity.loss_full_steps" in table and table["sanity.loss_full_steps"].notna().any():
        # on the images PGD-L∞ attacked at the reference eps (the survivors of smaller eps)
        measured = attacked & table["sanity.loss_full_steps"].notna()
        losses = [
            table.loc[measured, f"sanity.{k}"].mean()
            for k in ("loss_clean", "loss_half_steps", "loss_full_steps")
        ]
        rising = losses[1] >= losses[0] and losses[2] >= losses[1] * (1 - LOSS_SLACK)
        checks.append(
            Check(
                "loss_rises",
                rising,
                f"mean loss clean {losses[0]:.3f} → half the steps {losses[1]:.3f}"
                f" → all steps {losses[2]:.3f} (PGD-L∞ at eps "
                f"{artifacts.get('reference_eps')}, {int(measured.sum())} images)",
                "more PGD steps raise the loss: the attack is optimising",
            )
        )
    if not artifacts.get("gradients", True):
        checks += _not_applicable({c.name for c in checks})
    return checks


def _not_applicable(ran: set[str]) -> list[Check]:
    """The white-box checks a model without gradients cannot take, marked not applicable
    (neither passed nor failed: they do not make the numbers unreliable)."""
    return [
        Check(name, None, f"not run: {NO_GRADIENTS}", "needs a white-box (gradient) attack")
        for name in WHITE_BOX_CHECKS
        if name not in ran
    ]


def monotone(table: pd.DataFrame, grid: dict[str, list[str]]) -> pd.DataFrame:
    """The table as the probe writes it: every attack's columns monotone in eps, with its
    ``.ran`` column. A table saved before the probe attacked only the survivors (no
    ``.ran`` columns) holds independent runs per eps; an image an attack got wrong at a
    smaller eps is carried to the larger ones (its prediction, margin and validity; ``.ran``
    0), the attack's own result kept elsewhere (``.ran`` 1). A no-op on newer tables."""
    table = table.copy()
    for attack, radii in grid.items():
        if adv_column(attack, radii[0], "ran") in table:
            continue
        first = _rows(table, attack, radii[0])
        table[adv_column(attack, radii[0], "ran")] = pd.Series(1.0, index=table.index).where(first)
        for smaller, eps in zip(radii, radii[1:], strict=False):
            # the smaller eps's columns are monotone already: wrong there = fooled up to it
            before = table[adv_column(attack, smaller, "pred")]
            carried = (before != table["label"]) & before.notna()
            for what in ("pred", "margin", "valid"):
                if adv_column(attack, smaller, what) in table:
                    table.loc[carried, adv_column(attack, eps, what)] = table.loc[
                        carried, adv_column(attack, smaller, what)
                    ]
            table[adv_column(attack, eps, "ran")] = (
                (~carried).astype(float).where(_rows(table, attack, eps))
            )
    return table


@ANALYSES.register("robustness")
def robustness(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("robustness", "Robustness")
    grid = attack_columns(table)
    table = monotone(table, grid)
    artifacts = ctx.artifacts.get("robustness", {})
    if not grid or "attacked" not in table:
        skipped = artifacts.get("skipped")
        section.headline = (
            f"No attack ran: {'; '.join(skipped)}."
            if skipped
            else "No attack ran (robustness.enabled is false)."
        )
        return section
    level = ctx.config.confidence_level
    attacked = table["attacked"] == 1
    n = int(attacked.sum())
    clean_hits = int((table.loc[attacked, "pred"] == table.loc[attacked, "label"]).sum())
    _put_proportion(section, CLEAN_ACCURACY.key(), clean_hits, n, level)
    section.put(SAMPLES.key(), n)

    rows, curves = [], defaultdict(list)
    for attack, radii in grid.items():
        for eps in radii:
            acc, hits, n_attack = _accuracy(table, attack, eps)
            key = ROBUST_ACCURACY.key(attack=attack, eps=eps)
            ci = _put_proportion(section, key, hits, n_attack, level)
            mask = _rows(table, attack, eps) & (table["pred"] == table["label"])
            flipped = int(
                (table.loc[mask, adv_column(attack, eps, "pred")] != table.loc[mask, "label"]).sum()
            )
            success = SUCCESS_RATE.key(attack=attack, eps=eps)
            section.put(
                success,
                flipped / mask.sum() if mask.sum() else None,
                reason="no correctly classified image was attacked",
            )
            ran, fooled_here = _raw(table, attack, eps)
            rows.append(
                [
                    attack,
                    ATTACK_NORMS.get(attack, "?"),
                    eps,
                    acc,
                    ci,
                    section.metrics[success],
                    n_attack,
                    ran,
                    fooled_here,
                ]
            )
            curves[attack].append([parse_eps(eps), acc, *(ci or (acc, acc))])
    linf_eps = sorted(
        {e for a, r in grid.items() if ATTACK_NORMS.get(a) == "linf" for e in r}, key=parse_eps
    )
    worst_rows = []
    for eps in linf_eps:
        worst = worst_case(table, grid, eps)
        valid = worst.notna()
        hits, n_worst = int(worst[valid].sum()), int(valid.sum())
        ci = _put_proportion(section, WORST_ACCURACY.key(eps=eps), hits, n_worst, level)
        worst_rows.append([eps, hits / n_worst if n_worst else None, ci, n_worst])
        curves["worst case (L∞)"].append([parse_eps(eps), hits / max(n_worst, 1), *(ci or (0, 0))])
    section.tables["attacks"] = Table(
        [
            "attack",
            "norm",
            "eps",
            "robust accuracy",
            f"{level:.0%} CI",
            "success rate",
            "images",
            "attacked at this eps",
            "fooled at this eps",
        ],
        rows,
        caption="Robust accuracy = correct under attack / attacked; success "
        "rate = flipped / correct before the attack. eps in [0, 1] pixel units. An image the "
        "attack fooled at a smaller eps counts as fooled here too; the last two columns are "
        "the raw run at this eps: the images still standing that it attacked, and how many of "
        "them it fooled.",
    )
    section.tables["worst"] = Table(
        ["eps (L∞)", "worst-case accuracy", f"{level:.0%} CI", "images"],
        worst_rows,
        caption="Per image, the worst result over every L∞ attack at that eps or a smaller one.",
    )
    bisection = _bisection_curve(table, artifacts, level)
    if bisection:
        curves[BISECTION_CURVE] = bisection
    section.figures["curves"] = {
        "kind": "robustness_curves",
        "clean": clean_hits / max(n, 1),
        "curves": dict(curves),
        "norms": {a: ATTACK_NORMS.get(a, "linf") for a in curves},
        "steps": [BISECTION_CURVE] if bisection else [],  # drawn as step functions
    }

    _per_class(section, table, grid, ctx)
    _per_group(section, table, grid, level)
    _min_eps(section, table, ctx, artifacts)

    checks = sanity_checks(table, grid, len(ctx.classes), artifacts)
    failed = [c for c in checks if c.passed is False]
    applicable = [c for c in checks if c.passed is not None]
    section.put(RELIABLE.key(), 0.0 if failed else 1.0)
    for check in checks:
        if check.passed is not None:
            section.put(CHECK.key(check=check.name), 1.0 if check.passed else 0.0)
    section.tables["checks"] = Table(
        ["check", "result", "measured", "why it matters"],
        [[c.name, OUTCOME[c.passed], c.measured, c.meaning] for c in checks],
        caption="Tolerance about one image unless stated; see How this was computed.",
    )
    if failed:
        section.find(
            "error",
            "robustness numbers are UNRELIABLE: "
            + "; ".join(f"{c.name} ({c.measured})" for c in failed)
            + ". A gate on a robustness metric makes the run exit 5.",
            metric=RELIABLE.key(),
        )
    if (
        "sanity.softmax_output" in table
        and table.loc[attacked, "sanity.softmax_output"].mean() > 0.99
    ):
        section.find(
            "warning",
            "the model's outputs are probabilities (they sum to one), not "
            "logits: cross-entropy on them has weak, saturating gradients, so attacks "
            "and attributions under-perform; remove the final softmax",
        )
    for note in artifacts.get("skipped", []):
        section.find("info", f"not run: {note}")

    reference = artifacts.get("reference_eps")
    parts = [
        f"{len(applicable) - len(failed)} of {len(applicable)} sanity checks passed, so these "
        f"numbers are {'NOT ' if failed else ''}trustworthy."
    ]
    if not artifacts.get("gradients", True):
        parts.append(
            f"Black-box attacks only: {NO_GRADIENTS}, so the white-box attacks, the minimal "
            f"perturbation and {len(checks) - len(applicable)} white-box checks were not run."
        )
    if reference in linf_eps:
        worst_acc = section.metrics.get(WORST_ACCURACY.key(eps=reference))
        parts.insert(
            0,
            f"Under attack at L∞ eps {reference}, accuracy falls from "
            f"{clean_hits / max(n, 1):.1%} to {worst_acc:.1%} (worst case over "
            f"{sum(1 for a in grid if ATTACK_NORMS.get(a) == 'linf')} attacks on "
            f"{n} test images);",
        )
    section.headline = " ".join(parts)
    cfg = ctx.robustness
    step = cfg["step_size"] or 2.5 / cfg["steps"]
    start = "random start" if cfg["random_start"] else "no random start"
    pgd = f"{cfg['steps']} steps of {step:.3g}·eps, {start}, {cfg['restarts']} restart(s)"
    described = {
        "fgsm": "FGSM",
        "pgd_linf": f"PGD-L∞ ({pgd})",
        "pgd_l2": f"PGD-L2 ({pgd})",
        "apgd_ce": f"APGD-CE ({cfg['steps']} steps)",
        "apgd_dlr": f"APGD-DLR ({cfg['steps']} steps)",
        "apgd_t": f"APGD-T ({cfg['steps']} steps per target class)",
        "fab_t": f"FAB-T ({cfg['steps']} steps per target class)",
        "square": f"Square ({cfg['square_queries']} queries on "
        f"{artifacts.get('square_samples')} images)",
    }
    ran = artifacts.get("attacks", list(grid))
    section.method = (
        f"torchattacks on {n} test images (stratified subset; seed {ctx.seed}): "
        + "; ".join(described.get(a, a) for a in ran)
        + f". {preset_note(cfg)} "
        "Every adversarial image was checked (finite, in [0, 1], within eps) and re-evaluated "
        "in eval mode. Monotone worst case: each attack climbs its eps grid from the smallest "
        "eps and attacks at the next eps only the images it has not fooled yet; an image "
        "fooled at a smaller eps counts as fooled at every "
        "larger eps of the same norm, since the larger ball contains that image, so no "
        "curve can rise with eps. The worst case at an eps counts an image fooled if any L∞ "
        "attack fooled it at that eps or a smaller one. The attacks table keeps each raw run "
        "(images attacked at that eps and fooled there). "
        f"Intervals: exact {level:.0%} Clopper–Pearson. "
        + _min_eps_method(grid, artifacts)
    )
    return section


def _min_eps_method(grid: dict, artifacts: dict) -> str:
    """How the minimal perturbation was measured, or why it was not."""
    if not artifacts.get("gradients", True):
        return f"Minimal perturbation: not measured: it bisects with PGD-L∞, and {NO_GRADIENTS}."
    return (
        "Minimal perturbation: bisection with "
        f"deterministic PGD-L∞ to ±{artifacts.get('min_eps_tolerance', 0):.2g}"
        + (
            ", started inside the bracket the fixed-eps PGD-L∞ runs give each image (the "
            "largest grid eps it survived, the smallest that fooled it)"
            if "pgd_linf" in grid
            else ", from [0, large eps]"
        )
        + "; the curve it gives is drawn beside the fixed-eps points."
    )


def _raw(table: pd.DataFrame, attack: str, eps: str) -> tuple[int, int]:
    """(images the attack ran on at this eps, how many of those it fooled)."""
    ran = table[adv_column(attack, eps, "ran")] == 1
    wrong = table.loc[ran, adv_column(attack, eps, "pred")] != table.loc[ran, "label"]
    return int(ran.sum()), int(wrong.sum())


def _bisection_curve(table: pd.DataFrame, artifacts: dict, level: float) -> list[list[float]]:
    """Robust accuracy against L∞ eps from each image's minimal perturbation: the share of
    the bisected images whose minimal eps is above eps (0 for an image wrong already), a step
    at every measured value from 0 to the large eps, with exact intervals."""
    if "min_eps" not in table or not table["min_eps"].notna().any():
        return []
    values = table.loc[table["min_eps"].notna(), "min_eps"].to_numpy()
    large = parse_eps(artifacts.get("large_eps", "0.5"))
    steps = np.unique(
        np.concatenate([[0.0, large], values[np.isfinite(values) & (values < large)]])
    )
    points = []
    for eps in steps:
        hits = int((values > eps).sum())
        low, high = clopper_pearson(hits, len(values), level)
        points.append([float(eps), hits / len(values), low, high])
    return points


def _per_class(section: Section, table: pd.DataFrame, grid: dict, ctx: AnalysisContext) -> None:
    attack = "pgd_linf" if "pgd_linf" in grid else next(iter(grid))
    rows = []
    for c, name in enumerate(ctx.classes):
        in_class = table["label"] == c
        row = [name]
        for eps in grid[attack]:
            acc, hits, n = _accuracy(table, attack, eps, in_class)
            section.put(
                ROBUST_CLASS_ACCURACY.key(attack=attack, eps=eps, **{"class": key_part(name)}),
                acc if n else None,
                reason=f"no attacked image of class {name!r}",
            )
            row.append(acc if n else None)
        rows.append(row)
    section.tables["per_class"] = Table(
        ["class", *[f"{attack} @ {eps}" for eps in grid[attack]]],
        rows,
        caption=f"Robust accuracy per true class under {attack}.",
    )


def _per_group(section: Section, table: pd.DataFrame, grid: dict, level: float) -> None:
    attack = "pgd_linf" if "pgd_linf" in grid else next(iter(grid))
    attributes = [c for c in table.columns if c.startswith(ATTR_PREFIX)]
    rows = []
    for column in attributes:
        attribute = column[len(ATTR_PREFIX) :]
        for value, members in table.groupby(column, sort=True):
            in_group = table.index.isin(members.index)
            for eps in grid[attack]:
                acc, hits, n = _accuracy(table, attack, eps, pd.Series(in_group, index=table.index))
                key = ROBUST_GROUP_ACCURACY.key(
                    attack=attack, eps=eps, attribute=key_part(attribute), value=key_part(value)
                )
                section.put(key, acc if n else None, reason="no attacked image in the group")
                rows.append(
                    [
                        attribute,
                        value,
                        eps,
                        acc if n else None,
                        clopper_pearson(hits, n, level) if n else None,
                        n,
                    ]
                )
    if rows:
        section.tables["per_group"] = Table(
            ["attribute", "group", f"{attack} eps", "robust accuracy", f"{level:.0%} CI", "images"],
            rows,
            caption="Robust accuracy per group of each attribute.",
        )


def _min_eps(section: Section, table: pd.DataFrame, ctx: AnalysisContext, artifacts: dict) -> None:
    if "min_eps" not in table:
        return
    measured = table["min_eps"].notna()
    values = table.loc[measured, "min_eps"].to_numpy()
    large = artifacts.get("large_eps", "?")
    median = float(np.median(values)) if len(values) else float("nan")
    section.put(
        MIN_EPS_MEDIAN.key(),
        median if np.isfinite(median) else None,
        reason=f"most images were not flipped even at eps {large}",
    )
    rows = []
    for c, name in enumerate(ctx.classes):
        mine = table.loc[measured & (table["label"] == c), "min_eps"].to_numpy()
        med = float(np.median(mine)) if len(mine) else float("nan")
        section.put(
            CLASS_MIN_EPS_MEDIAN.key(**{"class": key_part(name)}),
            med if np.isfinite(med) else None,
            reason=f"no measured image of class {name!r}"
            if not len(mine)
            else f"most images of class {name!r} were not flipped at eps {large}",
        )
        rows.append([name, med if np.isfinite(med) else None, len(mine)])
    section.tables["min_eps"] = Table(
        ["class", "median minimal L∞ eps", "images"],
        rows,
        caption="Smallest L∞ eps at which PGD flips the image (0 if already wrong), median "
        "per class; larger is more robust.",
    )
