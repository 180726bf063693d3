"""AugMix hardening against PGD hardening: time per epoch, and what each buys under corruptions.

    python benchmarks/bench_augmix.py [--dataset mnist5k] [--epochs 3] [--device auto]
        [--methods pgd,augmix] [--set harden.augmix_group=1 ...]

Trains the default config's baseline once, hardens a copy of it with ``harden.method: pgd``
and another with ``augmix`` (the same epochs and learning rate), and prints each
hardening's median seconds per epoch (training and the clean validation pass, as the
training history records them) and their ratio. Then the clean accuracy and the mean
accuracy over every corruption of :mod:`auditclf.corruptions` at every severity, on the
test split, of the three models, each with a 95% Wilson interval over the test images
(a corrupted image counts once per corruption and severity, so the interval is narrower
than the images alone would allow: read it as a guide), and per corruption the accuracy
over its severities. Timings are the machine's: on a shared machine, read the ratio, not
the seconds.
"""

from __future__ import annotations

import argparse
import math
import statistics

import numpy as np
import torch
import yaml

from auditclf.api import resolve_config
from auditclf.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from auditclf.pipeline import build_model
from auditclf.runcontext import open_run
from auditclf.seeding import derive_seed
from auditclf.train.recipes import harden
from auditclf.train.standard import to_unit_float


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@torch.no_grad()
def accuracies(adapter, images: np.ndarray, labels: np.ndarray, seed: int, device) -> dict:
    """Clean and mean-corruption hits and counts of ``adapter`` on uint8 test images."""
    adapter.eval()
    seeds = [derive_seed(seed, "bench-corruption", i) for i in range(len(labels))]
    clean = 0
    per = {name: 0 for name in CORRUPTIONS}
    for start in range(0, len(labels), 256):
        x = to_unit_float(torch.from_numpy(images[start : start + 256]), device)
        y = torch.from_numpy(labels[start : start + 256]).to(device)
        block = seeds[start : start + 256]
        clean += int((adapter(x).argmax(1) == y).sum())
        for name in CORRUPTIONS:
            for severity in SEVERITIES:
                bad = corrupt(x, name, severity, block)
                per[name] += int((adapter(bad).argmax(1) == y).sum())
    total = len(labels) * len(SEVERITIES)
    return {
        "clean": (clean, len(labels)),
        "corruption": (sum(per.values()), total * len(CORRUPTIONS)),
        **{name: (hits, total) for name, hits in per.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=3, help="harden.epochs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="pgd,augmix", help="hardenings to compare")
    parser.add_argument(
        "--set", action="append", default=[], help="a config key=value (YAML value); repeatable"
    )
    args = parser.parse_args()
    overrides = {"data.dataset": args.dataset, "device": args.device, "harden.epochs": args.epochs}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    config = resolve_config(None, overrides)
    run = open_run(config)
    baseline, _ = build_model(run.config, run.data, run.device, progress=False, timer=run.timer)
    models, epoch_seconds = {"baseline": baseline}, {}
    for method in args.methods.split(","):
        cfg = run.config.model_copy(
            update={"harden": run.config.harden.model_copy(update={"method": method})}
        )
        models[method], history = harden(cfg, run.data, baseline, run.device, progress=False)
        epoch_seconds[method] = statistics.median(e["seconds"] for e in history.epochs)
    print(f"device {run.device}, {args.dataset}, harden.epochs {args.epochs}")
    for method, seconds in epoch_seconds.items():
        print(f"{method:>8} hardening: {seconds:.2f} s per epoch")
    if {"pgd", "augmix"} <= set(epoch_seconds):
        ratio = epoch_seconds["augmix"] / epoch_seconds["pgd"]
        print(f"augmix / pgd time per epoch: {ratio:.2f}")
    test = run.data.view("test")
    images, labels = np.asarray(test.images), test.labels
    counts = {
        name: accuracies(model.adapter, images, labels, run.config.seed, run.device)
        for name, model in models.items()
    }
    for name, numbers in counts.items():
        cells = []
        for what in ("clean", "corruption"):
            hits, n = numbers[what]
            low, high = wilson(hits, n)
            cells.append(f"{what} {hits / n:.4f} [{low:.4f}, {high:.4f}]")
        print(f"{name:>8}: " + ", ".join(cells))
    print(f"{'':>15}" + "".join(f"{name:>10}" for name in counts))
    for what in CORRUPTIONS:
        row = "".join(f"{n[what][0] / n[what][1]:>10.4f}" for n in counts.values())
        print(f"{what:>15}{row}")


if __name__ == "__main__":
    main()
