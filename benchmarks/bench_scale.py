"""Peak memory and wall time of a folder audit at two sizes (issue 11, item 2).

    python benchmarks/bench_scale.py [--sizes 10000,40000] [--image-size 128] [--full]

Generates, in a temporary folder and from a fixed seed, one image folder of
the largest size (PNG, RGB, four classes of random shapes on noisy
backgrounds, written by a pool of processes); each smaller size is a
hard-linked subset of it (the first images of each class). A basic-cnn is
trained for one epoch on a separate small folder of the same classes and saved
as ``auditclf train`` saves it. Then each folder is audited with that
checkpoint, ``auditclf run --checkpoint ... --harden none`` (every image is a
test image), each audit in a fresh process, while the memory of its whole
process tree (the audit and its DataLoader workers) is sampled. Attacks and
explanations are off (they cover a fixed number of images, whatever the set's
size); ``--full`` runs them at their default sample counts.

Memory is the peak of the summed PSS (proportional set size: shared pages are
split between the processes sharing them, so forked workers are not counted
twice) over the tree, sampled every 0.1 s. Targets: memory ratio (largest / smallest size)
<= 1.3, time ratio <= 4.4 for 4x the images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "diamond")
CHUNK = 500  # images per generation task
SAMPLE_SECONDS = 0.1
MEMORY_TARGET, TIME_TARGET = 1.3, 4.4


def draw_image(rng: np.random.Generator, label: int, size: int) -> Image.Image:
    """One RGB image: a shape of class ``label`` on a noisy background of a random colour."""
    background = rng.integers(0, 256, 3)
    noise = rng.integers(-12, 13, (size, size, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
    r = rng.uniform(0.15, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw = ImageDraw.Draw(image)
    if label == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif label == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif label == 2:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    return image


def write_chunk(task: tuple[str, int, int, int, int]) -> None:
    """Images ``start .. start + count - 1`` of a folder; image i has class i mod 4."""
    folder, start, count, size, seed = task
    rng = np.random.default_rng([seed, start])
    for i in range(start, start + count):
        label = i % len(CLASSES)
        draw_image(rng, label, size).save(Path(folder) / CLASSES[label] / f"{i:06d}.png")


def generate(folder: Path, count: int, size: int, seed: int) -> None:
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    tasks = [
        (str(folder), start, min(CHUNK, count - start), size, seed)
        for start in range(0, count, CHUNK)
    ]
    with Pool() as pool:
        pool.map(write_chunk, tasks)


def link_subset(source: Path, folder: Path, count: int) -> None:
    """``folder`` holds hard links to images 0 .. count - 1 of ``source``."""
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    for i in range(count):
        relative = Path(CLASSES[i % len(CLASSES)]) / f"{i:06d}.png"
        os.link(source / relative, folder / relative)


def _auditclf(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "auditclf", *map(str, args)]


def train_checkpoint(work: Path, size: int) -> Path:
    folder = work / "train-set"
    generate(folder, 400, size, seed=1)
    out = work / "model"
    subprocess.run(
        _auditclf("train", "--dataset", folder, "--epochs", "1", "--out", out, "--quiet"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out / "model.safetensors"


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from each process's children list."""
    pids, found = [root], []
    while pids:
        pid = pids.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                pids += [
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
        except OSError:  # the process ended meanwhile
            continue
    return found


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (0 once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def audit(folder: Path, checkpoint: Path, config: Path, out: Path) -> tuple[float, float, dict]:
    """(wall seconds, peak summed PSS in MiB, seconds by phase) of one audit in a fresh process."""
    command = _auditclf(
        "run",
        *("--config", config, "--dataset", folder, "--checkpoint", checkpoint),
        *("--harden", "none", "--out", out, "--quiet"),
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, sum(_pss_kib(pid) for pid in _tree(process.pid)))
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    stderr = process.stderr.read()
    if process.returncode not in (0, 1):
        raise SystemExit(f"auditclf run on {folder} failed ({process.returncode}): {stderr}")
    phases = json.loads((out / "report.json").read_text())["run"]["durations"]
    return wall, peak / 1024, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,40000", help="image counts, comma-separated")
    parser.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--full", action="store_true", help="attacks and explanations on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        largest = work / f"n{sizes[-1]}"
        generate(largest, sizes[-1], args.image_size, args.seed)
        for n in sizes[:-1]:
            link_subset(largest, work / f"n{n}", n)
        print(f"generated {sizes[-1]} images in {time.perf_counter() - started:.0f} s", flush=True)
        checkpoint = train_checkpoint(work, args.image_size)
        config = work / "audit.yaml"
        switches = (
            "" if args.full else "robustness:\n  enabled: false\nexplain:\n  enabled: false\n"
        )
        config.write_text(f"seed: {args.seed}\n{switches}")
        rows = []
        for n in sizes:
            wall, peak, phases = audit(work / f"n{n}", checkpoint, config, work / f"out{n}")
            rows.append((n, wall, peak))
            shown = ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
            print(f"{n:>8} images  {wall:8.1f} s  peak {peak:8.0f} MiB (process tree, PSS)")
            print(f"{'':>8} phases (s): {shown}", flush=True)
    (n0, wall0, peak0), (n1, wall1, peak1) = rows[0], rows[-1]
    memory, timing = peak1 / peak0, wall1 / wall0
    what = (
        "attacks and explanations at their defaults" if args.full else "attacks, explanations off"
    )
    print(f"{args.image_size} px RGB, {what}; {n1} vs {n0} images ({n1 / n0:g}x):")
    print(
        f"memory ratio {memory:.2f} (target <= {MEMORY_TARGET} at 4x), "
        f"time ratio {timing:.2f} (target <= {TIME_TARGET} at 4x)"
    )


if __name__ == "__main__":
    main()
