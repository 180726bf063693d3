"""One model's analysis: every registered analysis over its rows of the sample table, with
the run's config, merged into the sections, flat metrics, notes and findings of its result.

Used by the run, by ``auditclf report`` (re-analysis from samples.csv) and by the dry run
that lists a run's metric keys before any training.
"""

from __future__ import annotations

import pandas as pd

from auditclf.analyses.base import AnalysisContext, run_analyses
from auditclf.config import AuditConfig
from auditclf.evidence import split_sets


def analyse(
    table: pd.DataFrame,
    config: AuditConfig,
    data_summary: dict,
    artifacts: dict,
    *,
    debug: bool = False,
) -> tuple[list, dict, dict, list]:
    """Analyses over one model's rows → (sections, metrics, notes, findings); its shift-set
    rows go to the shift analysis only, every other one reads its test rows."""
    table, shift = split_sets(table, "samples.csv")
    ctx = AnalysisContext(
        classes=data_summary["classes"],
        config=config.analyses,
        seed=config.seed,
        data_summary=data_summary,
        artifacts=artifacts,
        robustness=config.robustness.model_dump(mode="json"),
        fairness=config.fairness.model_dump(mode="json"),
        shift=shift,
    )
    sections = run_analyses(table, ctx, debug=debug)
    metrics, notes, findings = {}, {}, []
    for section in sections:
        metrics.update(section.metrics)
        notes.update(section.notes)
        findings.extend(f.__dict__ for f in section.findings)
    return [s.to_dict() for s in sections], metrics, notes, findings
