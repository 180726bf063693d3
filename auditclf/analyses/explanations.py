"""Explanation quality from the attribution probe's ``explain.*`` columns of the sample
table (see :func:`auditclf.keys.explain_column`): per method, per map and averaged,
plus a per-class shortcut check. The probe's run notes (methods, settings) come from
its artifacts; the images and maps stay in the artifact file, which the galleries
name by row (``rank``).

- Faithfulness: deletion AUC (lower is better) and insertion AUC (higher is
  better) of the predicted class's probability, against the same curves for a
  random pixel order; the gains are random − deletion and insertion − random
  (Petsiuk et al., "RISE", 2018).
- Sanity: Spearman correlation between a map and the map of the same image
  after re-initialising the model's top layers; near 1 means the method does
  not depend on what the model learned (Adebayo et al., "Sanity Checks for
  Saliency Maps", 2018).
- Stability: Spearman correlation and top-k overlap between the map of an
  image and of the same image with slight Gaussian noise, and of its PGD
  adversarial version (same explained class) when attacks ran.
- Localisation (images with object masks): share of |attribution| on the
  object, and the pointing game (is the map's maximum on the object).
- Shortcut: per class, the share of |attribution| in a region the class
  should not depend on (outside the object, or the image border), relative to
  the region's area, and how often pasting that region from other test images
  changes the prediction.
- Integrated Gradients' convergence delta |Σ attributions − (f(x) − f(0))|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table, key_part
from auditclf.catalog import ATTRIBUTION_FACTS
from auditclf.keys import explain_column

INSENSITIVE_CORRELATION = 0.5
UNSTABLE_CORRELATION = 0.5
SHORTCUT_FLIP_RATE = 0.5  # pasting the region from other images changes ≥ half the predictions
SHORTCUT_ENRICHMENT = 0.75  # ... and the maps give the region ≥ 3/4 of its area's share
FINE_METHODS = tuple(m for m, facts in ATTRIBUTION_FACTS.items() if facts.fine)  # region share
DELTA_METHODS = tuple(m for m, facts in ATTRIBUTION_FACTS.items() if facts.convergence_delta)
TITLES = {method: facts.title for method, facts in ATTRIBUTION_FACTS.items()}
PER_MAP = (
    "deletion_auc",
    "insertion_auc",
    "random_deletion_auc",
    "random_insertion_auc",
    "randomization_correlation",
    "noise_rank_correlation",
    "noise_topk_overlap",
    "adversarial_rank_correlation",
    "adversarial_topk_overlap",
    "region_share",
    "mask_mass",
    "pointing_hit",
)
PER_IMAGE = ("random_deletion_auc", "random_insertion_auc")  # the same for every method
GALLERY_SCORES = (
    "deletion_auc",
    "random_deletion_auc",
    "insertion_auc",
    "random_insertion_auc",
    "randomization_correlation",
    "noise_rank_correlation",
    "adversarial_rank_correlation",
    "adversarial_topk_overlap",
    "mask_mass",
)


def _mean(values: list) -> float:
    finite = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def title(method: str) -> str:
    return TITLES.get(method, method)


def score_column(name: str, method: str) -> str:
    """The column of one per-map score (one per image for the random-order curves)."""
    return explain_column(name, None if name in PER_IMAGE else method)


def explained_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The explained rows in the probe's order (``rank``); none when the probe did not run."""
    rank = explain_column("rank")
    if rank not in table:
        return table.iloc[:0]
    return table[table[rank].notna()].sort_values(rank, kind="stable")


def _values(rows: pd.DataFrame, column: str) -> list:
    return list(rows[column]) if column in rows else []


def _method_scores(section: Section, rows: pd.DataFrame, method: str) -> dict[str, float]:
    key = f"explain.{method}"
    present = [name for name in PER_MAP if score_column(name, method) in rows]
    stats = {name: _mean(_values(rows, score_column(name, method))) for name in present}
    stats["deletion_gain"] = stats["random_deletion_auc"] - stats["deletion_auc"]
    stats["insertion_gain"] = stats["insertion_auc"] - stats["random_insertion_auc"]
    if method in DELTA_METHODS:
        stats["convergence_delta"] = _mean(_values(rows, score_column("convergence_delta", method)))
    for name, value in stats.items():
        metric = "pointing_accuracy" if name == "pointing_hit" else name
        section.put(f"{key}.{metric}", value, reason="undefined for every map (flat maps)")
    section.put(f"{key}.maps", len(rows))
    return stats


def _method_findings(section: Section, method: str, stats: dict, run: dict) -> None:
    name, key = title(method), f"explain.{method}"
    if stats["deletion_gain"] <= 0 and stats["insertion_gain"] <= 0:
        section.find(
            "warning",
            f"{name} is not faithful here: hiding or revealing its most attributed pixels "
            "changes the prediction no more than a random order does",
            metric=f"{key}.deletion_gain",
        )
    if stats.get("randomization_correlation", np.nan) > INSENSITIVE_CORRELATION:
        section.find(
            "warning",
            f"{name} maps barely change when the model's top layers are re-initialised "
            f"(rank correlation {stats['randomization_correlation']:.2f}): the method shows "
            "the image more than what this model learned; do not read its maps as explanations",
            metric=f"{key}.randomization_correlation",
        )
    if stats.get("noise_rank_correlation", 1.0) < UNSTABLE_CORRELATION:
        section.find(
            "warning",
            f"{name} maps are unstable: noise of std {run['noise_std']} (invisible to a "
            f"reader) changes their pixel ranking (rank correlation "
            f"{stats['noise_rank_correlation']:.2f}, top-{run['top_fraction']:.0%} overlap "
            f"{stats['noise_topk_overlap']:.2f}); a single map says little",
            metric=f"{key}.noise_rank_correlation",
        )


def _shortcuts(section: Section, rows: pd.DataFrame, run: dict, classes: list[str]) -> list[list]:
    """Per class: swap flip rate, region share of the finer maps, and the verdict."""
    fine = [m for m in run["methods"] if m in FINE_METHODS] or list(run["methods"])
    flips = explain_column("swap_flip_rate")
    table, flagged = [], []
    for label, members in rows.groupby("label", sort=True):
        name = classes[int(label)]
        key = f"explain.shortcut.class.{key_part(name)}"
        flip = float(members[flips].mean())
        area = float(members[explain_column("region_area")].mean())
        share = _mean([v for m in fine for v in _values(members, score_column("region_share", m))])
        enrichment = share / area if area > 0 else float("nan")
        section.put(f"{key}.swap_flip_rate", flip)
        section.put(f"{key}.region_share", share, reason="flat maps")
        section.put(f"{key}.region_enrichment", enrichment, reason="flat maps or empty region")
        likely = bool(flip >= SHORTCUT_FLIP_RATE and enrichment >= SHORTCUT_ENRICHMENT)
        verdict = "likely" if likely else "—"
        table.append([name, len(members), area, share, enrichment, flip, verdict])
        if likely:
            flagged.append(name)
            section.find(
                "warning",
                f"Likely shortcut for class '{name}': the maps ({', '.join(map(title, fine))}) "
                f"put {share:.0%} of their attribution {run['region']}, which is {area:.0%} of "
                f"the image, and pasting that region from other test images changes "
                f"{flip:.0%} of these predictions. The model seems to decide '{name}' from "
                f"what lies {run['region']}, not from the object itself",
                metric=f"{key}.swap_flip_rate",
            )
    section.put("explain.shortcut.flagged_classes", len(flagged))
    section.put("explain.shortcut.swap_flip_rate", rows[flips].mean())
    return table


def _localisation(section: Section, rows: pd.DataFrame, per_method: dict[str, dict]) -> None:
    mask_area = _mean(_values(rows, explain_column("mask_area")))
    section.put("explain.mask_area", mask_area)
    parts = [
        f"{title(m)} {s['mask_mass']:.0%} (pointing game {s['pointing_hit']:.0%})"
        for m, s in per_method.items()
        if np.isfinite(s.get("mask_mass", float("nan")))
    ]
    if parts:
        section.find(
            "info",
            f"Localisation: the objects cover {mask_area:.0%} of the explained images; share "
            f"of attribution on the object: {'; '.join(parts)}",
        )


@ANALYSES.register("explanations")
def explanations(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("explanations", "Explanations")
    run = ctx.artifacts.get("explanations")
    explained = explained_rows(table)
    if not run or not run["methods"] or not len(explained):
        section.headline = "No attribution method ran (explain.enabled is false)."
        return section
    per_method = {m: _method_scores(section, explained, m) for m in run["methods"]}
    for method, stats in per_method.items():
        _method_findings(section, method, stats, run)
    if run.get("has_masks"):
        _localisation(section, explained, per_method)
    shortcut_rows = _shortcuts(section, explained, run, ctx.classes)
    flagged_classes = {row[0] for row in shortcut_rows if row[-1] == "likely"}
    for note in run.get("skipped", []):
        section.find("info", f"not run: {note}")
    adversarial = run.get("adversarial_eps") is not None

    columns = [
        "method",
        "maps",
        "deletion AUC ↓",
        "random order",
        "insertion AUC ↑",
        "random order",
        "randomisation corr. ↓",
        "noise corr. ↑",
        f"noise top-{run['top_fraction']:.0%} ↑",
    ]
    names = [
        "deletion_auc",
        "random_deletion_auc",
        "insertion_auc",
        "random_insertion_auc",
        "randomization_correlation",
        "noise_rank_correlation",
        "noise_topk_overlap",
    ]
    if adversarial:
        columns += ["adversarial corr.", f"adversarial top-{run['top_fraction']:.0%}"]
        names += ["adversarial_rank_correlation", "adversarial_topk_overlap"]
    if run.get("has_masks"):
        columns += ["mass on object ↑", "pointing game ↑"]
        names += ["mask_mass", "pointing_hit"]
    columns.append("IG convergence delta")
    rows = [
        [title(m), len(explained)]
        + [stats.get(n) for n in names]
        + [stats.get("convergence_delta")]
        for m, stats in per_method.items()
    ]
    section.tables["summary"] = Table(
        columns,
        rows,
        caption="Means over the explained images. Deletion/insertion AUC: probability of the "
        "predicted class as pixels are removed from the image / added to a black image, in "
        "the map's order and in a random order. Correlations are Spearman rank correlations "
        "with the map of the same image after re-initialising the model (should be low), "
        "with slight noise added (should be high)"
        + (", and of its adversarial version" if adversarial else "")
        + ".",
    )
    section.tables["shortcuts"] = Table(
        [
            "class",
            "images",
            "region area",
            "attribution in region",
            "share ÷ area",
            "predictions changed by swapping the region",
            "shortcut",
        ],
        shortcut_rows,
        caption=f"Region: {run['region']}. Shares from "
        f"{', '.join(title(m) for m in run['methods'] if m in FINE_METHODS) or 'the maps'}. "
        f"A likely shortcut: swapping changes ≥ {SHORTCUT_FLIP_RATE:.0%} of the predictions and "
        f"the maps give the region ≥ {SHORTCUT_ENRICHMENT:.0%} of the share its area would.",
    )
    _galleries(section, explained, run, ctx.classes, flagged_classes)
    flagged = len(flagged_classes)
    best = min(rows, key=lambda r: r[2] if r[2] is not None else np.inf)
    section.headline = (
        f"{len(explained)} images explained with "
        f"{', '.join(title(m) for m in run['methods'])}; {best[0]} is the most faithful by "
        f"deletion (AUC {best[2]:.3f} vs {best[3]:.3f} for a random order); "
        + (
            f"likely shortcut in {flagged} class(es) — see the findings."
            if flagged
            else f"no class relies on what lies {run['region']} (no shortcut found)."
        )
        + "".join(f" Not run: {note}." for note in run.get("skipped", []))
    )
    section.method = (
        f"captum on the predicted class; per class the most confident correct predictions and "
        f"errors. Curves: {run['curve_steps']} steps, removed pixels set to 0 (black), random "
        f"orders seeded per image (seed {ctx.seed}). Sanity: the top "
        f"{run['randomized_layers']} parametrised layers re-initialised. Stability: Gaussian "
        f"noise of std {run['noise_std']} (seeded per image)"
        + (
            f"; adversarial versions by PGD-L∞ at eps {run['adversarial_eps']} against the true "
            "label, explained for the same class"
            if adversarial
            else ""
        )
        + f"; top-k overlap over the top {run['top_fraction']:.0%} pixels. Integrated "
        f"Gradients: black baseline, {run['ig_steps']} steps. LIME: "
        f"{run.get('lime_samples', '?')} perturbations, SLIC superpixels from 32 px, a grid "
        f"below. Shortcut region: {run['region']}; each image receives that region from "
        f"{run.get('swap_donors', '?')} other test images (seeded), where a donor's own object "
        "covers it its mean region colour fills in."
        + (
            " Localisation against the object masks; pointing game with a tolerance of 15 px "
            "at 224 px, scaled."
            if run.get("has_masks")
            else ""
        )
    )
    return section


def _galleries(
    section: Section, rows: pd.DataFrame, run: dict, classes: list[str], flagged: set[str]
) -> None:
    """One gallery figure per class: its explained images with each method's scores; the
    pixels stay in the artifact file, found by ``index`` (the image's ``rank``)."""
    adversarial = explain_column("adversarial_pred")
    for label, members in rows.groupby("label", sort=True):
        images, maps = [], []
        for _, row in members.iterrows():
            image = {
                "sample_id": str(row["sample_id"]),
                "index": int(row[explain_column("rank")]),
                "label": int(row["label"]),
                "pred": int(row["pred"]),
                "swap_flip_rate": float(row[explain_column("swap_flip_rate")]),
            }
            if adversarial in row:
                image["adversarial_pred"] = int(row[adversarial])
            images.append(image)
            for method in run["methods"]:
                scores = {
                    name: float(row[score_column(name, method)])
                    for name in GALLERY_SCORES
                    if score_column(name, method) in row
                }
                maps.append({"sample_id": image["sample_id"], "method": method, **scores})
        name = classes[int(label)]
        section.figures[f"gallery.{key_part(name)}"] = {
            "kind": "attribution_gallery",
            "title": f"Class {name}: attribution maps with their scores",
            "classes": classes,
            "methods": run["methods"],
            "images": images,
            "maps": maps,
            "adversarial_eps": run.get("adversarial_eps"),
            "flagged": name in flagged,
        }
