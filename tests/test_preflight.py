"""Bad paths, names, flags and config values are refused first (issue 10, items 6, 7, 10).

Each case: its exit code, one stderr line per mistake, no traceback, and, for the
early checks, no engine imported yet (the check ran before torch, captum,
torchattacks, fairlearn, matplotlib and scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from auditclf.cli import _flag_keys, _overrides, build_parser
from auditclf.config import MAX_SEED, load_config
from auditclf.errors import ExitStatus, UsageError
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("torch", "captum", "torchattacks", "fairlearn", "matplotlib", "sklearn", "pandas")

# Runs the CLI in a fresh interpreter and reports which engines it had imported by the end.
PROBE = textwrap.dedent(f"""
    import io, json, sys
    from auditclf.cli import run
    err = io.StringIO()
    status = run(sys.argv[1:], stdout=io.StringIO(), stderr=err)
    loaded = [name for name in {ENGINES!r} if name in sys.modules]
    print(json.dumps({{"status": status, "err": err.getvalue(), "loaded": loaded}}))
""")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _fresh_run(*argv: object, cwd: Path, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def _lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert all(line.startswith("auditclf: error: ") for line in lines), err
    return lines


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process really cannot write in (root ignores permission bits)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    try:  # sysfs refuses new entries, even to root
        Path(tempfile.mkdtemp(dir="/sys")).rmdir()
    except OSError:
        return Path("/sys")
    pytest.skip("running as root without a folder that refuses root's writes")


def _paths(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing-target")
    return {"file": tmp_path / "a-file", "dangling": tmp_path / "dangling"}


# (argv after the command's name, the fragment its one line names); {tmp} is tmp_path.
EARLY = {
    "missing dataset path": (["--dataset", "{tmp}/nope"], "no such file or folder (data.dataset)"),
    "unknown dataset name": (["--dataset", "mnist"], "unknown dataset 'mnist'; known: mnist5k"),
    "unknown zoo model": (
        ["--model", "resnet9000"],
        "unknown model 'resnet9000'; known: basic-cnn",
    ),
    "unimportable factory": (["--model", "no_such_pkg_9.nets:build"], "cannot import"),
    "missing factory file": (["--model", "{tmp}/net.py:build"], "net.py: no such file"),
    "missing checkpoint": (["--checkpoint", "{tmp}/m.safetensors"], "no such checkpoint file"),
    "missing metadata": (["--metadata", "{tmp}/meta.csv"], "no such metadata file"),
    "missing templates": (["--templates", "{tmp}/tpl"], "no such templates folder"),
    "missing baseline": (["--baseline", "{tmp}/old/report.json"], "report.json: no such file"),
    "out is a file": (["--out", "{tmp}/a-file"], "exists and is not a folder (out)"),
    "out is a dangling symlink": (["--out", "{tmp}/dangling"], "a symlink to a missing target"),
    "out under a file": (["--out", "{tmp}/a-file/report"], "a-file is a file (out)"),
}


@pytest.mark.parametrize("case", list(EARLY))
def test_run_refuses_a_bad_path_or_name_before_any_engine(tmp_path, case):
    _paths(tmp_path)
    flags, fragment = EARLY[case]
    argv = [flag.format(tmp=tmp_path) for flag in flags]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    result = _fresh_run("run", "--dataset", "digits", *argv, cwd=tmp_path)
    assert result["status"] == ExitStatus.USAGE, result
    (line,) = _lines(result["err"])
    assert fragment in line
    assert result["loaded"] == []
    assert not (tmp_path / "out").exists()


def test_an_unwritable_out_is_refused_before_any_engine(tmp_path):
    folder = _unwritable_folder(tmp_path)
    result = _fresh_run("run", "--dataset", "digits", "--out", folder / "report", cwd=tmp_path)
    assert result["status"] == ExitStatus.USAGE, result
    (line,) = _lines(result["err"])
    assert f"cannot write in {folder}" in line and "(out)" in line
    assert result["loaded"] == []


@pytest.mark.parametrize("command", ["train", "harden"])
def test_train_and_harden_check_their_out_first(tmp_path, command):
    paths = _paths(tmp_path)
    result = _fresh_run(command, "--dataset", "digits", "--out", paths["file"], cwd=tmp_path)
    assert result["status"] == ExitStatus.USAGE, result
    (line,) = _lines(result["err"])
    assert "a-file: exists and is not a folder (--out)" in line
    assert result["loaded"] == []


def test_cuda_without_cuda_is_refused_before_the_engines(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so the machine has no CUDA device to offer.
    result = _fresh_run(
        "run", "--dataset", "digits", "--device", "cuda", cwd=tmp_path, CUDA_VISIBLE_DEVICES=""
    )
    assert result["status"] == ExitStatus.USAGE, result
    (line,) = _lines(result["err"])
    assert "--device cuda: no CUDA device is available" in line
    assert result["loaded"] == ["torch"]  # asked by --device cuda alone, and nothing more


def test_every_preflight_mistake_is_reported_at_once(tmp_path):
    paths = _paths(tmp_path)
    result = cli(
        "run",
        "--dataset",
        tmp_path / "nope",
        "--model",
        "resnet9000",
        "--checkpoint",
        tmp_path / "m.pt",
        "--templates",
        tmp_path / "tpl",
        "--gate",
        "accuracy is high",
        "--out",
        paths["dangling"],
    )
    assert result.status == ExitStatus.USAGE, result
    lines = _lines(result.err)
    assert len(lines) == 6, result.err
    for fragment in ("data.dataset", "m.pt", "resnet9000", "dangling", "tpl", "accuracy is high"):
        assert sum(fragment in line for line in lines) == 1, (fragment, result.err)


def test_every_config_mistake_is_reported_at_once(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text(
        "seed: -3\n"
        "train:\n  epoch: 2\n  lr: fast\n"
        "robustness:\n  eps_linf: [8]\n  steps: 0\n"
        "harden:\n  eps: [0.1]\n"  # fits no member of eps's union: still one line
    )
    result = cli("run", "--config", config, "--out", tmp_path / "o")
    assert result.status == ExitStatus.USAGE, result
    lines = _lines(result.err)
    keys = ["seed", "train.epoch", "train.lr", "robustness.eps_linf", "robustness.steps"]
    assert len(lines) == len(keys) + 1, result.err
    for key in [*keys, "harden.eps"]:
        assert sum(f"audit.yaml: {key}: " in line for line in lines) == 1, (key, result.err)
    assert "did you mean 'epochs'?" in result.err


# --- eps ranges --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "key", "fragment"),
    [
        ("robustness:\n  eps_linf: [2.0]\n", "robustness.eps_linf", "2/255 (= 0.007843)"),
        ("robustness:\n  eps_linf: [0.1, 8]\n", "robustness.eps_linf", "8/255 (= 0.03137)"),
        ("robustness:\n  large_eps: 7\n", "robustness.large_eps", "7/255 (= 0.02745)"),
        ("harden:\n  eps: 5\n", "harden.eps", "5/255 (= 0.01961)"),
        ("harden:\n  eps: 300/255\n", "harden.eps", "is above 1, but pixels are in [0, 1]"),
        ("robustness:\n  eps_linf: [0]\n", "robustness.eps_linf", "must be a positive number"),
        ("robustness:\n  eps_l2: [-1]\n", "robustness.eps_l2", "must be a positive number"),
        ("robustness:\n  eps_l2: [.inf]\n", "robustness.eps_l2", "must be a positive number"),
    ],
)
def test_eps_outside_its_range_is_refused_naming_the_key(tmp_path, yaml_text, key, fragment):
    config = tmp_path / "audit.yaml"
    config.write_text(yaml_text)
    result = cli("run", "--config", config, "--out", tmp_path / "o")
    assert result.status == ExitStatus.USAGE, result
    (line,) = _lines(result.err)
    assert f"audit.yaml: {key}: " in line and fragment in line
    if "/255" in yaml_text:  # a fraction is not rescaled in the hint
        assert "probably meant" not in line


def test_eps_at_the_edges_is_accepted():
    config = load_config(
        None,
        {
            "robustness": {"eps_linf": [1, "8/255"], "large_eps": 1.0, "eps_l2": [3, 10]},
            "harden": {"eps": "255/255"},
        },
    )
    assert config.robustness.eps_l2 == [3, 10]  # L2 radii may exceed 1


# --- config files, seeds, closed pipes ----------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"seed: 1\ndata:\n  dataset: caf\xe9\n", ["line 3, byte 15", "not UTF-8 (byte 0xe9)"]),
        (b"seed: 1\x00\n", ["line 1", "not valid YAML", "#x0000"]),
    ],
)
def test_a_non_utf8_or_binary_config_names_the_file_and_line(tmp_path, content, fragments):
    config = tmp_path / "audit.yaml"
    config.write_bytes(content)
    result = cli("run", "--config", config, "--out", tmp_path / "o")
    assert result.status == ExitStatus.USAGE, result
    (line,) = _lines(result.err)
    assert str(config) in line and all(f in line for f in fragments), line


def test_a_seed_beyond_32_bits_is_a_usage_error_naming_the_range(tmp_path):
    result = cli("run", "--seed", str(2**70), "--out", tmp_path / "o")
    assert result.status == ExitStatus.USAGE, result
    (line,) = _lines(result.err)
    assert "seed: " in line and str(2**70) in line and "0 to 4294967295" in line


def test_the_largest_seed_is_one_every_engine_takes():
    from auditclf.seeding import numpy_rng, seed_everything, torch_generator

    assert load_config(None, {"seed": MAX_SEED}).seed == MAX_SEED
    seed_everything(MAX_SEED)
    numpy_rng(MAX_SEED, "split")
    torch_generator(MAX_SEED, "attack")
    seed_everything(0)


def _with_closed_stdout(*argv: object) -> subprocess.CompletedProcess:
    """Run the CLI with a stdout whose reader is already gone (as `| head` leaves it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "auditclf", *map(str, argv)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=_env(),
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


def test_a_closed_stdout_ends_quietly_with_141(tmp_path):
    metrics = {f"performance.class.c{i}.recall": i / 5000 for i in range(5000)}
    report = {
        "schema_version": 1,
        "verdict": "pass",
        "run": {},
        "data": {},
        "models": {"baseline": {"card": {}, "metrics": metrics}},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    for argv in (["metrics", tmp_path], ["schema"]):
        done = _with_closed_stdout(*argv)
        assert done.returncode == ExitStatus.BROKEN_PIPE == 141, done.stderr
        assert done.stderr == ""


# --- every flag acts on its command --------------------------------------------------------


def _subparser(command: str) -> argparse.ArgumentParser:
    (subcommands,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return subcommands.choices[command]


@pytest.mark.parametrize("command", ["run", "train", "harden"])
def test_every_flag_of_a_config_command_sets_a_config_key(command):
    dests = {action.dest for action in _subparser(command)._actions}
    # read by the command (--nproc: how the command runs, not what it audits)
    handled_apart = {"help", "config", "quiet", "debug", "max_drop", "nproc"}
    keys = _flag_keys(argparse.Namespace(command=command))
    assert dests - handled_apart <= set(keys), dests - handled_apart - set(keys)


def test_harden_epochs_and_lr_set_the_hardening():
    args = build_parser().parse_args(["harden", "--epochs", "1", "--lr", "0.01"])
    config = load_config(None, _overrides(args))
    assert (config.harden.epochs, config.harden.lr) == (1, 0.01)
    assert (config.train.epochs, config.train.lr) == (12, 1e-3)  # the defaults, untouched
    assert "harden.epochs" in _subparser("harden").format_help()


def test_harden_runs_the_epochs_its_flag_asks_for(tmp_path):
    trained = cli("train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path, "--quiet")
    assert trained.status == 0, trained
    result = cli(
        "harden",
        "--dataset",
        "digits",
        "--checkpoint",
        tmp_path / "model.safetensors",
        "--epochs",
        "1",
        "--out",
        tmp_path / "hardened",
    )
    assert result.status == 0, result
    epochs = re.findall(r"^epoch (\d+)/(\d+):", result.out, flags=re.M)
    assert epochs == [("1", "1")]
    spec = json.loads((tmp_path / "hardened" / "hardened.json").read_text())
    assert spec["hardening"]["epochs"] == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--epochs", "3"], "--epochs does nothing here: --checkpoint is audited as it is"),
        (["--lr", "0.1"], "--lr does nothing here"),
        (["--max-drop", "0.02"], "--max-drop does nothing here: it only acts with --baseline"),
    ],
)
def test_a_flag_that_would_not_act_is_refused(tmp_path, argv, fragment):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")  # never read: the refusal comes first
    out = tmp_path / "out"
    result = cli("run", "--dataset", "digits", "--checkpoint", checkpoint, *argv, "--out", out)
    assert result.status == ExitStatus.USAGE, result
    (line,) = _lines(result.err)
    assert fragment in line


def test_trust_checkpoint_without_a_checkpoint_is_refused(tmp_path):
    result = cli("harden", "--dataset", "digits", "--trust-checkpoint", "--out", tmp_path)
    assert result.status == ExitStatus.USAGE, result
    (line,) = _lines(result.err)
    assert "--trust-checkpoint does nothing here: it only acts with --checkpoint" in line


def test_the_preflight_error_is_a_usage_error():
    from auditclf.preflight import preflight

    config = load_config(None, {"model": {"name": "x", "checkpoint": "/nope.pt"}})
    with pytest.raises(UsageError) as caught:
        preflight(config, command="run", out=Path("audit-report"))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and "unknown model 'x'" in str(caught.value)
