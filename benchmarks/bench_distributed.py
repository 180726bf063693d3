"""The audit in one process against the same audit split across processes by torchrun.

    python benchmarks/bench_distributed.py [--dataset mnist5k] [--nproc 2] [--repeats 2]
    python benchmarks/bench_distributed.py --device cuda   # one process per GPU

Trains the default model once (``auditclf train``), then audits that checkpoint with the
default probes (attacks, explanations, fairness, corruptions; no hardening, whose
retraining is not what is measured here) three ways, interleaved:

- ``all``: one process with every usable CPU as threads (C): the same machine, the fair
  comparison on the CPU;
- ``share``: one process with one process's share (C / N threads; on CUDA one GPU):
  what each torchrun process brings, so the speed-up of splitting the work;
- ``N``: ``torchrun --standalone --nproc-per-node N``, each process C / N threads
  (auditclf splits them by ``LOCAL_WORLD_SIZE``), or one GPU each.

Prints the wall time and each phase of ``run.durations``, the speed-ups, what limits
them (rank 0's time in meetings with the others: the gathers of the probes' rows and
waiting for the slowest; the steps rank 0 runs alone: the analyses and the report), and
whether the metrics are equal (they must be, whatever the threads).
Run it alone on the machine: other jobs on the same cores make the timings noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], env: dict, launcher: list[str] | None = None) -> float:
    started = time.perf_counter()
    command = [*(launcher or [sys.executable]), "-m", "auditclf", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--nproc", type=int, default=None, help="default: 2, or the GPUs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from auditclf.threads import available_cpus

    cpus = available_cpus()[0]
    nproc = args.nproc or (torch.cuda.device_count() if args.device == "cuda" else 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    common = ["--dataset", args.dataset, "--device", args.device, "--quiet"]
    print(f"training the default model on {args.dataset} ...", flush=True)
    _cli(["train", *common, "--out", str(work / "model")], env)
    audit = ["run", *common, "--checkpoint", str(work / "model" / "model.safetensors")]
    audit += ["--harden", "none"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc-per-node", str(nproc)]
    # "all": one process with every CPU (the fair comparison: the same machine);
    # "share": one process with one process's share (what each of the N brings, as one GPU
    # per process does: the speed-up of splitting the work); "N": the N processes
    share = max(1, cpus // nproc)
    runs = {
        "all": ([*audit, "--threads", str(cpus)], {**env, "OMP_NUM_THREADS": str(cpus)}, None),
        "share": ([*audit, "--threads", str(share)], {**env, "OMP_NUM_THREADS": str(share)}, None),
        "N": (audit, {**env, "OMP_NUM_THREADS": str(share)}, launcher),
    }
    if args.device == "cuda":  # one GPU per process: "share" is one process on one GPU
        del runs["all"]
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats):  # interleaved, so a slow spell hits every one
        for name, (argv, run_env, how) in runs.items():
            walls[name].append(_cli([*argv, "--out", str(work / name)], run_env, launcher=how))
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {w[-1]:.1f} s" for n, w in walls.items()))
    reports = {name: json.loads((work / name / "report.json").read_text()) for name in runs}
    many = reports["N"]
    print(f"\n{args.dataset}, {args.device}, {cpus} CPUs; {nproc} processes (torchrun) against")
    print(f"one process with every CPU ({cpus} threads, 'all') and with one process's share")
    print(f"({share} thread(s), 'share': what each process brings, as one GPU per process)")
    names = list(runs)
    print(
        f"{'phase':<14}"
        + "".join(f"{n:>10}" for n in names)
        + "".join(f"{n + ' ÷ N':>12}" for n in names if n != "N")
    )
    phases = dict.fromkeys(p for r in reports.values() for p in r["run"]["durations"])
    for phase in phases:
        took = {n: r["run"]["durations"].get(phase, 0.0) for n, r in reports.items()}
        ratios = "".join(
            f"{took[n] / took['N']:>11.2f}×" if took["N"] > 0.05 else f"{'':>12}"
            for n in names
            if n != "N"
        )
        print(f"{phase:<14}" + "".join(f"{took[n]:>9.1f}s" for n in names) + ratios)
    medians = {n: statistics.median(w) for n, w in walls.items()}
    print(
        f"{'end to end':<14}"
        + "".join(f"{medians[n]:>9.1f}s" for n in names)
        + "".join(f"{medians[n] / medians['N']:>11.2f}×" for n in names if n != "N")
    )
    meet = many["run"]["distributed"]
    print(
        f"\nrank 0 met the others {meet['meetings']} times, {meet['meeting_seconds']:.1f} s "
        "in all (gathers, and waiting for the slowest process)"
    )
    durations = many["run"]["durations"]
    alone = {p: durations.get(p, 0.0) for p in ("analyses", "report")}
    print(
        f"steps rank 0 runs alone: {sum(alone.values()):.1f} s ("
        + ", ".join(f"{p} {s:.1f} s" for p, s in alone.items())
        + "); process start and data loading are in every process's wall time"
    )
    first = reports[names[0]]["models"]["baseline"]["metrics"]
    for name in names[1:]:
        other = reports[name]["models"]["baseline"]["metrics"]
        differ = [k for k in first if first[k] != other.get(k)]
        print(
            f"metrics of '{name}' equal to '{names[0]}': {len(first) - len(differ)} of "
            f"{len(first)}" + (f"; differing: {', '.join(differ[:5])}" if differ else "")
        )


if __name__ == "__main__":
    main()
