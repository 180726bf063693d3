"""Every config in examples/ runs (with training, attacks and hardening shortened)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import cli

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
SHORTEN = {
    "train": {"epochs": 1},
    "robustness": {
        "samples": 40,
        "square_samples": 20,
        "square_queries": 30,
        "min_eps_samples": 10,
        "min_eps_iterations": 4,
        "gallery_per_class": 1,
    },
    "harden": {"epochs": 1, "steps": 2},
}


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_runs(example, tmp_path):
    config = tmp_path / example.name
    config.write_text(yaml.safe_dump(_merge(yaml.safe_load(example.read_text()), SHORTEN)))
    result = cli("run", "--config", config, "--out", tmp_path / "out", "--quiet")
    assert result.status in (0, 1), result  # a gate may fail after one epoch; it must run
    assert (tmp_path / "out" / "report.html").is_file()
