"""The dry run: the metric keys a run will produce, known before any training, so that a
misspelt gate or tolerance key is refused in seconds rather than after the audit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditclf.analyses import analyse
from auditclf.analyses.corruption import reference_errors
from auditclf.config import AuditConfig
from auditclf.evidence import ATTR_PREFIX, PROBA_PREFIX
from auditclf.keys import DEPLOY_PREFIX, SET_COLUMN, TEST_SET, model_key, shift_set
from auditclf.probes.attacks import stand_in_columns
from auditclf.probes.attributions import stand_in_columns as explain_stand_in
from auditclf.probes.corruption import stand_in_columns as corruption_stand_in
from auditclf.probes.deploy import stand_in_columns as deploy_stand_in


def expected_metric_keys(
    config: AuditConfig, data_summary: dict, *, gradients: bool = True
) -> set[str]:
    """The metric keys a run will produce, from a dry run of the analyses, on a model with
    ``gradients`` or, without, one audited by queries only (:mod:`auditclf.gradients`).

    The key families (:mod:`auditclf.keys`) say how keys are spelt, not which
    classes, groups, attacks and eps a run has. The analyses are pure functions of
    the sample table, so running them on a stand-in table (every prediction right,
    uniform confidence; attack columns spelt by the keys module) yields exactly the
    keys of this run without the model.
    """
    classes = data_summary["classes"]
    labels, stand_in = _stand_in_table(
        classes, data_summary.get("attribute_counts", {}).get("test", {})
    )
    artifacts = {}
    if config.robustness.enabled:
        columns, artifacts["robustness"] = stand_in_columns(
            config.robustness, data_summary["input_shape"][0], len(classes), labels, gradients
        )
        stand_in = stand_in.assign(**columns)
    if config.explain.enabled:
        columns, artifacts["explanations"] = explain_stand_in(
            config.explain,
            labels,
            len(classes),
            has_masks=bool(data_summary.get("has_masks")),
            adversarial=config.robustness.enabled,
            gradients=gradients,
        )
        stand_in = pd.concat([stand_in, pd.DataFrame(columns, index=stand_in.index)], axis=1)
    if config.corruptions.enabled:
        columns, artifacts["corruption"] = corruption_stand_in(config.corruptions, labels)
        stand_in = pd.concat([stand_in, pd.DataFrame(columns, index=stand_in.index)], axis=1)
    if config.export.formats:
        columns, artifacts["deploy"] = deploy_stand_in(
            config.export.formats,
            labels,
            config.robustness,
            data_summary["input_shape"][0],
            corruptions=config.corruptions.enabled,
        )
        stand_in = pd.concat([stand_in, pd.DataFrame(columns, index=stand_in.index)], axis=1)
    shift = data_summary.get("shift")
    if shift is not None:  # the shift set's rows: its classes and every group of it
        _, rows = _stand_in_table(classes, shift["attribute_counts"])
        stand_in = pd.concat(
            [
                stand_in.assign(**{SET_COLUMN: TEST_SET}),
                rows.assign(**{SET_COLUMN: shift_set(shift["name"])}),
            ],
            ignore_index=True,
        )
    dry = config.model_copy(
        update={
            "analyses": config.analyses.model_copy(
                update={"bootstrap": min(config.analyses.bootstrap, 10)}
            ),
            "fairness": config.fairness.model_copy(
                update={"n_boot": min(config.fairness.n_boot, 10)}
            ),
        }
    )
    _, metrics, _, _ = analyse(stand_in, dry, data_summary, artifacts)
    # the exported model's deploy keys, under its name (export.which)
    deployed = {k for k in metrics if k.startswith(DEPLOY_PREFIX)}
    keys = (set(metrics) - deployed) | {model_key(config.export.which, k) for k in deployed}
    # explanations run on the baseline only unless explain.all_models
    retrained = [
        k
        for k in metrics
        if k not in deployed and (config.explain.all_models or not k.startswith("explain."))
    ]
    retrained += list(reference_errors(metrics, metrics))  # relative to the baseline
    if config.harden.method != "none":
        keys |= {model_key("hardened", key) for key in retrained}
    if config.fairness.rebalance:
        keys |= {model_key("rebalanced", key) for key in retrained}
    return keys


def _stand_in_table(classes: list[str], attribute_values: dict) -> tuple[np.ndarray, pd.DataFrame]:
    """A clean sample table (every prediction right, uniform confidence) with every class
    and every test group of every attribute, so that every per-class and per-group key
    appears; → (its labels, the table)."""
    rows = max([2 * len(classes), 10, *map(len, attribute_values.values())])
    labels = np.arange(rows) % len(classes)
    stand_in = pd.DataFrame(
        {
            "model": "dry-run",
            "sample_id": labels.astype(str),
            "label": labels,
            "label_name": np.asarray(classes)[labels],
            "pred": labels,
            "pred_name": np.asarray(classes)[labels],
            "correct": 1,
            "confidence": 1.0 / len(classes),
            "margin": 0.0,
        }
    )
    for k in range(len(classes)):
        stand_in[f"{PROBA_PREFIX}{k}"] = 1.0 / len(classes)
    for name, counts in attribute_values.items():  # every test group, so every group's keys
        values = list(counts)
        stand_in[f"{ATTR_PREFIX}{name}"] = [values[i % len(values)] for i in range(rows)]
    return labels, stand_in
