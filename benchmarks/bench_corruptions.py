"""Corruption generation against the forward passes it feeds (issue 14: probe <= 1.2x them).

    python benchmarks/bench_corruptions.py [--images 500] [--shapes 1x28x28 3x32x32]
        [--repeats 3] [--threads N] [--device cpu]

For each image shape, the corruption probe's loop: per block of 128 images and per
corruption, ``corrupt_severities(block, name, (1, 2, 3, 4, 5), seeds)``, then basic-cnn
(``auditclf.models.zoo.BasicCNN``, eval, channels-last) on each severity through
``FixedChunks`` with ``PassSizes(block=128, chunk=32)``, under ``torch.no_grad``. The
weights are untrained: a forward pass costs the same whatever they are. 1x28x28 images are
the first mnist5k digits (the content matters to shot noise, whose Poisson sampler works
longer on brighter pixels); other shapes are uniform random 8-bit images (mean 0.5, five
times the digits' mean brightness).

Prints, per corruption, milliseconds to generate all five severities of all images and to
run the model on them, and the overall ratio (generation + forward) / forward. Every time is
a median over ``--repeats`` rounds; each round runs every corruption, so a busy stretch of a
shared machine hits them alike. The header prints the load average: above the core count,
other processes shared the cores and the numbers are noisy.

Measured on a 2-core AMD EPYC VM, ``--threads 1``, load average 2-4: the ratio is 1.13 for
1x28x28 digits (generation 0.27 s against 2.1 s of forward passes; 1.60 before the
severities shared their draws and perspective/elastic ran batched) and 1.26 for 3x32x32
(0.78 s against 3.0 s; 1.69 before), where shot noise's Poisson sampling (torch.poisson,
about 40 ns a value) is 0.30 s of the 0.78.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from auditclf.config import DataConfig
from auditclf.corruptions import CORRUPTIONS, SEVERITIES, corrupt_severities
from auditclf.data.datasets import load_mnist5k
from auditclf.models.adapter import channels_last
from auditclf.models.zoo import BasicCNN
from auditclf.probes.base import FixedChunks, PassSizes
from auditclf.train.standard import to_unit_float

BLOCK, CHUNK, SEED = 128, 32, 0


def test_images(shape: tuple[int, int, int], count: int, device: torch.device) -> torch.Tensor:
    """``count`` images of ``shape`` as float32 in [0, 1] on ``device``: mnist5k digits for
    1x28x28, seeded uniform random 8-bit images otherwise."""
    if shape == (1, 28, 28):
        images = load_mnist5k(DataConfig(dataset="mnist5k"), SEED).images[:count]
    else:
        images = np.random.default_rng(SEED).integers(0, 256, (count, *shape), dtype=np.uint8)
    return to_unit_float(torch.from_numpy(images), device)


def make_model(shape: tuple[int, int, int], device: torch.device) -> FixedChunks:
    """basic-cnn for ``shape`` in eval mode, in passes of ``CHUNK`` images."""
    net = BasicCNN(in_channels=shape[0], num_classes=10, input_size=shape[1:]).to(device)
    return FixedChunks(net.eval(), PassSizes(block=BLOCK, chunk=CHUNK))


def one_round(model: FixedChunks, images: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Seconds per corruption: (generating all severities, the forward passes over them)."""
    sync = torch.cuda.synchronize if images.device.type == "cuda" else (lambda: None)
    seconds = {name: [0.0, 0.0] for name in CORRUPTIONS}
    for start in range(0, len(images), BLOCK):
        block = images[start : start + BLOCK]
        seeds = range(start, start + len(block))
        for name in CORRUPTIONS:
            sync()
            began = time.perf_counter()
            severities = corrupt_severities(block, name, SEVERITIES, seeds)
            sync()
            generated = time.perf_counter()
            for corrupted in severities:
                model(corrupted)
            sync()
            seconds[name][0] += generated - began
            seconds[name][1] += time.perf_counter() - generated
    return {name: (gen, fwd) for name, (gen, fwd) in seconds.items()}


def bench_shape(shape: tuple[int, int, int], count: int, repeats: int,
                device: torch.device) -> float:
    """Print the table for one shape; return the overall ratio."""
    images = test_images(shape, count, device)
    model = make_model(shape, device)
    with torch.no_grad(), channels_last(model.model, images[:2]):
        one_round(model, images[:BLOCK])  # warm-up: allocator, kernels, lazy imports
        rounds = [one_round(model, images) for _ in range(repeats)]
    label = "x".join(map(str, shape))
    print(f"\n{len(images)} images {label}: ms for all {len(SEVERITIES)} severities")
    print(f"{'corruption':16s} {'generate':>9s} {'forward':>9s}")
    total_gen = total_fwd = 0.0
    for name in CORRUPTIONS:
        gen = statistics.median(r[name][0] for r in rounds)
        fwd = statistics.median(r[name][1] for r in rounds)
        total_gen, total_fwd = total_gen + gen, total_fwd + fwd
        print(f"{name:16s} {gen * 1e3:9.1f} {fwd * 1e3:9.1f}")
    ratio = (total_gen + total_fwd) / total_fwd
    print(f"{'all':16s} {total_gen * 1e3:9.1f} {total_fwd * 1e3:9.1f}   "
          f"(generation + forward) / forward = {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--shapes", nargs="+", default=["1x28x28", "3x32x32"],
                        help="CxHxW, one table each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, "
          f"torch {torch.__version__}")
    for text in args.shapes:
        bench_shape(tuple(int(v) for v in text.split("x")), args.images, args.repeats, device)


if __name__ == "__main__":
    main()
