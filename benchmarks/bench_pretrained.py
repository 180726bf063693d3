"""Fine-tune and audit a real-size pretrained model at 224 px on a folder dataset.

    python benchmarks/bench_pretrained.py [--model resnet50] [--weights FILE]
        [--per-class 40] [--device auto] [--freeze-backbone]

The issue's end-to-end: ``auditclf run --model resnet50 --weights FILE
--image-size 224`` on an image folder. Without ``--weights`` the weights file is
torchvision's format with random values (``torchvision.models.X(weights=None)
.state_dict()`` saved with ``torch.save``), so nothing is downloaded; pass the
published file (e.g. ``resnet50-0676ba61.pth``) to fine-tune real ImageNet
weights. The folder holds ``--per-class`` generated 256-px images of three
colour classes, resized to 224 by ``--image-size``. The audit is small (one
epoch, FGSM and PGD at one eps on 30 images, Grad-CAM and IG on one image per
class) so that it also finishes on a CPU; it prints the exit status, the wall
clock and the phase times from ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
import yaml
from PIL import Image

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def write_folder(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for c, colour in enumerate(COLOURS):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (256, 256, 3)) + np.array(colour) // 2
            Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def config(freeze_backbone: bool) -> dict:
    return {
        "seed": 0,
        "train": {"epochs": 1, "batch_size": 16, "freeze_backbone": freeze_backbone},
        "analyses": {"bootstrap": 100},
        "robustness": {
            "attacks": ["fgsm", "pgd_linf"],
            "eps_linf": ["2/255"],
            "samples": 30,
            "min_eps_samples": 0,
            "gallery_per_class": 1,
        },
        "harden": {"method": "none"},
        "explain": {
            "methods": ["gradcam", "integrated_gradients"],
            "correct_per_class": 1,
            "errors_per_class": 0,
            "ig_steps": 16,
        },
        "fairness": {"enabled": False},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--weights", type=Path, help="default: random weights, torchvision format")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--freeze-backbone", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        weights = args.weights
        if weights is None:
            weights = work / f"{args.model}-random.pth"
            torch.save(getattr(torchvision.models, args.model)(weights=None).state_dict(), weights)
        folder = write_folder(work / "images", args.per_class)
        settings = work / "audit.yaml"
        settings.write_text(yaml.safe_dump(config(args.freeze_backbone)))
        command = [
            sys.executable, "-m", "auditclf", "run", "--config", str(settings),
            "--dataset", str(folder), "--model", args.model, "--weights", str(weights),
            "--image-size", "224", "--device", args.device, "--out", str(work / "out"), "--quiet",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        print(done.stdout.strip())
        if done.returncode not in (0, 1):
            raise SystemExit(f"auditclf run failed ({done.returncode}): {done.stderr.strip()}")
        report = json.loads((work / "out" / "report.json").read_text())
        card = report["models"]["baseline"]["card"]
        phases = ", ".join(f"{k} {v:.1f}" for k, v in report["run"]["durations"].items())
        print(f"exit {done.returncode}; {args.model} at 224 px, wall {wall:.1f} s")
        print(f"phases (s): {phases}")
        print(f"card: {card['source']}; Grad-CAM layer {card['target_layer']}")


if __name__ == "__main__":
    main()
