"""Output integrity: the output folder holds exactly the previous set or exactly the new one.

The fault test kills ``auditclf run`` with SIGKILL at seeded random moments (while
starting, while staging, inside a commit slowed by the test hook) and checks the
folder after each kill; the unit tests drive the writer (``auditclf.io``) in-process.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import auditclf.io as output_io
from auditclf.errors import UsageError
from auditclf.io import SLOW_COMMIT_ENV, StagedOutput, remove_abandoned_staging
from tests.conftest import MINIMAL_CONFIG, cli

REPO = Path(__file__).resolve().parents[1]
NEW_SET = {
    "report.html",
    "report.json",
    "samples.csv",
    "junit.xml",
    "summary.md",
    "model_card.md",
}
# The cheapest audit that still writes a whole report: the digits run's model, no attacks,
# attributions, fairness or hardening, so it writes no weights and none of hardened.*.
TINY_CONFIG = MINIMAL_CONFIG.replace("seed: 0", "seed: 7") + "data:\n  dataset: digits\n"
SLOW_COMMIT_S = 0.5  # the test hook's sleep, once before and once after the swap
KILLS = ["early"] * 4 + ["staging"] * 8 + ["commit"] * 8

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the one-step swap is Linux's renameat2"
)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def _staging_beside(out: Path, pid: int | str = "*") -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.auditclf-staging-{pid}-*"))


def _which_set(out: Path, old: dict[str, bytes]) -> str:
    """'old' or 'new', after asserting that ``out`` holds exactly one of the two sets."""
    files = _files(out)
    for name, data in files.items():
        if name.endswith(".json"):
            json.loads(data)
    if files == old:
        return "old"
    assert set(files) == NEW_SET, sorted(files)
    assert json.loads(files["report.json"])["run"]["seed"] == 7
    return "new"


# Every run forks from one server process that imported auditclf and its engines once (torch,
# scikit-learn, matplotlib: 2 s a start on a quiet machine, 8 s on a busy one) and ran nothing,
# so each child is a fresh `auditclf run` (cli.run, as `python -m auditclf` calls it) of its own.
SERVER = """
import json, os, sys
import auditclf.cli, auditclf.pipeline, auditclf.report.figures, auditclf.report.html
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.pop(request["slow_env"], None)
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        status = 6
        try:
            status = auditclf.cli.run(request["argv"])
        finally:
            os._exit(status)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class _Runs:
    """Starts `auditclf run` processes through the fork server; each is reaped when it ends."""

    def __init__(self, config: Path, checkpoint: Path, out: Path) -> None:
        self.argv = [
            *("run", "--config", str(config), "--checkpoint", str(checkpoint)),
            *("--out", str(out), "--quiet"),
        ]
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, slow: float | None) -> int:
        """Start a run (its commit slowed by ``slow`` s at each step); return its pid."""
        env = {} if slow is None else {SLOW_COMMIT_ENV: str(slow)}
        request = {"argv": self.argv, "env": env, "slow_env": SLOW_COMMIT_ENV}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return int(self.server.stdout.readline())

    def wait(self, pid: int, timeout: float = 300.0) -> int:
        """The run's exit status once it has ended and been reaped (-9: killed)."""
        watchdog = threading.Timer(timeout, os.kill, (pid, signal.SIGKILL))
        watchdog.start()
        try:
            return int(self.server.stdout.readline())
        finally:
            watchdog.cancel()

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait()
        self.server.stdout.close()


@pytest.fixture()
def runs(digits_run, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    runs = _Runs(config, digits_run / "model.safetensors", tmp_path / "reports" / "audit")
    yield runs
    runs.close()


def _running(pid: int) -> bool:
    """True until the run has ended (a zombie counts as ended: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for_staging(pid: int, out: Path, inner: str | None, timeout: float = 120.0) -> None:
    """Return once run ``pid`` has a staging folder beside ``out`` (holding ``inner``)."""
    deadline = time.monotonic() + timeout
    while _running(pid) and time.monotonic() < deadline:
        found = _staging_beside(out, pid)
        if found and (inner is None or (found[0] / inner).exists()):
            return
        time.sleep(0.005)


def _kill_during(pid: int, out: Path, phase: str, rng: random.Random) -> None:
    if phase == "early":  # loading data and model, probing: before anything is written
        time.sleep(rng.uniform(0.05, 1.0))
    elif phase == "staging":  # writing samples.csv, figures, the report files
        _wait_for_staging(pid, out, None)
        time.sleep(rng.uniform(0.0, 0.6))
    else:  # report.json is staged last: the commit (hook, swap, hook, clean-up) follows
        _wait_for_staging(pid, out, "report.json")
        time.sleep(rng.uniform(0.0, 1.6 * SLOW_COMMIT_S))
    with contextlib.suppress(ProcessLookupError):  # it finished first: the loop tries again
        os.kill(pid, signal.SIGKILL)


@linux_only
def test_killed_runs_leave_the_old_set_or_the_new_one(digits_run, runs, tmp_path):
    old = _files(digits_run)
    assert {"hardened.safetensors", "model.safetensors"} <= set(old)  # files the new set lacks
    out = tmp_path / "reports" / "audit"
    shutil.copytree(digits_run, out)
    rng = random.Random(10)
    outcomes = []
    started = time.perf_counter()
    phases = list(KILLS)
    while phases and len(outcomes) < 2 * len(KILLS):
        pid = runs.start(SLOW_COMMIT_S)
        _kill_during(pid, out, phases[0], rng)
        status = runs.wait(pid)
        outcome = _which_set(out, old)
        outcomes.append((phases[0], outcome, status))
        assert status in (-signal.SIGKILL, 0), outcomes
        if status == -signal.SIGKILL:
            phases.pop(0)
        if outcome == "new":  # put the previous report back for the next kill
            shutil.rmtree(out)
            shutil.copytree(digits_run, out)
    killing = time.perf_counter() - started
    assert not phases, outcomes
    assert {outcome for _, outcome, _ in outcomes} == {"old", "new"}, outcomes
    assert _staging_beside(out), "the kills left no staging folder: nothing to clean up"

    assert runs.wait(runs.start(None)) == 0
    assert _which_set(out, old) == "new"
    assert not _staging_beside(out) and not list(out.glob(".*"))
    print(f"\n{len(KILLS)} kills in {killing:.1f} s: {outcomes}")


def _previous_set(out: Path) -> None:
    """A previous run's set in ``out``: a trained and a hardened model beside a report."""
    out.mkdir(parents=True)
    for name in (
        "report.json",
        "samples.csv",
        "report.html",
        "junit.xml",
        "summary.md",
        "model_card.md",
    ):
        (out / name).write_text(json.dumps({"old": name}))
    for stem in ("model", "hardened"):
        (out / f"{stem}.safetensors").write_bytes(b"weights")
        (out / f"{stem}.json").write_text("{}")


def _write(out: Path, names: tuple[str, ...], **options) -> None:
    with StagedOutput(out, **options) as staged:
        for name in names:
            staged.write_text(name, json.dumps({"new": name}))


def test_a_new_set_replaces_the_whole_previous_one(tmp_path):
    out = tmp_path / "out"
    _previous_set(out)
    out.chmod(0o750)
    _write(out, ("report.json", "junit.xml"))
    assert sorted(os.listdir(out)) == ["junit.xml", "report.json"]  # no old hardened.*
    assert json.loads((out / "report.json").read_text()) == {"new": "report.json"}
    assert os.listdir(tmp_path) == ["out"]  # nothing staged is left beside it
    assert out.stat().st_mode & 0o777 == 0o750  # the folder's mode, not the staging's 0700


def test_rewriting_in_place_keeps_the_files_not_rewritten(tmp_path):
    out = tmp_path / "out"
    _previous_set(out)
    before = _files(out)
    _write(out, ("report.json",), keep_others=True)
    after = _files(out)
    assert set(after) == set(before)
    assert after["report.json"] != before["report.json"]
    assert {k: v for k, v in after.items() if k != "report.json"} == {
        k: v for k, v in before.items() if k != "report.json"
    }


def test_report_rerendered_in_place_keeps_samples_and_models(digits_run, tmp_path):
    """... and drops a PDF of the page it rewrites (`report --pdf` makes a new one)."""
    folder = tmp_path / "run"
    shutil.copytree(digits_run, folder)
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 the previous page")
    result = cli("report", folder)
    assert result.status == 0, result
    assert set(os.listdir(folder)) == set(os.listdir(digits_run))
    for name in ("samples.csv", "model.safetensors", "hardened.json"):
        assert (folder / name).read_bytes() == (digits_run / name).read_bytes(), name


@pytest.mark.parametrize("previous", ["a report", "auditclf train's model only"])
def test_reaudit_in_place_keeps_the_audited_checkpoint(digits_run, tmp_path, previous):
    """`run --checkpoint OUT/model.safetensors --out OUT`: the new set replaces the old one
    (a report's hardened.* goes) but keeps the model it audited, with its sidecar; a
    folder `auditclf train` wrote (only files auditclf writes) takes the report too."""
    folder = tmp_path / "run"
    if previous == "a report":
        shutil.copytree(digits_run, folder)
    else:
        folder.mkdir()
        for name in ("model.safetensors", "model.json"):
            shutil.copy(digits_run / name, folder / name)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    checkpoint = folder / "model.safetensors"
    result = cli("run", "--config", config, "--checkpoint", checkpoint, "--out", folder, "--quiet")
    assert result.status == 0, result
    assert set(os.listdir(folder)) == NEW_SET | {"model.safetensors", "model.json"}
    for name in ("model.safetensors", "model.json"):
        assert (folder / name).read_bytes() == (digits_run / name).read_bytes(), name


def test_a_failed_write_leaves_the_previous_set(tmp_path):
    out = tmp_path / "out"
    _previous_set(out)
    before = _files(out)
    with pytest.raises(RuntimeError), StagedOutput(out) as staged:
        staged.write_text("report.json", "{}")
        raise RuntimeError("renderer failed")
    assert _files(out) == before and os.listdir(tmp_path) == ["out"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_folders_of_killed_writers_are_removed(tmp_path):
    out = tmp_path / "out"
    _previous_set(out)
    dead, hour_ago = _dead_pid(), time.time() - 2 * output_io.ABANDONED_AFTER_S
    names = {
        "dead": tmp_path / f".out.auditclf-staging-{dead}-abcd_123",
        "dead_inside": out / f".auditclf-staging-{dead}-abcd_123",
        "old_alive": tmp_path / f".out.auditclf-staging-{os.getppid()}-old_0000",
        "old_legacy": out / ".staging-zz9_zz9z",
        "alive": tmp_path / f".out.auditclf-staging-{os.getppid()}-live_000",
        "mine": tmp_path / f".out.auditclf-staging-{os.getpid()}-mine_000",
        "other_out": tmp_path / f".other.auditclf-staging-{dead}-abcd_123",
        "not_ours": tmp_path / f".out.staging-{dead}-abcd_123",
        "young_legacy": out / ".staging-yy9_yy9y",
    }
    for path in names.values():
        path.mkdir()
        (path / "report.json").write_text("{}")
    for key in ("old_alive", "old_legacy"):
        os.utime(names[key], (hour_ago, hour_ago))
    removed = remove_abandoned_staging(out)
    gone = {"dead", "dead_inside", "old_alive", "old_legacy"}
    assert sorted(removed) == sorted(names[key] for key in gone)
    assert all(names[key].exists() == (key not in gone) for key in names)
    _write(out, ("report.json",))  # the next run's swap drops what is inside the folder
    assert os.listdir(out) == ["report.json"]


def test_a_folder_that_is_not_a_report_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("my work")
    with pytest.raises(UsageError, match="holds no auditclf report"):
        StagedOutput(mine)
    result = cli("run", "--dataset", "digits", "--out", mine, "--quiet")
    assert result.status == 2, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert str(mine) in result.err and "holds no auditclf report" in result.err
    assert os.listdir(mine) == ["thesis.tex"] and os.listdir(tmp_path) == ["mine"]


def test_own_files_in_a_report_folder_are_kept_and_own_folders_refused(tmp_path):
    out = tmp_path / "out"
    _previous_set(out)
    (out / "notes.txt").write_text("reviewed by A.")
    _write(out, ("report.json",))
    assert sorted(os.listdir(out)) == ["notes.txt", "report.json"]
    assert (out / "notes.txt").read_text() == "reviewed by A."
    (out / "drafts").mkdir()
    with pytest.raises(UsageError, match="'drafts', which auditclf did not write"):
        StagedOutput(out)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(UsageError, match="must be a folder"):
        StagedOutput(file)


@pytest.mark.parametrize("where", ["no-exchange", "exchange-denied", "no-swap"])
def test_without_a_one_step_swap_the_set_still_replaces_the_previous_one(
    tmp_path, monkeypatch, where
):
    if where != "no-swap":  # a filesystem (or a sticky parent) that refuses the exchange
        code = errno.EINVAL if where == "no-exchange" else errno.EPERM
        monkeypatch.setattr(output_io, "_exchange", functools.partial(_refuse_exchange, code))
    else:  # a mount point, the working directory, another OS: staged inside the folder
        monkeypatch.setattr(output_io, "_swap_possible", lambda out: False)
    out = tmp_path / "out"
    _previous_set(out)
    (out / "notes.txt").write_text("mine")
    _write(out, ("report.json", "junit.xml"))
    assert sorted(os.listdir(out)) == ["junit.xml", "notes.txt", "report.json"]
    assert os.listdir(tmp_path) == ["out"]
    _write(out, ("compare.json",), keep_others=True)
    assert sorted(os.listdir(out)) == ["compare.json", "junit.xml", "notes.txt", "report.json"]


def _refuse_exchange(code: int, a: Path, b: Path) -> None:
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def test_a_file_moved_in_across_mounts_is_copied_then_renamed(tmp_path, monkeypatch):
    replace = os.replace

    def across_mounts(source, target):
        if Path(source).parent.name.startswith(".auditclf-staging-"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(source, target)

    monkeypatch.setattr(output_io, "_swap_possible", lambda out: False)
    monkeypatch.setattr(os, "replace", across_mounts)
    out = tmp_path / "out"
    _previous_set(out)
    _write(out, ("report.json",))
    assert os.listdir(out) == ["report.json"]
    assert json.loads((out / "report.json").read_text()) == {"new": "report.json"}


@linux_only
def test_a_symlinked_out_folder_stays_a_symlink(tmp_path):
    target = tmp_path / "store" / "run"
    _previous_set(target)
    link = tmp_path / "audit-report"
    link.symlink_to(target)
    _write(link, ("report.json",))
    assert link.is_symlink() and os.listdir(target) == ["report.json"]
