"""Every example in examples/ runs, with attacks, hardening and explanations shortened, and
ends as it documents: its gates pass (exit 0). Each audit runs once: the default audit
written out (examples/mnist5k.yaml) is judged on tests/test_default_run.py's run, and the
config the CI workflow audits with (examples/digits-quick.yaml) on the workflow's run."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path

import pytest
import yaml

from auditclf.config import load_config
from auditclf.evidence import load_samples
from tests.conftest import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
# The audit the README documents and test_default_run.py runs, written out: not run here.
DEFAULT_AUDIT = "mnist5k.yaml"
# The config the CI workflow runs (its test checks so), judged by its own gates there.
CI_AUDIT = "digits-quick.yaml"
RUN = [p for p in CONFIGS if p.name not in (DEFAULT_AUDIT, CI_AUDIT)]
# Fewer attacked, bisected and explained images and one hardening epoch: the report is
# complete, and training keeps the example's own epochs unless PER_EXAMPLE says otherwise.
SHORTEN = {
    "robustness": {
        "samples": 40,
        "square_samples": 20,
        "square_queries": 30,
        "min_eps_samples": 10,
        "min_eps_iterations": 4,
        "gallery_per_class": 1,
    },
    "harden": {"epochs": 1, "steps": 2},
    "explain": {"lime_samples": 40, "correct_per_class": 1, "errors_per_class": 0},
    "fairness": {"n_boot": 20},
}
# Fewer epochs where the example's gates still pass with a margin (training is seeded, so
# it is the same model every time: test accuracy 0.86 after 3 epochs and 0.84 after 5,
# against gates of 0.8), and the example without gates, on larger images, on a fifth of them.
PER_EXAMPLE = {
    "custom-model.yaml": {"train": {"epochs": 3}},
    "folder-metadata.yaml": {"train": {"epochs": 5}},
    "shapes-shortcut.yaml": {"data": {"shapes": {"n_per_class": 40}}, "train": {"epochs": 1}},
}


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _shortened(example: Path, tmp_path: Path, **extra) -> Path:
    config = tmp_path / example.name
    settings = _merge(yaml.safe_load(example.read_text()), SHORTEN)
    settings = _merge(settings, PER_EXAMPLE.get(example.name, {}))
    config.write_text(yaml.safe_dump(_merge(settings, extra)))
    return config


def _folder_data(tmp_path: Path) -> dict:
    """The folder example's data and its shift set, written where the example's script
    writes them."""
    module = runpy.run_path(str(EXAMPLES / "folder_dataset.py"))
    root = tmp_path / "digits-folder"
    metadata = module["write_folder"](root)
    shift = module["shift_folder"](root)
    return {
        "data": {"dataset": str(root)},
        "fairness": {"metadata": str(metadata)},
        "shift": {"dataset": str(shift), "metadata": str(shift / "metadata.csv")},
    }


def _check_shift_set(out: Path) -> None:
    """The folder example's shift set, the fainter scanner B's images: every model's
    ``shift.scanner_b.accuracy`` is the accuracy of its rows of samples.csv from that set,
    and the test rows still give ``performance.accuracy``."""
    models = json.loads((out / "report.json").read_text())["models"]
    samples = load_samples(out / "samples.csv")
    assert set(samples["set"]) == {"test", "shift.scanner_b"}
    for name, model in models.items():
        rows = samples[samples["model"] == name]
        for where, key in (
            ("shift.scanner_b", "shift.scanner_b.accuracy"),
            ("test", "performance.accuracy"),
        ):
            part = rows[rows["set"] == where]
            expected = (part["pred"] == part["label"]).mean()
            assert abs(model["metrics"][key] - expected) < 1e-9, (name, key)
    assert "Distribution shift" in (out / "report.html").read_text()


@pytest.mark.parametrize("example", RUN, ids=[p.name for p in RUN])
def test_example_config_runs_and_passes_its_gates(example, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name files relative to the checkout
    extra = _folder_data(tmp_path) if example.name == "folder-metadata.yaml" else {}
    config = _shortened(example, tmp_path, **extra)
    if example.name == "custom-model.yaml":  # the documented flow: train, then audit the file
        trained = cli("train", "--config", config, "--out", tmp_path / "model", "--quiet")
        assert trained.status == 0, trained
        extra_args = ["--checkpoint", tmp_path / "model" / "model.safetensors"]
    else:
        extra_args = []
    result = cli("run", "--config", config, "--out", tmp_path / "out", "--quiet", *extra_args)
    assert result.status == 0, result
    assert (tmp_path / "out" / "report.html").is_file()
    if example.name == "folder-metadata.yaml":
        _check_shift_set(tmp_path / "out")


def test_the_default_audit_example_is_the_default_config():
    """examples/mnist5k.yaml differs from the defaults only in its output folder, its gates
    and the number of attacked images (500, the CPU default being 300), so the default run
    of test_default_run.py, which also judges it by these gates, is its run."""
    example = load_config(EXAMPLES / DEFAULT_AUDIT).model_dump(mode="json")
    default = load_config(None).model_dump(mode="json")
    differ = {key for key in default if example[key] != default[key]}
    assert differ == {"out", "gates", "robustness"}
    assert len(example["gates"]) == 3
    ours, theirs = example["robustness"], default["robustness"]
    assert {key for key in theirs if ours[key] != theirs[key]} == {"samples"}
    assert ours["samples"] == 500


def test_the_ci_workflow_runs_its_audit_command(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    workflow = yaml.safe_load((EXAMPLES / "ci" / "auditclf.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    commands = [s["run"] for s in steps if "auditclf run" in s.get("run", "")]
    assert len(commands) == 1
    argv = shlex.split(commands[0])[1:]
    # The workflow's own arguments, with its config shortened and its output in tmp_path.
    config_at = argv.index("--config") + 1
    assert Path(argv[config_at]) == Path("examples") / CI_AUDIT
    argv[config_at] = str(_shortened(Path(argv[config_at]), tmp_path))
    argv[argv.index("--out") + 1] = str(tmp_path / "audit-report")
    result = cli(*argv, "--quiet")
    # The job passes: accuracy above its gate, and the gated robustness number sound.
    assert result.status == 0, result
    for published in ("summary.md", "junit.xml"):  # the files the later steps publish
        assert (tmp_path / "audit-report" / published).is_file()
    # The workflow's --gate flags replace the example's own gates: they pass on this run too.
    own = cli("gate", tmp_path / "audit-report", "--config", EXAMPLES / CI_AUDIT)
    assert own.status == 0, own


# `pip install .`, `pip install -e '.[test]'`: the project in the checked-out repository
FROM_CHECKOUT = re.compile(r"""pip install (-e |--editable )?["']?\.(\[[a-z,]+\])?["']?(\s|$)""")


def test_the_ci_workflow_installs_auditclf_from_the_checkout():
    """auditclf is not on a package index: the workflow installs the repository it checked
    out, after checking it out, and never asks an index for a package named auditclf."""
    steps = yaml.safe_load((EXAMPLES / "ci" / "auditclf.yml").read_text())["jobs"]["audit"]["steps"]
    uses = [step.get("uses", "") for step in steps]
    installs = [i for i, step in enumerate(steps) if "pip install" in step.get("run", "")]
    assert installs and all(FROM_CHECKOUT.search(steps[i]["run"]) for i in installs)
    checkout = next(i for i, used in enumerate(uses) if used.startswith("actions/checkout@"))
    assert checkout < min(installs)
    for step in steps:
        assert not re.search(r"pip install[^\n]*\bauditclf\b", step.get("run", "")), step
