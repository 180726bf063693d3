"""What the device decides: the counts a config leaves null, the pass size, and the halving
of a probe's blocks when the GPU runs out of memory (simulated here on the CPU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from auditclf.config import load_config
from auditclf.data import SplitView
from auditclf.device_defaults import for_device, forward_chunk
from auditclf.errors import UsageError
from auditclf.models.adapter import ModelAdapter
from auditclf.probes.attacks import AttackRunner
from auditclf.probes.base import ProbeContext
from auditclf.probes.clean import predict_logits

# The CPU defaults before the device chose them: a CPU audit's numbers must not move.
CPU_COUNTS = {
    "analyses.batch_size": 256,
    "robustness.samples": 300,
    "robustness.square_samples": 100,
    "robustness.min_eps_samples": 100,
    "robustness.batch_size": 128,
    "explain.correct_per_class": 2,
    "explain.errors_per_class": 1,
    "corruptions.samples": 500,
    "corruptions.batch_size": 128,
}


def _value(config, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def test_cpu_defaults_are_the_long_standing_ones_and_cuda_covers_more():
    config = load_config()
    on_cpu, filled = for_device(config, "cpu")
    assert filled == CPU_COUNTS
    assert {key: _value(on_cpu, key) for key in CPU_COUNTS} == CPU_COUNTS
    on_cuda, filled_cuda = for_device(config, "cuda")
    assert filled_cuda.keys() == CPU_COUNTS.keys()
    assert filled_cuda["robustness.samples"] == 10_000
    assert all(filled_cuda[key] >= CPU_COUNTS[key] for key in CPU_COUNTS)
    assert forward_chunk("cpu") == 32 and forward_chunk("cuda") > 32
    # a count the config gives stays, and is not listed as the device's
    given = load_config(None, {"robustness": {"samples": "all", "square_samples": 7}})
    resolved, filled = for_device(given, "cuda")
    assert resolved.robustness.samples == "all" and resolved.robustness.square_samples == 7
    assert "robustness.samples" not in filled and "robustness.square_samples" not in filled
    assert for_device(resolved, "cpu")[1] == {}  # resolving twice changes nothing


class RunsOutAbove(nn.Module):
    """A network that raises the GPU's out-of-memory error on a pass of more than ``limit``
    images, as a GPU would."""

    def __init__(self, net: nn.Module, limit: int | None) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and len(x) > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {len(x)} images")
        return self.net(x)


def _context(limit: int | None, chunk: int) -> ProbeContext:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    rng = np.random.default_rng(0)
    n = 20
    test = SplitView(
        rng.integers(0, 256, size=(n, 1, 8, 8)).astype(np.uint8),
        rng.integers(0, 3, size=n).astype(np.int64),
        np.array([f"x{i}" for i in range(n)]),
        pd.DataFrame(index=range(n)),
        None,
    )
    config = load_config(
        None, {"robustness": {"batch_size": 20, "steps": 2, "min_eps_iterations": 2}}
    )
    return ProbeContext(
        model=ModelAdapter(RunsOutAbove(net, limit), [0.5], [0.25]),
        test=test,
        classes=["a", "b", "c"],
        device=torch.device("cpu"),
        seed=0,
        batch_size=40,
        chunk=chunk,
        robustness=config.robustness,
    )


def test_out_of_memory_halves_the_blocks_and_gives_the_numbers_of_a_run_that_fit():
    fits = _context(limit=None, chunk=5)
    runs_out = _context(limit=5, chunk=16)  # passes of 16 images: too many for it
    for ctx in (fits, runs_out):
        ctx.artifacts["logits"] = predict_logits(ctx)
        runner = AttackRunner(ctx, np.arange(20))
        ctx.artifacts["pgd"] = runner.run("pgd_linf", "0.1")
        ctx.artifacts["min_eps"] = runner.minimal_eps(np.arange(0, 20, 2), 0.5)
        ctx.artifacts["attack_passes"] = runner.sizes.record()
    assert np.array_equal(fits.artifacts["logits"], runs_out.artifacts["logits"])
    for key, values in fits.artifacts["pgd"].items():
        assert np.array_equal(values, runs_out.artifacts["pgd"][key]), key
    for fit, out in zip(fits.artifacts["min_eps"], runs_out.artifacts["min_eps"], strict=True):
        assert np.array_equal(fit, out)
    # what ran is recorded: 40 → 20 → 10 → 5 clean images at a time, 20 → 10 → 5 attacked,
    # and passes of the block's size once it is smaller than 16
    assert fits.artifacts["passes"] == {"batch_size": 40, "forward_chunk": 5, "halvings": 0}
    assert runs_out.artifacts["passes"] == {"batch_size": 5, "forward_chunk": 5, "halvings": 3}
    assert runs_out.artifacts["attack_passes"] == {
        "batch_size": 5,
        "forward_chunk": 5,
        "halvings": 2,
    }


def test_out_of_memory_with_one_image_fails_clearly():
    ctx = _context(limit=0, chunk=32)
    with pytest.raises(UsageError, match="out of GPU memory in the clean probe even one image"):
        predict_logits(ctx)
