"""LIME and Grad-CAM through auditclf against their floors, and LIME against the lime package.

    pip install -e '.[bench]'
    python benchmarks/bench_explain.py [--images 3] [--samples 500] [--gradcam-batch 30]

Two settings: mnist5k (28×28 gray, grid superpixels) and shapes (64×64 RGB, SLIC
superpixels), each with basic-cnn wrapped in the adapter as the pipeline builds
it, trained for ``--epochs`` bare Adam epochs on 1024 training images so that its
outputs (and so the surrogate fits) are not a random net's. CPU, 2 threads
(``--threads``), seed 0. About 3 minutes on a 2-core AMD EPYC VM.

LIME, seconds per explained image (its predicted class, ``--samples`` samples):
- "auditclf": ``lime_maps`` as attributions.py has it (superpixels computed inside);
- "lime package": ``lime_image.LimeImageExplainer.explain_instance`` with the
  same superpixels (our ``superpixels`` as its ``segmentation_fn``), hide_color 0
  and one classifier call for all samples;
- "floor": what any LIME must do: the model on the ``--samples`` perturbed
  images of one explanation, in one forward pass (images built beforehand).

Grad-CAM, seconds per batch of ``--gradcam-batch`` images: ``gradcam_maps``
against its floor, one forward pass and one backward pass from the summed target
logits to the target layer's activations (captured by a forward hook).

Every time is a median over rounds after a warm-up on one image; within a round
the variants of a comparison run one after another, so a busy stretch of a
shared machine hits them alike. The header prints the load average: above the
core count, other processes shared the cores and the numbers are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from lime.lime_image import LimeImageExplainer

from auditclf.config import load_config
from auditclf.data import prepare_data
from auditclf.models import ModelAdapter, prepare_model
from auditclf.probes.attributions import gradcam_maps, lime_maps, superpixels
from auditclf.train.standard import to_unit_float

SEED = 0
SETTINGS = ("mnist5k", "shapes")
TRAIN_IMAGES = 1024  # one epoch on these: outputs far from uniform, in seconds, not minutes


def interleaved_medians(
    variants: dict[str, Callable[[slice], object]], repeats: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each variant on all images over ``repeats`` rounds, one run of each
    per round (so a slower stretch of a shared machine hits every variant alike), and each
    variant's last result."""
    for work in variants.values():
        work(slice(0, 1))  # warm-up on one image: allocator, kernels, lazy imports
    samples: dict[str, list[float]] = {name: [] for name in variants}
    results: dict[str, object] = {}
    for _ in range(repeats):
        for name, work in variants.items():
            started = time.perf_counter()
            results[name] = work(slice(None))
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in samples.items()}, results


def trained_model(dataset: str, epochs: int) -> tuple[ModelAdapter, object]:
    """basic-cnn in the adapter, as ``pipeline.build_model`` makes it, after ``epochs`` bare
    Adam epochs over the ``TRAIN_IMAGES`` random training images; and the test split."""
    config = load_config(None, {"data": {"dataset": dataset}})
    data = prepare_data(config.data, seed=SEED)
    train = data.view("train")
    torch.manual_seed(SEED)
    model = prepare_model(
        config.model,
        classes=data.classes,
        input_shape=data.input_shape,
        train_images=train.images,
        data_hash="",
        seed=SEED,
    ).adapter.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    # a seeded random subset: the splits come sorted by class
    chosen = np.random.default_rng(SEED).permutation(len(train.labels))[:TRAIN_IMAGES]
    images = to_unit_float(torch.from_numpy(train.images[chosen]), torch.device("cpu"))
    labels = torch.from_numpy(train.labels[chosen])
    for _ in range(epochs):
        for start in range(0, len(labels), config.train.batch_size):
            stop = start + config.train.batch_size
            loss = F.cross_entropy(model(images[start:stop]), labels[start:stop])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    # weights channels-last, as the audit runs its probes (the floors and ours alike)
    return model.eval().to(memory_format=torch.channels_last), data.view("test")


def perturbed_batches(x: torch.Tensor, samples: int) -> list[torch.Tensor]:
    """Per image, ``samples`` copies with a random half of its superpixels set to 0."""
    generator = torch.Generator().manual_seed(SEED)
    batches = []
    for image in x:
        segments = torch.as_tensor(superpixels(image.numpy()))
        keep = torch.rand(samples, int(segments.max()) + 1, generator=generator) < 0.5
        batches.append(image * keep[:, segments][:, None].to(image.dtype))
    return batches


def lime_package(model, x: torch.Tensor, target: torch.Tensor, samples: int) -> None:
    """The lime package on each image; same superpixels, hide_color 0, one classifier call."""
    channels = x.shape[1]

    @torch.no_grad()
    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        # lime hands (N, H, W, 3) images (gray ones made RGB by copying the channel)
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)[:, :channels]
        return torch.softmax(model(images.float().contiguous()), 1).numpy()

    for image, label in zip(x.numpy(), target.tolist(), strict=True):
        hwc = image[0] if channels == 1 else image.transpose(1, 2, 0)
        explainer = LimeImageExplainer(random_state=SEED)
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar, one per image
            explainer.explain_instance(
                hwc,
                classifier_fn,
                labels=(label,),
                top_labels=None,
                num_samples=samples,
                batch_size=samples,
                segmentation_fn=lambda _, image=image: superpixels(image),
                hide_color=0,
                random_seed=SEED,
            )


def gradcam_floor(model: ModelAdapter, x: torch.Tensor, target: torch.Tensor) -> None:
    """One forward, one backward from the target logits to the target layer's activations."""
    captured = []
    hook = model.target_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        hook.remove()
    torch.autograd.grad(logits.gather(1, target[:, None]).sum(), captured[0])


def bench_setting(dataset: str, args: argparse.Namespace) -> dict:
    model, test = trained_model(dataset, args.epochs)
    x = to_unit_float(torch.from_numpy(test.images[: args.images]), torch.device("cpu"))
    ids = list(test.ids[: args.images])
    with torch.no_grad():
        target = model(x).argmax(1)
        everything = to_unit_float(torch.from_numpy(test.images), torch.device("cpu"))
        accuracy = float((model(everything).argmax(1).numpy() == test.labels).mean())
    batches = perturbed_batches(x, args.samples)

    def floor(images: slice) -> None:
        with torch.no_grad():
            for batch in batches[images]:
                model(batch)

    lime, _ = interleaved_medians(
        {
            "auditclf": lambda i: lime_maps(model, x[i], target[i], args.samples, ids[i], SEED),
            "lime package": lambda i: lime_package(model, x[i], target[i], args.samples),
            "floor": floor,
        },
        args.repeats,
    )
    batch = to_unit_float(torch.from_numpy(test.images[: args.gradcam_batch]), torch.device("cpu"))
    with torch.no_grad():
        batch_target = model(batch).argmax(1)
    # A batch of Grad-CAM takes milliseconds: ten runs per timing keep the clock's noise small.
    gradcam, _ = interleaved_medians(
        {
            "auditclf": lambda i: [
                gradcam_maps(model, model.target_layer, batch[i], batch_target[i])
                for _ in range(10)
            ],
            "floor": lambda i: [gradcam_floor(model, batch[i], batch_target[i]) for _ in range(10)],
        },
        args.repeats * 3,
    )
    shape = "×".join(str(side) for side in x.shape[1:])
    return {
        "setting": f"{dataset} {shape}, test accuracy {accuracy:.2f}",
        "lime": {name: seconds / len(x) for name, seconds in lime.items()},
        "gradcam": {name: seconds / 10 for name, seconds in gradcam.items()},
    }


def print_table(results: list[dict], args: argparse.Namespace, load: tuple) -> None:
    print(
        f"basic-cnn, CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"seed {SEED}, load average {load[0]:.1f} before / {load[1]:.1f} after on "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"LIME: {args.images} images per setting, {args.samples} samples, median of "
        f"{args.repeats}; Grad-CAM: batches of {args.gradcam_batch}, median of {args.repeats * 3}"
    )
    print(f"{'':<28}{'seconds':>10}{'× floor':>10}{'× lime pkg':>12}")
    for result in results:
        print(result["setting"])
        lime, gradcam = result["lime"], result["gradcam"]
        for name, seconds in lime.items():
            print(
                f"  {'LIME/image ' + name:<26}{seconds:>10.4f}{seconds / lime['floor']:>10.2f}"
                f"{seconds / lime['lime package']:>12.2f}"
            )
        for name, seconds in gradcam.items():
            print(
                f"  {'Grad-CAM/batch ' + name:<26}{seconds:>10.4f}"
                f"{seconds / gradcam['floor']:>10.2f}"
            )
    print("targets: LIME auditclf ≤ 1.5× floor, Grad-CAM auditclf ≤ 1.2× floor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="LIME images per setting")
    parser.add_argument("--samples", type=int, default=500, help="LIME samples per image")
    parser.add_argument(
        "--gradcam-batch",
        type=int,
        default=30,
        help="images per Grad-CAM batch (30: the probe's default on 10 classes)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="bare training epochs per model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (at most the CPUs)")
    args = parser.parse_args()
    torch.set_num_threads(min(args.threads, os.cpu_count() or 1))
    torch.manual_seed(SEED)
    load_before = os.getloadavg()[0]
    results = [bench_setting(dataset, args) for dataset in SETTINGS]
    print_table(results, args, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
