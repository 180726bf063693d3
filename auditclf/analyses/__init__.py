"""Analyses: registered in report order; each is a pure function over the sample table."""

from auditclf.analyses import (  # noqa: F401  (registers them)
    calibration,
    corruption,
    deploy,
    explanations,
    fairness,
    imbalance,
    performance,
    robustness,
    shift,
)
from auditclf.analyses.audit import analyse
from auditclf.analyses.base import (
    ANALYSES,
    AnalysisContext,
    Finding,
    Section,
    Table,
    key_part,
    run_analyses,
)

__all__ = [
    "ANALYSES",
    "AnalysisContext",
    "Finding",
    "Section",
    "Table",
    "analyse",
    "key_part",
    "run_analyses",
]
