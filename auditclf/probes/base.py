"""Probes run the model and add per-sample columns to the sample table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from auditclf.config import ExplainConfig, RobustnessConfig
from auditclf.data import SplitView
from auditclf.models.adapter import ModelAdapter
from auditclf.registry import Registry


@dataclass
class ProbeContext:
    """What a probe may use: the eval-mode model, the test split and the run settings."""

    model: ModelAdapter
    test: SplitView
    classes: list[str]
    device: torch.device
    seed: int
    batch_size: int
    robustness: RobustnessConfig | None = None
    explain: ExplainConfig | None = None
    artifacts: dict = field(default_factory=dict)


Probe = Callable[[ProbeContext, pd.DataFrame], pd.DataFrame]
PROBES: Registry[Probe] = Registry("probe")
