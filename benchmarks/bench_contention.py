"""The audit's slowdown when CPU-bound processes compete for its cores, per thread setting.

    python benchmarks/bench_contention.py [--quick] [--competitors N] [--load python|matmul]
        [--wait unset,short,passive] [--threads auto,8] [--repeats 1] [--timeout 1800]

Runs ``auditclf run`` in a fresh process alone, then again beside ``--competitors``
CPU-bound processes (default: one per CPU this process may use) pinned to the same
cores, and prints the slowdown (contended / alone) for each combination of:

- ``--wait``: how the audit's idle OpenMP threads wait. ``unset``: OpenMP's own default
  (they spin 300,000 times before they sleep; torch is imported before auditclf.cli can
  set anything); ``short``: what ``auditclf`` sets (``GOMP_SPINCOUNT=1000``: a brief
  spin, then sleep); ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (they sleep at once);
  ``active``: they spin.
- ``--threads``: ``auto`` (the CPUs this process may use, auditclf's default) or a
  number passed as ``--threads N`` (e.g. 8 on two cores: oversubscribed, as torch's
  default is on a container that sees more cores than its quota grants).

With one competitor per core a fair share is half the machine: a slowdown near 2× is
the goal, not 50×. Without ``--quick`` the audit is the default one (mnist5k, every
attack, hardening, explanations, fairness); ``--quick`` is digits, two epochs, two
attacks on few images, no hardening, explanations or fairness. The machine's load
(``/proc/loadavg``) is printed before and after: timings on a shared machine are noise,
the ratios less so.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from auditclf.threads import available_cpus

QUICK_CONFIG = """\
seed: 0
data:
  dataset: digits
train:
  epochs: 2
analyses:
  bootstrap: 100
robustness:
  attacks: [fgsm, pgd_linf]
  eps_linf: [0.1, 0.2]
  samples: 60
  min_eps_samples: 0
  gallery_per_class: 0
harden:
  method: none
explain:
  enabled: false
fairness:
  enabled: false
"""

# The audit with torch imported before auditclf.cli: OpenMP starts with the environment
# as given, so `unset` really is OpenMP's default.
TORCH_FIRST = "import sys, torch; from auditclf.cli import run; sys.exit(run(sys.argv[1:]))"
COMPETITORS = {
    "python": "while True: pass",
    "matmul": (
        "import numpy as np\n"
        "a = np.random.default_rng(0).random((256, 256))\n"
        "while True: a = np.tanh(a @ a)\n"
    ),
}
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def audit_command(config: Path | None, out: Path, wait: str, threads: str) -> tuple[list, dict]:
    """The ``auditclf run`` command line and environment for one setting."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if wait == "unset":
        head = [sys.executable, "-c", TORCH_FIRST]
    else:
        head = [sys.executable, "-m", "auditclf"]
        if wait != "short":
            env["OMP_WAIT_POLICY"] = wait.upper()
    argv = ["run", "--out", str(out), "--quiet"]
    if config is not None:
        argv += ["--config", str(config)]
    if threads != "auto":
        argv += ["--threads", threads]
    return head + argv, env


def time_audit(command: list, env: dict, timeout: float) -> float | None:
    """Wall-clock seconds of one audit; None when it ran past ``timeout``."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode not in (0, 1):
        raise SystemExit(f"auditclf run failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - started


def start_competitors(count: int, load: str) -> list[subprocess.Popen]:
    """``count`` CPU-bound processes on this process's cores (one thread each)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    env = {**os.environ, **SINGLE_THREAD}
    procs = []
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[load]], env=env)
        if cpus is not None:
            os.sched_setaffinity(proc.pid, cpus)
        procs.append(proc)
    time.sleep(1.0)  # let them start before the audit does
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()


def measure(args: argparse.Namespace, config: Path | None, work: Path) -> list[tuple]:
    rows = []
    for wait, threads in itertools.product(args.wait, args.threads):
        command, env = audit_command(config, work / f"{wait}-{threads}", wait, threads)
        for repeat in range(args.repeats):
            alone = time_audit(command, env, args.timeout)
            procs = start_competitors(args.competitors, args.load)
            try:
                contended = time_audit(command, env, args.timeout)
            finally:
                stop(procs)
            rows.append((wait, threads, repeat, alone, contended))
            print(_row(*rows[-1], timeout=args.timeout), flush=True)
    return rows


def _seconds(value: float | None, timeout: float) -> str:
    return f">{timeout:.0f}" if value is None else f"{value:.1f}"


def _row(wait, threads, repeat, alone, contended, *, timeout: float) -> str:
    limit = timeout
    ratio = "n/a" if alone is None or contended is None else f"{contended / alone:.2f}x"
    return (
        f"{wait:<8} {threads:<8} {repeat:<3} {_seconds(alone, limit):>9} "
        f"{_seconds(contended, limit):>11} {ratio:>9}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits, two attacks, no hardening")
    cpus, source = available_cpus()
    parser.add_argument(
        "--competitors", type=int, default=cpus, help=f"CPU-bound processes (default {cpus})"
    )
    parser.add_argument("--load", choices=sorted(COMPETITORS), default="python")
    parser.add_argument(
        "--wait", type=lambda s: s.split(","), default=["unset", "short", "passive"]
    )
    parser.add_argument("--threads", type=lambda s: s.split(","), default=["auto", "8"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per audit")
    args = parser.parse_args()
    print(
        f"{cpus} CPU(s) ({source}); {args.competitors} competing {args.load} process(es); "
        f"load before: {loadavg()}"
    )
    print(f"{'wait':<8} {'threads':<8} {'#':<3} {'alone s':>9} {'contended s':>11} {'slowdown':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = None
        if args.quick:
            config = work / "quick.yaml"
            config.write_text(QUICK_CONFIG)
        rows = measure(args, config, work)
    print(f"load after: {loadavg()}")
    if any(alone is None or contended is None for *_, alone, contended in rows):
        print(f"(>{args.timeout:.0f}: stopped at --timeout)")


if __name__ == "__main__":
    main()
