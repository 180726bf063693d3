"""The ledgers: what a retrained model (hardened, rebalanced) cost and what it bought.

Pure functions of two models' metrics: for each key both models have, the
baseline value, the retrained model's value (``after``) and the change, with
whether the change is an improvement (most metrics are better higher; errors
and gaps between groups are better lower).
"""

from __future__ import annotations

import re

from auditclf.compare import LOWER, direction

COST_KEYS = (
    ("performance.accuracy", "clean accuracy"),
    ("performance.balanced_accuracy", "balanced accuracy"),
    ("performance.worst_class_recall", "worst-class recall"),
    ("performance.ece", "calibration error (ECE)"),
    ("performance.brier", "Brier score"),
)
_ROBUST = re.compile(r"^robustness\.(?P<attack>[a-z0-9_]+)@(?P<eps>[^.]+(?:\.[0-9]+)?)\.accuracy$")
_CLASS = re.compile(r"^performance\.class\.(?P<c>[^.]+)\.recall$")


def _lower_is_better(key: str) -> bool:
    return direction(key) == LOWER  # the one direction table, shared with `auditclf compare`


def _row(key: str, label: str, base: dict, hard: dict) -> dict | None:
    if key not in base or key not in hard:
        return None
    before, after = base[key], hard[key]
    delta = None if before is None or after is None else after - before
    better = (
        None
        if delta is None or abs(delta) < 5e-4  # below what the report displays
        else ((delta < 0) if _lower_is_better(key) else (delta > 0))
    )
    return {
        "key": key,
        "label": label,
        "baseline": before,
        "after": after,
        "delta": delta,
        "better": better,
        "ci": [(m.get(f"{key}.ci_low"), m.get(f"{key}.ci_high")) for m in (base, hard)],
    }


def ledger(base: dict, hard: dict, reference_eps: str | None) -> dict:
    """{"cost": rows, "gain": rows, "per_class": rows, "headline": str}."""
    cost = [r for k, label in COST_KEYS if (r := _row(k, label, base, hard))]
    gain = []
    for key in base:
        match = _ROBUST.match(key)
        if match and ".class." not in key and ".group." not in key:
            attack = "worst case" if match["attack"] == "worst" else match["attack"]
            row = _row(key, f"{attack} @ {match['eps']}", base, hard)
            if row:
                gain.append(row)
    if row := _row("robustness.min_eps.median", "median minimal L∞ eps", base, hard):
        gain.append(row)
    per_class = []
    for key in base:
        match = _CLASS.match(key)
        if match:
            robust_key = f"robustness.pgd_linf@{reference_eps}.class.{match['c']}.accuracy"
            clean, robust = (
                _row(key, match["c"], base, hard),
                _row(robust_key, match["c"], base, hard),
            )
            if clean:
                per_class.append({"class": match["c"], "clean": clean, "robust": robust})
    prefix = f"robustness.pgd_linf@{reference_eps}.group."
    per_group = []
    for key in base:
        if key.startswith(prefix) and key.endswith(".accuracy"):
            label = key[len(prefix) : -len(".accuracy")].replace(".", " = ", 1)
            if row := _row(key, label, base, hard):
                per_group.append(row)
    return {
        "cost": cost,
        "gain": gain,
        "per_class": per_class,
        "per_group": per_group,
        "headline": _headline(base, hard, reference_eps),
    }


def _headline(base: dict, hard: dict, eps: str | None) -> str:
    key = f"robustness.worst@{eps}.accuracy"
    clean = "performance.accuracy"
    if None in (base.get(key), hard.get(key), base.get(clean), hard.get(clean)):
        return "Hardening changed the metrics below."
    change = 100 * (hard[clean] - base[clean])
    moved = "raised" if hard[key] >= base[key] else "lowered"
    effect = (
        f"cost {-change:.1f} points of clean accuracy"
        if change < 0
        else f"changed clean accuracy by {change:+.1f} points"
    )
    return (
        f"Hardening {moved} worst-case accuracy at L∞ eps {eps} from {base[key]:.1%} to "
        f"{hard[key]:.1%} and {effect} ({base[clean]:.1%} → {hard[clean]:.1%})."
    )


def group_ledger(base: dict, after: dict, block: dict, attribute: str) -> dict:
    """Before/after group-balanced retraining, per group of ``attribute``.

    ``block`` is the baseline fairness section's block for the attribute (its
    groups' labels and keys). {"summary": rows, "per_group": rows, "headline": str}.
    """
    prefix = f"fairness.{block['key']}"
    summary_keys = (
        ("performance.accuracy", "overall accuracy"),
        ("performance.balanced_accuracy", "balanced accuracy"),
        (f"{prefix}.accuracy.min", "accuracy of the lowest group"),
        (f"{prefix}.accuracy.difference", "accuracy gap between groups"),
        (f"{prefix}.equalized_odds_difference", "equalized-odds difference"),
    )
    summary = [r for key, label in summary_keys if (r := _row(key, label, base, after))]
    per_group = []
    for group in block["groups"]:
        key = f"{prefix}.group.{group['key']}.accuracy"
        size = base.get(f"{prefix}.group.{group['key']}.size")
        label = group["label"] if size is None else f"{group['label']} ({size:.0f} test images)"
        if row := _row(key, label, base, after):
            row["group"] = group["label"]
            per_group.append(row)
    return {
        "summary": summary,
        "per_group": per_group,
        "headline": _group_headline(per_group, base, after, attribute, prefix),
    }


def _lowest(rows: list[dict], side: str) -> dict | None:
    defined = [r for r in rows if r[side] is not None]
    return min(defined, key=lambda r: r[side]) if defined else None


def _group_headline(rows: list[dict], base: dict, after: dict, attribute: str, prefix: str) -> str:
    before_worst, after_worst = _lowest(rows, "baseline"), _lowest(rows, "after")
    clean = "performance.accuracy"
    if before_worst is None or after_worst is None or None in (base.get(clean), after.get(clean)):
        return f"Group-balanced retraining over {attribute} changed the metrics below."
    gap = f"{prefix}.accuracy.difference"
    gaps = ""
    if base.get(gap) is not None and after.get(gap) is not None:
        gaps = f"; the gap between groups went from {base[gap]:.3f} to {after[gap]:.3f}"
    return (
        f"Group-balanced retraining over {attribute}: the lowest group's accuracy went from "
        f"{before_worst['baseline']:.3f} ({before_worst['group']}) to "
        f"{after_worst['after']:.3f} ({after_worst['group']}){gaps}; overall accuracy "
        f"{base[clean]:.3f} → {after[clean]:.3f}."
    )
