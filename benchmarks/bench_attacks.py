"""PGD-10 through auditclf against its floor and against torchattacks called directly.

    python benchmarks/bench_attacks.py [--images 300] [--repeats 3] [--device cpu]

The floor is what any PGD-10 must do: 10 × (forward + backward to the input)
over the same blocks of images (the network's weights channels-last, as the audit
runs its probes, for all three). "torchattacks" is torchattacks.PGD called on
the same blocks. "auditclf" is the attack probe's PGD path (a random start
drawn per image, the model in fixed passes of 32 images, our own eval-mode
re-evaluation of every adversarial image, validity checks). Prints the median
seconds of each and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks

from auditclf.config import load_config
from auditclf.data import SplitView, prepare_data
from auditclf.models import ModelAdapter
from auditclf.models.loading import build_architecture
from auditclf.probes.attacks import AttackRunner
from auditclf.probes.base import ProbeContext

EPS, STEPS = 0.1, 10


def median_seconds(work, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    config = load_config(None, {})
    data = prepare_data(config.data, seed=0)
    test = data.view("train")  # any images of the default set's shape will do
    n = min(args.images, len(test.labels))
    images, labels = test.images[:n], test.labels[:n]
    torch.manual_seed(0)
    net = build_architecture(
        "basic-cnn", {"in_channels": 1, "num_classes": 10, "input_size": [28, 28]}
    )
    model = ModelAdapter(net, [0.13], [0.31]).to(device).eval()
    model.to(memory_format=torch.channels_last)  # as the audit runs its probes (every variant)
    view = SplitView(
        images, labels, np.array([str(i) for i in range(n)]), pd.DataFrame(index=range(n)), None
    )
    ctx = ProbeContext(
        model=model,
        test=view,
        classes=[str(i) for i in range(10)],
        device=device,
        seed=0,
        batch_size=256,
        robustness=config.robustness,
    )
    runner = AttackRunner(ctx, np.arange(n))
    blocks = [(x, y) for _, x, y in runner.blocks()]

    def floor() -> None:
        for x, y in blocks:
            x = x.clone().requires_grad_(True)
            for _ in range(STEPS):
                loss = F.cross_entropy(model(x), y)
                torch.autograd.grad(loss, x)

    def direct() -> None:
        for x, y in blocks:
            torchattacks.PGD(
                model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True
            )(x, y)

    def ours() -> None:
        runner.run("pgd_linf", "0.1")

    ours()  # warm-up (allocator, kernels)
    timings = {
        name: median_seconds(work, args.repeats)
        for name, work in (("floor", floor), ("torchattacks", direct), ("auditclf", ours))
    }
    print(
        f"PGD-10, L∞ eps {EPS}, {n} MNIST-sized images in blocks of "
        f"{config.robustness.batch_size}, basic-cnn, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats}"
    )
    for name, seconds in timings.items():
        print(f"{name:<14}{seconds:8.3f} s   {seconds / timings['floor']:5.2f}× floor")
    print(f"auditclf / torchattacks: {timings['auditclf'] / timings['torchattacks']:.2f}×")


if __name__ == "__main__":
    main()
