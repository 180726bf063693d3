"""Probes run the model and add per-sample columns to the sample table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn as nn

from auditclf.config import ExplainConfig, RobustnessConfig
from auditclf.data import SplitView
from auditclf.models.adapter import ModelAdapter
from auditclf.registry import Registry

FORWARD_CHUNK = 32  # images per model pass in the probes, whatever the configured batch sizes


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


class FixedChunks(nn.Module):
    """The model, evaluated in passes of exactly ``FORWARD_CHUNK`` images.

    A CPU or GPU kernel picks its algorithm, and so its rounding, by the batch
    size and the memory layout: one image's logits differ in the last bits
    between a pass of 7 and a pass of 100 images, or between a channels-last and
    a contiguous batch. Passes of one fixed size (the last one filled up with
    detached copies of its last image, whose outputs are dropped), each copied
    into the contiguous layout, give every image the same logits and input
    gradients whatever the batch it comes in, so no number depends on
    ``analyses.batch_size`` or ``robustness.batch_size``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            return self.model(x)
        outputs = []
        for start in range(0, len(x), FORWARD_CHUNK):
            part = x[start : start + FORWARD_CHUNK]
            missing = FORWARD_CHUNK - len(part)
            if missing:
                filler = part[-1:].detach().expand(missing, *part.shape[1:])
                part = torch.cat([part, filler])
            part = part.clone(memory_format=torch.contiguous_format)
            outputs.append(self.model(part)[: FORWARD_CHUNK - missing])
        return torch.cat(outputs)


Probe = Callable[[ProbeContext, pd.DataFrame], pd.DataFrame]
PROBES: Registry[Probe] = Registry("probe")
