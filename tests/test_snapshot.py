"""The shared fixture run's metrics against a stored snapshot: refactors change no number.

``tests/data/fast_digits_metrics.json`` holds every metric of the ``digits_run``
fixture (FAST_CONFIG: digits, two epochs, every attack, hardening, explanations,
subgroups) as written before the issue-12 restructuring. DESIGN promises identical
metrics for the same seed, CPU and versions: on the CPU kind and torch version the
snapshot was written with, every value must be equal; elsewhere the same keys must
exist and the numbers agree to within a few images of rounding (a kernel of another CPU
rounds differently, and two epochs of training carry that into predictions).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SNAPSHOT = Path(__file__).parent / "data" / "fast_digits_metrics.json"


def _same_platform(snapshot: dict) -> bool:
    return (
        snapshot["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        and snapshot["torch"] == torch.__version__
    )


def test_fixture_metrics_equal_the_stored_snapshot(digits_run):
    snapshot = json.loads(SNAPSHOT.read_text())
    models = json.loads((digits_run / "report.json").read_text())["models"]
    assert set(models) == set(snapshot["models"])
    exact = _same_platform(snapshot)
    for name, expected in snapshot["models"].items():
        got = models[name]["metrics"]
        assert set(got) == set(expected), (name, set(got) ^ set(expected))
        if exact:
            changed = {k: (expected[k], got[k]) for k in expected if got[k] != expected[k]}
            assert not changed, (name, dict(list(changed.items())[:10]), len(changed))
            continue
        far = {
            k: (v, got[k])
            for k, v in expected.items()
            if (v is None) != (got[k] is None)
            or (v is not None and not math.isclose(v, got[k], rel_tol=0.1, abs_tol=0.1))
        }
        assert not far, (name, dict(list(far.items())[:10]))
