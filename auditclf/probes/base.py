"""Probes run the model and add per-sample columns to the sample table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from auditclf import distributed
from auditclf.config import CorruptionConfig, ExplainConfig, RobustnessConfig
from auditclf.data import SplitView
from auditclf.device_defaults import forward_chunk, section_for_device
from auditclf.errors import UsageError
from auditclf.models.adapter import ModelAdapter, pass_layout
from auditclf.progress import Progress
from auditclf.registry import Registry

FORWARD_CHUNK = forward_chunk("cpu")  # images per model pass on the CPU, whatever the batch sizes
T = TypeVar("T")


@dataclass
class PassSizes:
    """Images per block (moved to the device and worked on together) and per model pass.

    Both start from the config and the device (``device_defaults``); on a GPU out-of-memory
    error the block halves, and the pass with it once the block is smaller (a pass is
    padded to its full size, so it bounds the memory). :func:`in_blocks` retries the block.
    """

    block: int
    chunk: int = FORWARD_CHUNK
    halvings: int = 0

    def halve(self, where: str) -> None:
        if self.block == 1:
            raise UsageError(
                f"out of GPU memory in the {where} even one image at a time; audit with "
                "--device cpu, or smaller images"
            )
        self.block //= 2
        self.chunk = min(self.chunk, self.block)
        self.halvings += 1

    def record(self) -> dict[str, int]:
        """What ran, for the report: the final sizes and how often they were halved. Under
        torchrun every process calls it (a meeting): the smallest sizes any process ended
        with and the most halvings, so a pass size that fell on another process than rank 0
        (the numbers then hold only to the pass size: :func:`in_blocks`) is reported too."""
        ran = distributed.all_values((self.block, self.chunk, self.halvings))
        return {
            "batch_size": min(block for block, _, _ in ran),
            "forward_chunk": min(chunk for _, chunk, _ in ran),
            "halvings": max(halvings for _, _, halvings in ran),
        }


def in_blocks(
    rows: np.ndarray, sizes: PassSizes, work: Callable[[np.ndarray], T], where: str
) -> list[T]:
    """``work(block)`` over consecutive blocks of ``rows``, ``sizes.block`` rows each.

    A block that runs out of GPU memory is retried at half the size, and the sizes stay
    halved for the rest of the rows (and of the probe). Per-image randomness and passes of
    a fixed size make the results those of a run that never ran out, as long as the pass
    size holds.
    """
    results, start = [], 0
    while start < len(rows):
        block = rows[start : start + sizes.block]
        try:
            results.append(work(block))
        except torch.OutOfMemoryError:
            failed = True
        else:
            failed = False
            start += len(block)
        if failed:  # outside the handler, so the failed block's tensors are freed first
            sizes.halve(where)
            torch.cuda.empty_cache()
    return results


@dataclass
class ProbeContext:
    """What a probe may use: the eval-mode model, the test split and the run settings.

    ``batch_size``: test images moved to the device at a time by the clean probe;
    ``chunk``: images per model pass, a property of the device (``device_defaults``);
    ``progress``: the run's reporter, for a probe's long phases (off by default);
    ``label``: the audited model's name ("baseline", "hardened"), for its messages.
    """

    model: ModelAdapter
    test: SplitView
    classes: list[str]
    device: torch.device
    seed: int
    batch_size: int
    chunk: int = FORWARD_CHUNK
    robustness: RobustnessConfig | None = None
    explain: ExplainConfig | None = None
    corruptions: CorruptionConfig | None = None
    progress: Progress = field(default_factory=Progress)
    label: str = ""
    artifacts: dict = field(default_factory=dict)  # small JSON: how the probes ran
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # images, maps: artifacts.npz

    def __post_init__(self) -> None:
        # a context built from a config section directly (tests, benchmarks, the API) gets
        # the device's counts where the section leaves them null, as the pipeline's does
        if self.robustness is not None:
            self.robustness = section_for_device("robustness", self.robustness, self.device.type)[0]
        if self.explain is not None:
            self.explain = section_for_device("explain", self.explain, self.device.type)[0]
        if self.corruptions is not None:
            self.corruptions = section_for_device(
                "corruptions", self.corruptions, self.device.type
            )[0]

    @property
    def gradients(self) -> bool:
        """Whether gradients flow through the model (its adapter says; a bare module passed
        by a test has them): without, the probes run only what queries the model."""
        return getattr(self.model, "gradients", True)


class FixedChunks(nn.Module):
    """The model, evaluated in passes of exactly ``sizes.chunk`` images.

    A CPU or GPU kernel picks its algorithm, and so its rounding, by the batch
    size and the memory layout: one image's logits differ in the last bits
    between a pass of 7 and a pass of 100 images, or between a channels-last and
    a contiguous batch. Passes of one fixed size (the last one filled up with
    detached copies of its last image, whose outputs are dropped), each copied
    into one layout (channels-last for images: :func:`pass_layout`), give every
    image the same logits and input gradients whatever the batch it comes in, so no
    number depends on ``analyses.batch_size`` or ``robustness.batch_size``. The pass size is the
    device's (32 on the CPU); it changes only when memory runs out (:class:`PassSizes`).
    """

    def __init__(self, model: nn.Module, sizes: PassSizes | None = None) -> None:
        super().__init__()
        self.model = model
        self.sizes = sizes or PassSizes(block=FORWARD_CHUNK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not len(x):
            return self.model(x)
        chunk = self.sizes.chunk
        outputs = []
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            missing = chunk - len(part)
            if missing:
                filler = part[-1:].detach().expand(missing, *part.shape[1:])
                part = torch.cat([part, filler])
            part = part.clone(memory_format=pass_layout(part, self.model))
            outputs.append(self.model(part)[: chunk - missing])
        return torch.cat(outputs)


Probe = Callable[[ProbeContext, pd.DataFrame], pd.DataFrame]
PROBES: Registry[Probe] = Registry("probe")
