"""Time the default audit by phase, and training against its floor.

    python benchmarks/bench_phases.py [--dataset mnist5k] [--repeats 3] [--clean-only]

Prints one table: import, data, model, train, probes, analyses, report, and
the end-to-end wall clock of ``auditclf run`` in a fresh process. It also
times the floor of training (the same number of epochs of bare forward +
backward + Adam steps over the training split, no augmentation, no
validation) and prints our training time as a ratio of it.
Measured on the machine it runs on; the README gives the numbers and hardware.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

IMPORT = "import auditclf.cli, auditclf.pipeline, auditclf.report"


def time_import(repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT], check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def time_cli(config: Path, out: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditclf",
            "run",
            "--config",
            str(config),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"auditclf run failed ({done.returncode}): {done.stderr.strip()}")
    return time.perf_counter() - started


def training_floor(config, data, epochs: int) -> float:
    """Seconds for ``epochs`` bare passes of forward + backward + Adam over the train split."""
    from auditclf.models import prepare_model

    train = data.view("train")
    prepared = prepare_model(
        config.model,
        classes=data.classes,
        input_shape=data.input_shape,
        train_images=train.images,
        data_hash="",
        seed=config.seed,
    )
    model = prepared.adapter.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    images = torch.from_numpy(train.images).float().div_(255)
    labels = torch.from_numpy(train.labels)
    started = time.perf_counter()
    for _ in range(epochs):
        for start in range(0, len(labels), config.train.batch_size):
            x = images[start : start + config.train.batch_size]
            y = labels[start : start + config.train.batch_size]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


@torch.no_grad()
def corruption_floor(outcome, config, data) -> tuple[float, int]:
    """Seconds of the bare model passes the corruption probe needs for one model (its
    subset × (corruptions × severities + the severity-0 check)), in the probe's passes
    (FixedChunks, channels-last), with no corruption made; → (seconds, images passed)."""
    from auditclf.device_defaults import forward_chunk, section_for_device
    from auditclf.models.adapter import channels_last
    from auditclf.probes.base import FixedChunks, PassSizes
    from auditclf.probes.corruption import corruption_subset

    cfg = section_for_device("corruptions", config.corruptions, "cpu")[0]
    test = data.view("test")
    subset = corruption_subset(cfg, test.labels, config.seed, data.classes)
    images = torch.from_numpy(test.images[subset]).float().div_(255)
    model = outcome.models["baseline"].adapter.eval()
    passes = len(cfg.names) * len(cfg.severities) + 1
    with channels_last(model, images[:1]):
        forward = FixedChunks(model, PassSizes(block=cfg.batch_size, chunk=forward_chunk("cpu")))
        started = time.perf_counter()
        for _ in range(passes):
            for start in range(0, len(images), cfg.batch_size):
                forward(images[start : start + cfg.batch_size])
        return time.perf_counter() - started, passes * len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--repeats", type=int, default=3, help="import timing repeats")
    parser.add_argument(
        "--clean-only",
        action="store_true",
        help="no attacks and no hardening (the performance audit alone)",
    )
    parser.add_argument(
        "--no-corruptions", action="store_true", help="without the corruption probe"
    )
    args = parser.parse_args()

    from auditclf.api import Audit
    from auditclf.config import load_config
    from auditclf.data import prepare_data
    from auditclf.pipeline import run_audit

    overrides = {"data": {"dataset": args.dataset}}
    if args.clean_only:
        overrides |= {"robustness": {"enabled": False}, "harden": {"method": "none"}}
    if args.no_corruptions:
        overrides |= {"corruptions": {"enabled": False}}
    config = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_audit(config, progress=False)
        Audit(outcome.result, outcome.samples, outcome.models).save(Path(tmp) / "inproc")
        durations = dict(outcome.result.run["durations"])
        config_file = Path(tmp) / "audit.yaml"
        config_file.write_text(yaml.safe_dump(overrides))
        end_to_end = time_cli(config_file, Path(tmp) / "cli")
    durations = {"import": time_import(args.repeats), **durations}
    epochs_run = outcome.result.models["baseline"].training["epochs"]
    data = prepare_data(config.data, seed=config.seed)
    floor = training_floor(config, data, len(epochs_run))
    corrupted = None
    if "corruptions" in durations:
        corrupted = corruption_floor(outcome, config, data)

    total = sum(durations.values())
    print(
        f"auditclf default run on {args.dataset}: torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {outcome.result.run['device']['type']}"
    )
    print(f"{'phase':<12}{'seconds':>10}{'share':>9}")
    for phase, seconds in durations.items():
        print(f"{phase:<12}{seconds:>10.2f}{seconds / total:>9.1%}")
    print(f"{'sum':<12}{total:>10.2f}")
    print(f"{'end-to-end':<12}{end_to_end:>10.2f}   (auditclf run in a fresh process)")
    print(
        f"training: {durations['train']:.2f} s for {len(epochs_run)} epochs; floor (bare "
        f"fwd+bwd+Adam, same epochs) {floor:.2f} s; ratio {durations['train'] / floor:.2f}x "
        "(the rest is augmentation and the validation pass per epoch)"
    )
    if corrupted is not None:
        models = len(outcome.result.models)
        seconds, images = corrupted
        print(
            f"corruptions: {durations['corruptions']:.2f} s for {models} model(s); floor (the "
            f"{images:,} bare model passes per model, same pass size and layout) "
            f"{seconds * models:.2f} s; ratio {durations['corruptions'] / (seconds * models):.2f}x "
            "(the rest is making the corrupted images and the checks)"
        )
    print(f"test accuracy {outcome.result.metrics['performance.accuracy']:.4f}")


if __name__ == "__main__":
    main()
