"""Explanation quality: faithfulness and sanity of each attribution method, per map and
averaged, from the attribution probe's artifacts.

- deletion AUC (lower is better) and insertion AUC (higher is better) of the
  predicted class's probability, against the same curves for a random pixel
  order; the gains are random − deletion and insertion − random (Petsiuk et
  al., "RISE", 2018);
- randomisation correlation: Spearman correlation between a map and the map
  of the same image after re-initialising the model's top layers; near 1
  means the method does not depend on what the model learned (Adebayo et al.,
  "Sanity Checks for Saliency Maps", 2018);
- Integrated Gradients' convergence delta |Σ attributions − (f(x) − f(0))|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses.base import ANALYSES, AnalysisContext, Section, Table

INSENSITIVE_CORRELATION = 0.5
TITLES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients", "lime": "LIME"}


def _mean(values: list) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


@ANALYSES.register("explanations", summary="faithfulness and sanity of attribution maps")
def explanations(table: pd.DataFrame, ctx: AnalysisContext) -> Section:
    section = Section("explanations", "Explanations")
    run = ctx.artifacts.get("explanations")
    if not run or not run["maps"]:
        section.headline = "No attribution method ran (explain.enabled is false)."
        return section
    rows = []
    for method in run["methods"]:
        maps = [m for m in run["maps"] if m["method"] == method]
        key = f"explain.{method}"
        stats = {
            name: _mean([m[name] for m in maps])
            for name in (
                "deletion_auc",
                "insertion_auc",
                "random_deletion_auc",
                "random_insertion_auc",
                "randomization_correlation",
            )
        }
        for name, value in stats.items():
            section.put(f"{key}.{name}", value, reason="undefined for every map (flat maps)")
        deletion_gain = stats["random_deletion_auc"] - stats["deletion_auc"]
        insertion_gain = stats["insertion_auc"] - stats["random_insertion_auc"]
        section.put(f"{key}.deletion_gain", deletion_gain)
        section.put(f"{key}.insertion_gain", insertion_gain)
        section.put(f"{key}.maps", len(maps))
        delta = None
        if method == "integrated_gradients":
            delta = _mean([m["convergence_delta"] for m in maps])
            section.put(f"{key}.convergence_delta", delta)
        title = TITLES.get(method, method)
        rows.append(
            [
                title,
                len(maps),
                stats["deletion_auc"],
                stats["random_deletion_auc"],
                stats["insertion_auc"],
                stats["random_insertion_auc"],
                stats["randomization_correlation"],
                delta,
            ]
        )
        if deletion_gain <= 0 and insertion_gain <= 0:
            section.find(
                "warning",
                f"{title} is not faithful here: hiding or revealing its "
                "most attributed pixels changes the prediction no more than a random "
                "order does",
                metric=f"{key}.deletion_gain",
            )
        if stats["randomization_correlation"] > INSENSITIVE_CORRELATION:
            section.find(
                "warning",
                f"{title} maps barely change when the model's top layers "
                f"are re-initialised (rank correlation "
                f"{stats['randomization_correlation']:.2f}): the method shows the image "
                "more than what this model learned; do not read its maps as "
                "explanations",
                metric=f"{key}.randomization_correlation",
            )
    section.tables["summary"] = Table(
        [
            "method",
            "maps",
            "deletion AUC ↓",
            "random order",
            "insertion AUC ↑",
            "random order",
            "randomisation correlation ↓",
            "IG convergence delta",
        ],
        rows,
        caption="Means over the explained images. Deletion/insertion AUC: probability of the "
        "predicted class as pixels are removed from the image / added to a black image.",
    )
    section.figures["gallery"] = {
        "kind": "attribution_gallery",
        "classes": ctx.classes,
        "maps": run["maps"],
        "methods": run["methods"],
    }
    best = min(rows, key=lambda r: r[2]) if rows else None
    section.headline = (
        f"{len({m['sample_id'] for m in run['maps']})} images explained with "
        f"{', '.join(TITLES.get(m, m) for m in run['methods'])}; "
        + (
            f"{best[0]} is the most faithful by deletion (AUC {best[2]:.3f} vs {best[3]:.3f} "
            "for a random order)."
            if best
            else ""
        )
    )
    for note in run.get("skipped", []):
        section.find("info", f"not run: {note}")
    section.method = (
        f"captum on the predicted class. Curves: {run['curve_steps']} steps, removed pixels set "
        f"to 0 (black), random orders seeded per image (seed {ctx.seed}). Sanity: the top "
        f"{run['randomized_layers']} parametrised layers re-initialised, Spearman correlation "
        f"of the maps. Integrated Gradients: black baseline, {run['ig_steps']} steps."
    )
    return section
