"""The hardening ledger: what adversarial retraining cost and what it bought.

A pure function of the two models' metrics: for each key both models have,
the baseline value, the hardened value and the change, with whether the change
is an improvement (most metrics are better higher; errors are better lower).
"""

from __future__ import annotations

import re

LOWER_IS_BETTER = ("performance.ece", "performance.mce", "performance.brier", "performance.nll")
COST_KEYS = (
    ("performance.accuracy", "clean accuracy"),
    ("performance.balanced_accuracy", "balanced accuracy"),
    ("performance.worst_class_recall", "worst-class recall"),
    ("performance.ece", "calibration error (ECE)"),
    ("performance.brier", "Brier score"),
)
_ROBUST = re.compile(r"^robustness\.(?P<attack>[a-z0-9_]+)@(?P<eps>[^.]+(?:\.[0-9]+)?)\.accuracy$")
_CLASS = re.compile(r"^performance\.class\.(?P<c>[^.]+)\.recall$")


def _row(key: str, label: str, base: dict, hard: dict) -> dict | None:
    if key not in base or key not in hard:
        return None
    before, after = base[key], hard[key]
    delta = None if before is None or after is None else after - before
    better = (
        None
        if delta is None or abs(delta) < 5e-4  # below what the report displays
        else ((delta < 0) if key in LOWER_IS_BETTER else (delta > 0))
    )
    return {
        "key": key,
        "label": label,
        "baseline": before,
        "hardened": after,
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
