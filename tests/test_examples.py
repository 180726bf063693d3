"""Every config in examples/ runs (with a shortened training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("config", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_runs(config, tmp_path):
    result = cli("run", "--config", config, "--epochs", "1", "--out", tmp_path / "out", "--quiet")
    assert result.status in (0, 1), result  # a gate may fail after one epoch; it must run
    assert (tmp_path / "out" / "report.html").is_file()
