"""The audit in one process against the same audit split across processes by torchrun.

    python benchmarks/bench_distributed.py [--dataset mnist5k] [--nproc 2] [--repeats 2]
    python benchmarks/bench_distributed.py --device cuda   # one process per GPU

Trains the default model once (``auditclf train``), then audits that checkpoint with the
default probes (attacks, explanations, fairness, corruptions; no hardening, whose
retraining is not what is measured here) in one process and under
``torchrun --standalone --nproc-per-node N``. On the CPU the comparison is fair: the one
process gets all the threads (``--threads C``, C the usable CPUs) and each of the N
processes C / N (auditclf splits them by ``LOCAL_WORLD_SIZE``). On CUDA each process
gets its own GPU, against one process on one GPU.

Prints the wall time and each phase of ``run.durations`` for both, the speed-ups, and
what limits them: rank 0's time in meetings with the other processes (the gathers of
the probes' rows, waiting for the slowest), and the steps rank 0 runs alone (the
explanations, the analyses, the report). It checks that both audits' metrics are equal.
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
    # one process: every CPU; N processes: auditclf gives each CPUs / N (LOCAL_WORLD_SIZE)
    single_env = {**env, "OMP_NUM_THREADS": str(cpus)}
    shared_env = {**env, "OMP_NUM_THREADS": str(max(1, cpus // nproc))}
    walls: dict[str, list[float]] = {"1": [], str(nproc): []}
    for repeat in range(args.repeats):  # interleaved, so a slow spell hits both
        walls["1"].append(
            _cli([*audit, "--threads", str(cpus), "--out", str(work / "one")], single_env)
        )
        walls[str(nproc)].append(
            _cli([*audit, "--out", str(work / "many")], shared_env, launcher=launcher)
        )
        print(f"repeat {repeat + 1}: {walls['1'][-1]:.1f} s and {walls[str(nproc)][-1]:.1f} s")
    one, many = (json.loads((work / o / "report.json").read_text()) for o in ("one", "many"))
    first, second = (r["models"]["baseline"]["metrics"] for r in (one, many))
    differ = [k for k in first if first[k] != second.get(k)]

    print(f"\n{args.dataset}, {args.device}, {cpus} CPUs; 1 process against {nproc} (torchrun)")
    print(f"{'phase':<14}{'1 process':>12}{f'{nproc} processes':>14}{'speed-up':>10}")
    phases = dict.fromkeys([*one["run"]["durations"], *many["run"]["durations"]])
    for phase in phases:
        a = one["run"]["durations"].get(phase, 0.0)
        b = many["run"]["durations"].get(phase, 0.0)
        ratio = f"{a / b:.2f}×" if b > 0.05 else ""
        print(f"{phase:<14}{a:>11.1f}s{b:>13.1f}s{ratio:>10}")
    a, b = statistics.median(walls["1"]), statistics.median(walls[str(nproc)])
    print(f"{'end to end':<14}{a:>11.1f}s{b:>13.1f}s{a / b:>9.2f}×")
    meet = many["run"]["distributed"]
    print(
        f"\nrank 0 met the others {meet['meetings']} times, {meet['meeting_seconds']:.1f} s "
        "in all (gathers, and waiting for the slowest process)"
    )
    durations = many["run"]["durations"]
    alone = {p: durations.get(p, 0.0) for p in ("explanations", "analyses", "report")}
    print(
        f"steps rank 0 runs alone: {sum(alone.values()):.1f} s ("
        + ", ".join(f"{p} {s:.1f} s" for p, s in alone.items())
        + ")"
    )
    print(
        f"metrics equal to the single process's: {len(first) - len(differ)} of {len(first)}"
        + (f"; differing: {', '.join(differ[:5])}" if differ else "")
    )


if __name__ == "__main__":
    main()
