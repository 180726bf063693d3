"""The GPU scenarios of issue 11, timed end to end on CUDA, against their targets.

    python benchmarks/gpu_scenarios.py OUTDIR [--only NAME ...]

1. ``default``: the README's default audit (mnist5k, every section, PGD hardening);
   target <= 20 s wall on an H200-class GPU.
2. ``reaudit``: that run's checkpoint audited again, ``--harden none``; its clean metrics
   must equal the training run's.
3. ``resnet18-shapes-50k``: ResNet-18 on 50,000 generated 32-px shapes, 5 epochs, the full
   audit; target <= 45 s.
4. ``resnet50-224-10k``: ResNet-50 at 224 px (torchvision-format weights, random values:
   nothing is downloaded; head-only fine-tuning, one epoch) audited on 10,000 test images,
   every one attacked with FGSM and PGD-10 at one eps, Grad-CAM and IG on 1,000; target
   <= 120 s.

Each audit runs as its own ``python -m auditclf run`` process; the table gives its exit
status, wall clock (start-up included) and ``report.json``'s phase times. Run it alone
on the machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

TARGETS = {"default": 20.0, "resnet18-shapes-50k": 45.0, "resnet50-224-10k": 120.0}


def resnet18_shapes() -> dict:
    return {
        "data": {"dataset": "shapes", "shapes": {"n_per_class": 12_500, "size": 32}},
        "model": {"name": "resnet18"},
        "train": {"epochs": 5, "batch_size": 256},
    }


def resnet50_224(weights: Path) -> dict:
    # 4 classes x 2,942 images, 85% test: 10,000 test images at 224 px
    return {
        "data": {
            "dataset": "shapes",
            "shapes": {"n_per_class": 2_942, "size": 224},
            "split": {"train": 0.1, "val": 0.05, "test": 0.85},
        },
        "model": {"name": "resnet50", "weights": str(weights)},
        "train": {"epochs": 1, "batch_size": 64, "freeze_backbone": True},
        "robustness": {"attacks": ["fgsm", "pgd_linf"], "eps_linf": ["8/255"], "steps": 10},
        "harden": {"method": "none"},
        "explain": {
            "methods": ["gradcam", "integrated_gradients"],
            "correct_per_class": 200,
            "errors_per_class": 50,
        },
    }


def audit(out: Path, name: str, args: list[str], config: dict | None = None) -> dict:
    folder = out / name
    command = [sys.executable, "-m", "auditclf", "run", "--device", "cuda", "--quiet"]
    if config is not None:
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        command += ["--config", str(path)]
    command += [*args, "--out", str(folder)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (out / f"{name}.log").write_text(done.stdout + done.stderr)
    row = {"name": name, "status": done.returncode, "wall": wall, "phases": {}, "metrics": {}}
    report = folder / "report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        row["phases"] = data["run"]["durations"]
        row["metrics"] = data["models"]["baseline"]["metrics"]
    return row


def torchvision_weights(out: Path) -> Path:
    import torch
    import torchvision

    path = out / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only or ["default", "reaudit", "resnet18-shapes-50k", "resnet50-224-10k"])
    rows = []
    if wanted & {"default", "reaudit"}:
        rows.append(audit(out, "default", []))
    if "reaudit" in wanted:
        checkpoint = out / "default" / "model.safetensors"
        row = audit(out, "reaudit", ["--checkpoint", str(checkpoint), "--harden", "none"])
        clean = [k for k in rows[0]["metrics"] if k.startswith(("performance.", "calibration."))]
        same = sum(rows[0]["metrics"][k] == row["metrics"].get(k) for k in clean)
        row["note"] = f"clean metrics identical to the training run's: {same} of {len(clean)}"
        rows.append(row)
    if "resnet18-shapes-50k" in wanted:
        rows.append(audit(out, "resnet18-shapes-50k", [], resnet18_shapes()))
    if "resnet50-224-10k" in wanted:
        rows.append(audit(out, "resnet50-224-10k", [], resnet50_224(torchvision_weights(out))))
    print("| scenario | exit | wall (s) | target (s) | phases (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in row["phases"].items())
        target = TARGETS.get(row["name"])
        met = target is not None and row["wall"] <= target
        shown = "-" if target is None else f"{target:g} ({'met' if met else 'missed'})"
        print(f"| {row['name']} | {row['status']} | {row['wall']:.1f} | {shown} | {phases} |")
        if row.get("note"):
            print(f"|  | | | | {row['note']} |")
    for row in rows:
        keys = ("performance.accuracy", "robustness.reliable")
        print(row["name"], {k: row["metrics"].get(k) for k in keys})
    return max(row["status"] for row in rows)


if __name__ == "__main__":
    sys.exit(main())
