"""Auditing a model without gradients: what runs, what is skipped, and why.

A model that can only be queried (an ONNX file run by onnxruntime, say) has no gradient of
its output with respect to its input or its weights. Clean metrics, calibration, fairness,
corruptions, the shift set, the black-box attacks (Square) and LIME need nothing more. The
white-box attacks (FGSM, PGD, APGD, FAB), the minimal-perturbation bisection (PGD), the
gradient sanity checks, the adversarial gallery (PGD images), Grad-CAM, Integrated
Gradients and the adversarial-map stability check (it explains PGD images) need input
gradients, and hardening and rebalancing retrain the weights. The loader that knows says so
(``ModelAdapter.gradients``); nothing here guesses. Torch-free: the dry run, the probes'
notes and the report read it.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditclf.catalog import ATTRIBUTION_FACTS, BLACK_BOX_ATTACKS
from auditclf.config import AuditConfig
from auditclf.errors import UsageError

NO_GRADIENTS = "the model has no gradients (it can only be queried)"
# the Limitations items of what a model without gradients skipped: "<Section> without gradients"
WITHOUT_GRADIENTS = " without gradients"
# the robustness sanity checks that follow a gradient or compare with a white-box attack
WHITE_BOX_CHECKS = (
    "pgd_beats_fgsm",
    "dlr_agrees_with_ce",
    "large_eps_reaches_chance",
    "black_box_not_stronger",
    "gradients_nonzero",
    "loss_rises",
)


def white_box_attacks(attacks: Iterable[str]) -> list[str]:
    """The attacks of ``attacks`` that need the model's gradients."""
    return [name for name in attacks if name not in BLACK_BOX_ATTACKS]


def gradient_methods(methods: Iterable[str]) -> list[str]:
    """The attribution methods of ``methods`` that need the model's gradients."""
    return [name for name in methods if ATTRIBUTION_FACTS[name].gradients]


def skipped_sections(config: AuditConfig) -> list[dict]:
    """The Limitations items of an audit of a model without gradients: per enabled section,
    what was not run and what the section rests on instead."""
    items = []
    robustness = config.robustness
    if robustness.enabled:
        white = white_box_attacks(robustness.attacks)
        black = [name for name in robustness.attacks if name not in white]
        rests = (
            f"robustness rests on the black-box {', '.join(black)} alone"
            if black
            else "no black-box attack is configured (add square to robustness.attacks), so "
            "no attack ran"
        )
        items.append(
            {
                "section": "Robustness" + WITHOUT_GRADIENTS,
                "reason": f"{NO_GRADIENTS}: the white-box attacks "
                f"({', '.join(white) or 'none configured'}), the minimal-perturbation "
                "bisection and the adversarial gallery (PGD-L∞) and the white-box sanity "
                f"checks ({', '.join(WHITE_BOX_CHECKS)}) were not run; {rests}",
            }
        )
    explain = config.explain
    if explain.enabled:
        skipped = [ATTRIBUTION_FACTS[m].title for m in gradient_methods(explain.methods)]
        left = [m for m in explain.methods if not ATTRIBUTION_FACTS[m].gradients]
        rests = (
            f"explanations rest on {', '.join(ATTRIBUTION_FACTS[m].title for m in left)} alone"
            if left
            else "no gradient-free method is configured (add lime to explain.methods), so no "
            "map was made"
        )
        adversarial = (
            ", nor the adversarial-map stability check (it explains PGD-L∞ images)"
            if robustness.enabled
            else ""
        )
        items.append(
            {
                "section": "Explanations" + WITHOUT_GRADIENTS,
                "reason": f"{NO_GRADIENTS}: {', '.join(skipped) or 'no gradient method'} "
                f"not run{adversarial}; {rests}",
            }
        )
    return items


def refuse_retraining(config: AuditConfig) -> None:
    """A usage error when the config asks to retrain (harden, rebalance) a model without
    gradients: retraining follows the weights' gradients."""
    asked = []
    if config.harden.method != "none":
        asked.append(f"harden.method {config.harden.method}")
    if config.fairness.rebalance:
        asked.append(f"fairness.rebalance {config.fairness.rebalance}")
    if asked:
        raise UsageError(
            f"{' and '.join(asked)}: retraining needs the model's gradients, and "
            f"{NO_GRADIENTS}; audit it with harden.method: none and no fairness.rebalance"
        )


def refuse_gradient_keys(asked: Iterable[tuple[str, str]], lost: set[str]) -> None:
    """A usage error for the first of ``asked`` (key, what asked for it: a gate, a
    tolerance) whose key is among ``lost``: the keys only a model with gradients has."""
    for key, what in asked:
        if key in lost:
            raise UsageError(
                f"{what}: {key!r} is not measured in this run: it needs the model's "
                f"gradients, and {NO_GRADIENTS} (only black-box attacks and LIME run)"
            )
