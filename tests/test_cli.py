"""The CLI end to end: commands, outputs, exit codes, determinism, re-rendering."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditclf.results import AuditResult
from tests.conftest import cli

REPO = Path(__file__).resolve().parents[1]

OUTPUTS = (
    "report.html",
    "report.json",
    "samples.csv",
    "junit.xml",
    "summary.md",
    "model_card.md",
    "model.safetensors",
    "model.json",
)


def _rerun(digits_run, config) -> tuple:
    """The argv that audits the digits run's trained model again (no training)."""
    return ("run", "--config", config, "--checkpoint", digits_run / "model.safetensors")


def _metrics(folder):
    return json.loads((folder / "report.json").read_text())["models"]["baseline"]["metrics"]


def _every_metric(folder) -> dict:
    """{model: its metrics}: the baseline's and the hardened model's."""
    models = json.loads((folder / "report.json").read_text())["models"]
    return {name: model["metrics"] for name, model in models.items()}


def _strict_json(path):
    def refuse(token):
        raise AssertionError(f"{path} contains {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("command", ["run", "train", "report", "list", "metrics"])
def test_help_for_every_command(command):
    result = cli(command, "--help")
    assert result.status == 0
    assert "usage: auditclf" in result.out


def test_list_prints_every_registry_entry_without_importing_torch():
    """`auditclf list` reads the catalogue, which every registry is built from (same names,
    summaries and order), and answers without loading torch or an engine."""
    from auditclf.analyses import ANALYSES
    from auditclf.catalog import CATALOG
    from auditclf.data import DATASETS
    from auditclf.models import MODELS
    from auditclf.probes import PROBES
    from auditclf.probes.attacks import ATTACKS
    from auditclf.probes.attributions import ATTRIBUTIONS

    result = cli("list")
    assert result.status == 0
    for registry in (DATASETS, MODELS, PROBES, ANALYSES, ATTACKS, ATTRIBUTIONS):
        entries = {entry.name: entry.summary for entry in registry}
        assert list(entries.items()) == list(CATALOG[registry.kind].items())
        for name, summary in entries.items():
            assert f"  {name:<26} {summary}\n" in result.out
    probe = "import sys; from auditclf.cli import run; run(['list']); print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for heavy in ("'torch'", "'numpy'", "'sklearn'", "'captum'", "'torchattacks'"):
        assert heavy not in loaded, heavy


def test_run_writes_every_output(digits_run):
    for name in OUTPUTS:
        assert (digits_run / name).is_file(), name
    assert not list(digits_run.glob(".staging-*"))
    report = _strict_json(digits_run / "report.json")
    assert report["schema_version"] == 1
    assert report["verdict"] == "pass"
    for key in ("config", "seed", "versions", "device", "durations", "data_hash", "model_hash"):
        assert key in report["run"], key
    assert set(report["run"]["durations"]) >= {
        "data",
        "model",
        "train",
        "probes",
        "corruptions",
        "analyses",
        "report",
    }
    metrics = report["models"]["baseline"]["metrics"]
    assert 0.5 < metrics["performance.accuracy"] <= 1.0
    assert len([k for k in metrics if k.endswith(".recall") and ".class." in k]) == 10


def test_json_round_trip(digits_run):
    raw = _strict_json(digits_run / "report.json")
    assert AuditResult.from_dict(raw).to_dict() == raw


def test_html_is_self_contained_and_complete(digits_run):
    html = (digits_run / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', html), "external reference in report"
    assert "<script" not in html
    for text in (
        "Confusion matrix",
        "Per class",
        "Calibration",
        "Reliability",
        "Limitations",
        "How this was computed",
        "Model and data",
    ):
        assert text in html or text.lower() in html.lower(), text
    assert html.count('src="data:image/png;base64,') >= 5


def test_metrics_command_prints_every_key(digits_run):
    result = cli("metrics", digits_run / "report.json")
    assert result.status == 0
    metrics = _metrics(digits_run)
    printed = dict(line.split()[:2] for line in result.out.splitlines())
    assert set(printed) == set(metrics)
    assert float(printed["performance.accuracy"]) == pytest.approx(
        metrics["performance.accuracy"], abs=1e-6
    )


def test_report_rerenders_without_the_model(digits_run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("report.json", "samples.csv"):
        shutil.copy(digits_run / name, folder / name)
    result = cli("report", folder)
    assert result.status == 0, result
    assert (folder / "report.html").is_file() and (folder / "summary.md").is_file()
    models = _strict_json(folder / "report.json")["models"]
    assert models == _strict_json(digits_run / "report.json")["models"]  # findings kept too


def test_custom_templates_override_the_shipped_ones(digits_run, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "report.html.j2").write_text(
        "<html><body>ACME audit: {{ result.verdict }} {{ title }}</body></html>"
    )
    result = cli("report", digits_run, "--out", tmp_path / "acme", "--templates", templates)
    assert result.status == 0, result
    assert "ACME audit: pass" in (tmp_path / "acme" / "report.html").read_text()


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def test_same_seed_trains_the_same_model_and_a_reloaded_checkpoint_the_same_metrics(
    digits_run, fast_config, clean_config, tmp_path, capfd
):
    """The digits run repeated without its cost: `auditclf train` with the run's config
    trains the very weights `auditclf run` trained (same seed, same model), and auditing the
    run's checkpoint again (no training) gives every metric of both models exactly."""
    import torch

    trained = tmp_path / "trained"
    result = cli("train", "--config", fast_config, "--out", trained, "--quiet")
    assert result.status == 0, result
    assert (trained / "model.safetensors").is_file() and (trained / "model.json").is_file()
    ours = _weights(trained / "model.safetensors")
    theirs = _weights(digits_run / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    out = tmp_path / "reloaded"
    capfd.readouterr()
    result = cli(*_rerun(digits_run, fast_config), "--out", out, "--quiet")
    assert result.status == 0, result
    assert capfd.readouterr().err == ""  # --quiet: no progress (bars, lines) on stderr
    assert _every_metric(out) == _every_metric(digits_run)
    assert not (out / "model.safetensors").exists()  # nothing was trained

    # The checkpoint `auditclf train` wrote (its own model.json) loads as well.
    result = cli(*_rerun(trained, clean_config), "--out", tmp_path / "clean", "--quiet")
    assert result.status == 0, result
    accuracy = _metrics(tmp_path / "clean")["performance.accuracy"]
    assert accuracy == _metrics(digits_run)["performance.accuracy"]


@pytest.mark.parametrize(
    ("gate", "status"),
    [
        ("performance.accuracy>=0.1", 0),
        ("performance.accuracy>1.0", 1),
        ("performance.acuracy>=0.5", 2),
        ("performance.accuracy=>0.5", 2),
    ],
)
def test_gates_decide_the_exit_code(digits_run, clean_config, tmp_path, gate, status):
    out = tmp_path / "gated"
    result = cli(
        *_rerun(digits_run, clean_config),
        "--gate",
        gate,
        "--out",
        out,
        "--quiet",
    )
    assert result.status == status, result
    if status == 2:
        assert result.err.strip().count("\n") == 0
        assert not (out / "report.json").exists()
    else:
        report = _strict_json(out / "report.json")
        assert report["gates"][0]["passed"] is (status == 0)
        assert report["verdict"] == ("pass" if status == 0 else "fail")


def test_unknown_gate_key_suggests_the_closest(digits_run, clean_config, tmp_path):
    result = cli(
        *_rerun(digits_run, clean_config),
        "--gate",
        "performance.acuracy>=0.5",
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert "closest: performance.accuracy" in result.err


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("data:\n  datset: digits\n", "data.datset: unknown key"),
        ("train:\n  epochs: many\n", "train.epochs"),
        ("seed: -1\n", "seed"),
        ("data: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        # Attack and hardening settings: negative, zero, not a number, a zero denominator.
        ("robustness:\n  eps_linf: [-0.1]\n", "robustness.eps_linf"),
        ("robustness:\n  steps: 0\n", "robustness.steps"),
        ("robustness:\n  step_size: fast\n", "robustness.step_size"),
        ("harden:\n  eps: 8/0\n", "harden.eps"),
    ],
)
def test_bad_config_is_a_usage_error_naming_the_key(tmp_path, yaml_text, fragment):
    config = tmp_path / "audit.yaml"
    config.write_text(yaml_text)
    result = cli("run", "--config", config, "--out", tmp_path / "o", "--quiet")
    assert result.status == 2, result
    assert fragment in result.err and "audit.yaml" in result.err
    assert result.err.strip().count("\n") == 0


def test_unknown_model_lists_the_known_ones(tmp_path):
    result = cli("run", "--dataset", "digits", "--model", "resnet9000", "--out", tmp_path / "o")
    assert result.status == 2
    assert "unknown model 'resnet9000'; known: basic-cnn, resnet18" in result.err


def test_bad_flag_is_one_usage_line():
    result = cli("run", "--epochs", "ten")
    assert result.status == 2
    assert result.err.strip().count("\n") == 0 and "--epochs" in result.err


def test_interrupt_exits_130_and_writes_nothing(monkeypatch, tmp_path):
    import auditclf.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(auditclf.pipeline, "run_audit", interrupted)
    result = cli("run", "--dataset", "digits", "--out", tmp_path / "o", "--quiet")
    assert result.status == 130
    assert not (tmp_path / "o" / "report.json").exists()


def test_internal_error_is_one_line_unless_debug(monkeypatch, tmp_path, digits_run, clean_config):
    import auditclf.report

    def broken(*args, **kwargs):
        raise RuntimeError("template exploded\nsecond line")

    monkeypatch.setattr(auditclf.report, "render_html", broken)
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("previous")
    argv = [
        *_rerun(digits_run, clean_config),
        "--out",
        out,
        "--quiet",
    ]
    result = cli(*argv)
    assert result.status == 6
    assert result.err.strip().count("\n") == 0 and "template exploded" in result.err
    assert (out / "report.json").read_text() == "previous"  # the old report survives whole
    assert not list(out.glob(".staging-*"))
    debug = cli(*argv, "--debug")
    assert debug.status == 6 and "Traceback" in debug.err


def test_html_escapes_everything_from_the_data(tmp_path):
    from PIL import Image

    rows = ["path,label"]
    for i in range(12):
        for label, shade in (("<script>alert(1)</script>", 40), ("ok & fine", 220)):
            name = f"img_{shade}_{i}.png"
            Image.new("L", (8, 8), shade + i).save(tmp_path / name)
            rows.append(f"{name},{label}")
    manifest = tmp_path / "data.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = cli("run", "--dataset", manifest, "--epochs", "1", "--out", out, "--quiet")
    assert result.status == 0, result
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    report = _strict_json(out / "report.json")
    assert "<script>alert(1)</script>" in report["data"]["classes"]


def test_gate_typo_is_refused_before_any_training(monkeypatch, tmp_path):
    import auditclf.pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("the model was built before the gate was checked")

    monkeypatch.setattr(auditclf.pipeline, "build_model", no_training)
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--gate",
        "performance.worst_class_recal>=0.5",
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert result.status == 2, result
    assert "closest: performance.worst_class_recall" in result.err


def test_every_key_the_dry_run_promises_is_produced(digits_run):
    from auditclf.config import config_from_dict
    from auditclf.dryrun import expected_metric_keys

    report = _strict_json(digits_run / "report.json")
    config = config_from_dict(report["run"]["config"])
    produced = set(_metrics(digits_run)) | {
        f"hardened.{key}" for key in report["models"]["hardened"]["metrics"]
    }
    assert expected_metric_keys(config, report["data"]) == produced


def test_misspelt_config_key_gets_a_suggestion(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text("train:\n  epoch: 3\n")
    result = cli("run", "--config", config, "--out", tmp_path / "o")
    assert result.status == 2
    assert "train.epoch: unknown key; did you mean 'epochs'?" in result.err


def test_metrics_accepts_the_run_folder(digits_run):
    result = cli("metrics", digits_run)
    assert result.status == 0 and "performance.accuracy" in result.out


def test_checkpoint_from_another_split_is_flagged(digits_run, clean_config, tmp_path):
    out = tmp_path / "other-seed"
    result = cli(
        "run",
        "--config",
        clean_config,
        "--seed",
        "1",
        "--checkpoint",
        digits_run / "model.safetensors",
        "--out",
        out,
        "--quiet",
    )
    assert result.status == 0, result
    findings = _strict_json(out / "report.json")["models"]["baseline"]["findings"]
    assert any(f["severity"] == "warning" and "may be optimistic" in f["message"] for f in findings)
    same = _strict_json(digits_run / "report.json")["models"]["baseline"]["findings"]
    assert not any("may be optimistic" in f["message"] for f in same)


def test_outputs_have_ordinary_permissions(digits_run):
    for name in ("model.safetensors", "model.json", "report.json"):
        assert (digits_run / name).stat().st_mode & 0o044 == 0o044, name


def test_hardened_model_is_audited_beside_the_baseline(digits_run):
    import pandas as pd

    report = _strict_json(digits_run / "report.json")
    assert set(report["models"]) == {"baseline", "hardened"}
    hardened = report["models"]["hardened"]
    assert "adversarially retrained (pgd" in hardened["card"]["source"]
    assert "robustness.reliable" in hardened["metrics"]
    samples = pd.read_csv(digits_run / "samples.csv")
    assert set(samples["model"]) == {"baseline", "hardened"}
    html = (digits_run / "report.html").read_text()
    assert "Baseline vs hardened" in html and "What it bought" in html
    assert "Gallery" in html


def test_metrics_of_another_model_are_spelt_as_gates_spell_them(digits_run):
    result = cli("metrics", digits_run, "--model", "hardened")
    assert result.status == 0, result
    printed = {line.split()[0] for line in result.out.splitlines()}
    hardened = _strict_json(digits_run / "report.json")["models"]["hardened"]["metrics"]
    assert printed == {f"hardened.{key}" for key in hardened}


@pytest.mark.parametrize("command", ["train", "harden"])
def test_train_and_harden_read_the_configured_metadata(tmp_path, command):
    meta = tmp_path / "meta.csv"  # "stroke" is an attribute digits has already: refused
    meta.write_text("id,stroke\n" + "".join(f"digits/{i:04d},thin\n" for i in range(20)))
    config = tmp_path / "audit.yaml"
    config.write_text(f"data:\n  dataset: digits\nfairness:\n  metadata: {meta}\n")
    result = cli(command, "--config", config, "--out", tmp_path / "m", "--quiet")
    assert result.status == 3, result
    assert result.err.count("\n") == 1 and str(meta) in result.err
    assert "Traceback" not in result.err and not (tmp_path / "m").exists()


def test_junit_has_a_case_per_gate_analysis_and_sanity_check(digits_run, tmp_path):
    """The digits run's report judged again (in milliseconds) by two gates, one failing: the
    junit.xml `auditclf gate --out` writes is the one a run writes (test_formats checks a run's
    own), with a case per gate, per analysis and per sanity check."""
    import xml.etree.ElementTree as ET

    out = tmp_path / "gated"
    result = cli(
        "gate",
        digits_run,
        "--gate",
        "performance.accuracy>=0.1",
        "--gate",
        "performance.accuracy>1",
        "--out",
        out,
    )
    assert result.status == 1, result
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    by_class = {}
    for case in cases:
        by_class.setdefault(case.get("classname"), []).append(case)
    assert len(by_class["auditclf.gates"]) == 2
    assert len(by_class["auditclf.sanity.baseline"]) == 9  # the sanity checks, one case each
    assert len(by_class["auditclf.sanity.hardened"]) == 9
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(c.find("failure") is not None for c in cases) >= 1
