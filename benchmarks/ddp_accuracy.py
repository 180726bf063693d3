"""Data-parallel training against one process: the test accuracy each reaches, and the time.

    python benchmarks/ddp_accuracy.py [--dataset mnist5k] [--nproc 2] [--epochs N]
        [--timeout 3600]

Trains the default config's model (``auditclf train``, the default dataset mnist5k unless
``--dataset``) once in one process with ``--threads N`` and once under torchrun with N
processes of one thread each (``OMP_NUM_THREADS=1``, ``--threads 1``), so both use the
same N cores; then audits each checkpoint's clean accuracy on the test split
(``auditclf run`` with every other probe off) and prints, per training, the test accuracy
with its 95% bootstrap interval, the epoch kept and the epochs run, and the wall time of
the training. Under torchrun each rank takes ``batch_size // N`` images of every global
batch (see :mod:`auditclf.train.standard`), so the optimiser steps are the same in number
and size. The machine's load (``/proc/loadavg``) is printed before and after: on a shared
machine the times are noise, their ratio less so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CLEAN_CONFIG = """\
seed: 0
robustness:
  enabled: false
harden:
  method: none
explain:
  enabled: false
fairness:
  enabled: false
corruptions:
  enabled: false
"""


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _train(folder: Path, args: argparse.Namespace, nproc: int) -> float:
    """Train into ``folder`` with ``nproc`` processes (1: no torchrun); the wall seconds (process
    start and data loading included)."""
    flags = ["train", "--out", str(folder), "--quiet"]
    flags += ["--dataset", args.dataset] if args.dataset else []
    flags += ["--epochs", str(args.epochs)] if args.epochs else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if nproc == 1:
        command = [sys.executable, "-m", "auditclf", *flags, "--threads", str(args.nproc)]
    else:
        env["OMP_NUM_THREADS"] = "1"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", str(nproc), "-m", "auditclf", *flags, "--threads", "1"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, timeout=args.timeout)
    return time.perf_counter() - started


def _test_accuracy(folder: Path, args: argparse.Namespace) -> dict:
    """The checkpoint's test accuracy, its 95% interval and its training's epochs."""
    config = folder / "clean.yaml"
    config.write_text(CLEAN_CONFIG)
    command = [sys.executable, "-m", "auditclf", "run", "--config", str(config), "--quiet"]
    command += ["--checkpoint", str(folder / "model.safetensors"), "--out", str(folder / "r")]
    command += ["--dataset", args.dataset] if args.dataset else []
    command += ["--threads", str(args.nproc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(command, env=env, check=True, timeout=args.timeout, capture_output=True)
    metrics = json.loads((folder / "r" / "report.json").read_text())["models"]["baseline"][
        "metrics"
    ]
    training = json.loads((folder / "model.json").read_text())["training"]
    return {
        "accuracy": metrics["performance.accuracy"],
        "ci": (metrics["performance.accuracy.ci_low"], metrics["performance.accuracy.ci_high"]),
        "kept": training["best_epoch"],
        "epochs_run": training["epochs_run"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="dataset (default: the config's default, mnist5k)")
    parser.add_argument("--nproc", type=int, default=2, help="processes under torchrun")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    args = parser.parse_args()
    print(f"load before: {_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, args.nproc):
            folder = Path(tmp) / f"nproc{nproc}"
            seconds = _train(folder, args, nproc)
            found = _test_accuracy(folder, args)
            low, high = found["ci"]
            print(
                f"{nproc} process(es): test accuracy {found['accuracy']:.4f} "
                f"[{low:.4f}, {high:.4f}], kept epoch {found['kept']} of "
                f"{found['epochs_run']}, training {seconds:.1f} s (load {_load()})",
                flush=True,
            )
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
