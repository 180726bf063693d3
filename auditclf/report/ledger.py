"""The ledgers: what a retrained model (hardened, rebalanced) cost and what it bought.

The hardened model's ledger is titled and headlined by its method: adversarial
retraining (pgd, fgsm-rs) leads with worst-case adversarial accuracy, AugMix with
the mean accuracy under corruptions (and the adversarial numbers after it).

Pure functions of two models' metrics: for each key both models have, the
baseline value, the retrained model's value (``after``) and the change, with
whether the change is an improvement (most metrics are better higher; errors
and gaps between groups are better lower).
"""

from __future__ import annotations

from auditclf.keys import LOWER, direction, fairness_key, interval_keys, shown_in_points
from auditclf.keys.families import (
    ACCURACY,
    BALANCED_ACCURACY,
    BRIER,
    CLASS_RECALL,
    CORRUPTION_ACCURACY,
    CORRUPTION_MCE,
    CORRUPTION_MEAN_ACCURACY,
    CORRUPTION_WORST_ACCURACY,
    ECE,
    MIN_EPS_MEDIAN,
    ROBUST_ACCURACY,
    ROBUST_CLASS_ACCURACY,
    ROBUST_GROUP_ACCURACY,
    WORST_ACCURACY,
    WORST_CLASS_RECALL,
)

COST_KEYS = (
    (ACCURACY.key(), "clean accuracy"),
    (BALANCED_ACCURACY.key(), "balanced accuracy"),
    (WORST_CLASS_RECALL.key(), "worst-class recall"),
    (ECE.key(), "calibration error (ECE)"),
    (BRIER.key(), "Brier score"),
)
CLEAN = ACCURACY.key()
REFERENCE_ATTACK = "pgd_linf"  # per class and per group, robust accuracy under PGD-L∞
CORRUPTION_MEAN = CORRUPTION_MEAN_ACCURACY.key()  # AugMix's headline: accuracy under corruptions
# how the report names each hardening (harden.method): the ledger's title and headline
RETRAINING = {
    "pgd": "adversarial retraining",
    "fgsm-rs": "adversarial retraining",
    "augmix": "AugMix retraining against corruptions",
}


def _row(key: str, label: str, base: dict, hard: dict) -> dict | None:
    if key not in base or key not in hard:
        return None
    before, after = base[key], hard[key]
    delta = None if before is None or after is None else after - before
    better = (
        None
        if delta is None or abs(delta) < 5e-4  # below what the report displays
        else ((delta < 0) if direction(key) == LOWER else (delta > 0))
    )
    bounds = interval_keys(key)
    return {
        "key": key,
        "label": label,
        "baseline": before,
        "after": after,
        "delta": delta,
        "better": better,
        "ci": [
            (m.get(bounds[0]), m.get(bounds[1])) if bounds else (None, None) for m in (base, hard)
        ],
        "points": shown_in_points(key),  # a proportion: its change is shown in points
    }


def ledger(base: dict, hard: dict, reference_eps: str | None, method: str) -> dict:
    """{"title": str, "method": str, "cost": rows, "gain": rows, "per_class": rows,
    "per_group": rows, "corruption": rows, "mce": float | None, "headline": str}; ``method`` is
    ``harden.method`` (the title and headline name it)."""
    cost = [r for k, label in COST_KEYS if (r := _row(k, label, base, hard))]
    gain = []
    for key in base:
        if robust := ROBUST_ACCURACY.match(key):
            label = f"{robust['attack']} @ {robust['eps']}"
        elif worst := WORST_ACCURACY.match(key):
            label = f"worst case @ {worst['eps']}"
        else:
            continue
        if row := _row(key, label, base, hard):
            gain.append(row)
    if row := _row(MIN_EPS_MEDIAN.key(), "median minimal L∞ eps", base, hard):
        gain.append(row)
    reference = {"attack": REFERENCE_ATTACK, "eps": reference_eps}
    per_class = []
    for key in base:
        if recall := CLASS_RECALL.match(key):
            name = recall["class"]
            robust_key = ROBUST_CLASS_ACCURACY.key(**reference, **{"class": name})
            clean, robust = _row(key, name, base, hard), _row(robust_key, name, base, hard)
            if clean:
                per_class.append({"class": name, "clean": clean, "robust": robust})
    per_group = []
    for key in base:
        group = ROBUST_GROUP_ACCURACY.match(key)
        if not group or (group["attack"], group["eps"]) != (REFERENCE_ATTACK, reference_eps):
            continue
        if row := _row(key, f"{group['attribute']} = {group['value']}", base, hard):
            per_group.append(row)
    headline = (
        _augmix_headline(base, hard, reference_eps)
        if method == "augmix"
        else _headline(base, hard, reference_eps)
    )
    return {
        "title": f"Baseline vs hardened: what {RETRAINING.get(method, 'hardening')} cost "
        "and bought",
        "cost": cost,
        "gain": gain,
        "per_class": per_class,
        "per_group": per_group,
        "method": method,
        "corruption": corruption_rows(base, hard),
        "mce": hard.get(CORRUPTION_MCE.key()),
        "headline": headline,
    }


def corruption_rows(base: dict, after: dict) -> list[dict]:
    """Accuracy under corruptions before and after retraining: the mean, the most damaging
    corruption, then each corruption (mean over its severities)."""
    rows = [
        _row(CORRUPTION_MEAN_ACCURACY.key(), "mean over every corruption", base, after),
        _row(CORRUPTION_WORST_ACCURACY.key(), "most damaging corruption", base, after),
    ]
    for key in base:
        if found := CORRUPTION_ACCURACY.match(key):
            rows.append(_row(key, found["corruption"], base, after))
    return [row for row in rows if row]


def _clean_effect(base: dict, hard: dict) -> str:
    """ "cost 1.2 points of clean accuracy (98.0% → 96.8%)", or the change when not a cost."""
    change = 100 * (hard[CLEAN] - base[CLEAN])
    effect = (
        f"cost {-change:.1f} points of clean accuracy"
        if change < 0
        else f"changed clean accuracy by {change:+.1f} points"
    )
    return f"{effect} ({base[CLEAN]:.1%} → {hard[CLEAN]:.1%})"


def _both(key: str, base: dict, hard: dict) -> bool:
    return base.get(key) is not None and hard.get(key) is not None


def _headline(base: dict, hard: dict, eps: str | None) -> str:
    key = WORST_ACCURACY.key(eps=eps)
    if not (_both(key, base, hard) and _both(CLEAN, base, hard)):
        return "Hardening changed the metrics below."
    moved = "raised" if hard[key] >= base[key] else "lowered"
    return (
        f"Hardening {moved} worst-case accuracy at L∞ eps {eps} from {base[key]:.1%} to "
        f"{hard[key]:.1%} and {_clean_effect(base, hard)}."
    )


def _augmix_headline(base: dict, hard: dict, eps: str | None) -> str:
    """What AugMix did to accuracy under corruptions and to clean accuracy, then (when
    attacks ran) to worst-case adversarial accuracy."""
    if not _both(CLEAN, base, hard):
        return "AugMix retraining changed the metrics below."
    if _both(CORRUPTION_MEAN, base, hard):
        before, after = base[CORRUPTION_MEAN], hard[CORRUPTION_MEAN]
        moved = "raised" if after >= before else "lowered"
        text = (
            f"AugMix retraining {moved} mean accuracy under corruptions from {before:.1%} to "
            f"{after:.1%} and {_clean_effect(base, hard)}."
        )
    else:
        text = f"AugMix retraining {_clean_effect(base, hard)}."
    worst = WORST_ACCURACY.key(eps=eps)
    if _both(worst, base, hard):
        text += f" Worst-case accuracy at L∞ eps {eps}: {base[worst]:.1%} → {hard[worst]:.1%}."
    return text


def group_ledger(base: dict, after: dict, block: dict, attribute: str) -> dict:
    """Before/after group-balanced retraining, per group of ``attribute``.

    ``block`` is the baseline fairness section's block for the attribute (its
    groups' labels and keys). {"summary": rows, "per_group": rows, "headline": str}.
    """
    attr = block["key"]
    summary_keys = (
        (CLEAN, "overall accuracy"),
        (BALANCED_ACCURACY.key(), "balanced accuracy"),
        (fairness_key(attr, "accuracy.min"), "accuracy of the lowest group"),
        (fairness_key(attr, "accuracy.difference"), "accuracy gap between groups"),
        (fairness_key(attr, "equalized_odds_difference"), "equalized-odds difference"),
    )
    summary = [r for key, label in summary_keys if (r := _row(key, label, base, after))]
    per_group = []
    for group in block["groups"]:
        key = fairness_key(attr, "accuracy", group=group["key"])
        size = base.get(fairness_key(attr, "size", group=group["key"]))
        label = group["label"] if size is None else f"{group['label']} ({size:.0f} test images)"
        if row := _row(key, label, base, after):
            row["group"] = group["label"]
            per_group.append(row)
    return {
        "summary": summary,
        "per_group": per_group,
        "headline": _group_headline(per_group, base, after, attribute, attr),
    }


def _lowest(rows: list[dict], side: str) -> dict | None:
    defined = [r for r in rows if r[side] is not None]
    return min(defined, key=lambda r: r[side]) if defined else None


def _group_headline(rows: list[dict], base: dict, after: dict, attribute: str, attr: str) -> str:
    before_worst, after_worst = _lowest(rows, "baseline"), _lowest(rows, "after")
    clean = CLEAN
    if before_worst is None or after_worst is None or None in (base.get(clean), after.get(clean)):
        return f"Group-balanced retraining over {attribute} changed the metrics below."
    gap = fairness_key(attr, "accuracy.difference")
    gaps = ""
    if base.get(gap) is not None and after.get(gap) is not None:
        gaps = f"; the gap between groups went from {base[gap]:.3f} to {after[gap]:.3f}"
    return (
        f"Group-balanced retraining over {attribute}: the lowest group's accuracy went from "
        f"{before_worst['baseline']:.3f} ({before_worst['group']}) to "
        f"{after_worst['after']:.3f} ({after_worst['group']}){gaps}; overall accuracy "
        f"{base[clean]:.3f} → {after[clean]:.3f}."
    )
