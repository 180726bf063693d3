"""The report's Limitations: what a run did not check, and why; sample-size caveats.

Prose only, written from what the run recorded (the data summary, the config and the
baseline's artifacts); it never looks at a model or a probe.
"""

from __future__ import annotations

from auditclf.config import AuditConfig
from auditclf.data.attributes import audited_attributes
from auditclf.device_defaults import describe_defaults


def limitations(data: dict, config: AuditConfig, artifacts: dict) -> list[dict]:
    """What this run did not check, and why (``artifacts["skipped"]``: the sections a model
    without gradients could not run, :func:`auditclf.gradients.skipped_sections`);
    sample-size caveats."""
    items: list[dict] = []
    explained = artifacts.get("explanations")
    if not config.explain.enabled:
        items.insert(
            0,
            {
                "section": "Explanations",
                "reason": "explain.enabled is false in this run's configuration: no "
                "attribution maps, faithfulness, stability or shortcut checks",
            },
        )
    elif explained:
        scope = "every model" if config.explain.all_models else "the baseline model only"
        reason = (
            f"{explained['explained']} test images explained ({scope}): the per-class "
            "scores and shortcut verdicts rest on a few images per class"
        )
        if not explained.get("has_masks"):
            reason += (
                "; the data has no object masks, so localisation was not measured and the "
                "shortcut check looks at the image border only"
            )
        items.append({"section": "Explanations", "reason": reason})
    if not config.robustness.enabled:
        items.insert(
            0,
            {
                "section": "Robustness",
                "reason": "robustness.enabled is false in "
                "this run's configuration; no robustness claim is made",
            },
        )
    else:
        run = artifacts.get("robustness", {})
        items.append(
            {
                "section": "Attack strength",
                "reason": "robust accuracy is an upper "
                "bound: it holds against the attacks run here (steps, restarts, "
                f"{run.get('square_samples', 0)} images for Square), not against every "
                "attacker; L0, patch and physical attacks are not tested",
            }
        )
    items += artifacts.get("skipped", [])  # what a model without gradients could not run
    items.append(_corruption_limitation(config, artifacts.get("corruption")))
    items += fairness_limitations(data, config)
    test_count = data["split_counts"]["test"]
    per_class = min(data["class_distribution"]["test"].values())
    items.append(
        {
            "section": "Sample size",
            "reason": f"the test split has {test_count} images "
            f"(the smallest class {per_class}); per-class figures carry wide intervals",
        }
    )
    items.append({"section": "Test images", "reason": data["audited"]})
    if data["split_counts"]["train"] == 0:
        items.append(
            {
                "section": "Training data",
                "reason": "this run did not see the model's training data: had any of these "
                "images been training images, the test metrics would be optimistic",
            }
        )
    elif not data["split_given"]:
        items.append(
            {
                "section": "Distribution shift",
                "reason": "train and test come from one "
                "pool split at random; performance on data from elsewhere is not measured"
                if "shift" not in data
                else "train and test come from one pool split at random; data from "
                f"elsewhere is measured on the shift set {data['shift']['name']!r} "
                f"({data['shift']['num_images']} images) only, not on other sources",
            }
        )
    return items


def device_limitations(device_counts: dict[str, int], device_type: str) -> list[dict]:
    """The counts the device chose (how many images were attacked and explained), so that a
    reviewer knows the coverage was a default and how to widen it."""
    text = describe_defaults(device_counts, device_type)
    return (
        [{"section": "Coverage", "reason": f"{text}; set them in the config to change"}]
        if (text)
        else []
    )


def fairness_limitations(data: dict, config: AuditConfig) -> list[dict]:
    """Why fairness was not checked, or which of its groups are too small to judge."""
    cfg = config.fairness
    if not cfg.enabled:
        return [{"section": "Fairness", "reason": "fairness.enabled is false: no subgroup audit"}]
    if not data.get("attributes"):
        return [
            {
                "section": "Fairness",
                "reason": "the data carries no group attributes (give a CSV manifest with "
                "attribute columns, or --metadata CSV for a folder); no subgroup was audited",
            }
        ]
    counts = data["attribute_counts"]["test"]
    audited = audited_attributes(cfg, data["attributes"])
    items = [
        {
            "section": "Groups audited",
            "reason": f"only the attributes the data records ({', '.join(audited)}); "
            "groups it does not record are not checked",
        }
    ]
    small = [
        f"{name} = {value} ({n})"
        for name in audited
        for value, n in counts[name].items()
        if n < cfg.min_group_size
    ]
    if small:
        items.append(
            {
                "section": "Small groups",
                "reason": f"{', '.join(small)} have fewer than {cfg.min_group_size} test "
                "images: their metrics are insufficient data, left out of every gap",
            }
        )
    return items


def _corruption_limitation(config: AuditConfig, run: dict | None) -> dict:
    """Corruptions off, or what their numbers rest on."""
    if not config.corruptions.enabled or run is None:
        return {
            "section": "Corruptions",
            "reason": "corruptions.enabled is false in this run's configuration: no claim is "
            "made about noise, blur, exposure, compression, pose or occlusion",
        }
    return {
        "section": "Corruptions",
        "reason": f"{run['samples']} test images under {len(run['names'])} synthetic "
        "corruptions (parameters in the severity table); real cameras, scanners and sites "
        "shift images in ways these approximate, not reproduce: audit a second test set "
        "from the new source for that",
    }
