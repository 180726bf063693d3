"""The audit on CUDA: it runs, and it agrees with the CPU (skipped without a CUDA device).

Run on a GPU machine by ``benchmarks/gpu_check.sh``; nothing here runs on CI's CPUs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auditclf.device_defaults import forward_chunk
from tests.conftest import FAST_CONFIG, cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Attacks on, every attack, small samples; no explanations, subgroups or hardening so the
# comparisons isolate the probes that draw randomness.
ATTACK_CONFIG = FAST_CONFIG.replace("explain:\n", "explain:\n  enabled: false\n") + (
    "fairness:\n  enabled: false\n"
)


def _metrics(folder: Path, model: str = "baseline") -> dict:
    return json.loads((folder / "report.json").read_text())["models"][model]["metrics"]


@pytest.fixture(scope="module")
def cuda_default_run(tmp_path_factory) -> Path:
    """The README's default audit (mnist5k, every section, PGD hardening) on CUDA."""
    out = tmp_path_factory.mktemp("cuda-default")
    result = cli("run", "--device", "cuda", "--out", out, "--quiet")
    assert result.status == 0, result
    return out


def test_default_audit_runs_on_cuda(cuda_default_run):
    report = json.loads((cuda_default_run / "report.json").read_text())
    assert report["run"]["device"]["type"] == "cuda"
    metrics = report["models"]["baseline"]["metrics"]
    assert metrics["performance.accuracy"] >= 0.97
    assert metrics["robustness.reliable"] == 1.0
    assert report["models"]["hardened"]["metrics"]["robustness.reliable"] == 1.0
    assert metrics["explain.integrated_gradients.convergence_delta"] < 0.05


def test_cuda_sets_wider_defaults_and_records_them(cuda_default_run):
    """Counts left null are the device's: on CUDA every test image (up to 10,000) is
    attacked, and report.json and the limitations say the device chose it."""
    report = json.loads((cuda_default_run / "report.json").read_text())
    chosen = report["run"]["device_defaults"]
    assert chosen["robustness.samples"] == 10_000
    tested = report["data"]["split_counts"]["test"]
    metrics = report["models"]["baseline"]["metrics"]
    assert metrics["robustness.samples"] == min(tested, 10_000)
    assert report["run"]["config"]["robustness"]["samples"] == 10_000
    passes = report["models"]["baseline"]["artifacts"]["passes"]
    assert passes["forward_chunk"] == forward_chunk("cuda") and passes["halvings"] == 0
    coverage = [item for item in report["limitations"] if item["section"] == "Coverage"]
    assert "defaults for cuda" in coverage[0]["reason"]


def test_checkpoint_reaudit_on_cuda_and_cpu_agree(cuda_default_run, tmp_path):
    """The same checkpoint audited on CUDA and on the CPU, on the same images (the CPU's
    default counts, given): clean metrics equal (calibration within float32 rounding), robust
    accuracy within one image per 100."""
    checkpoint = cuda_default_run / "model.safetensors"
    counts = tmp_path / "counts.yaml"
    counts.write_text(
        "robustness: {samples: 300, square_samples: 100, min_eps_samples: 100}\n"
        "explain: {correct_per_class: 2, errors_per_class: 1}\n"
    )
    outs = {}
    for device in ("cuda", "cpu"):
        outs[device] = tmp_path / device
        result = cli(
            "run", "--config", counts, "--checkpoint", checkpoint, "--device", device,
            "--harden", "none", "--out", outs[device], "--quiet",
        )  # fmt: skip
        assert result.status == 0, (device, result)
    on_cuda, on_cpu = _metrics(outs["cuda"]), _metrics(outs["cpu"])
    assert on_cuda.keys() == on_cpu.keys()
    for key, value in on_cuda.items():
        if key.startswith(("performance.", "data.")) and value is not None:
            exact = key.endswith(("accuracy", "recall", "precision", "f1", "support"))
            tolerance = 0.0 if exact else 1e-4
            assert abs(value - on_cpu[key]) <= tolerance, (key, value, on_cpu[key])
        elif key.startswith("robustness.") and key.endswith(".accuracy") and value is not None:
            assert abs(value - on_cpu[key]) <= 0.01 + 1e-9, (key, value, on_cpu[key])


def test_attack_batch_size_changes_no_number_on_cuda(tmp_path):
    """Per-image random starts on the GPU: robustness.batch_size 7 and 100 give identical
    metrics (the generators live on the device)."""
    config = tmp_path / "attacks.yaml"
    config.write_text(ATTACK_CONFIG)
    train = tmp_path / "model"
    assert cli("train", "--config", config, "--device", "cuda", "--out", train).status == 0
    found = []
    for batch_size in (7, 100):
        sized = tmp_path / f"b{batch_size}.yaml"
        sized.write_text(
            ATTACK_CONFIG.replace("robustness:\n", f"robustness:\n  batch_size: {batch_size}\n")
        )
        out = tmp_path / f"out{batch_size}"
        result = cli(
            "run", "--config", sized, "--checkpoint", train / "model.safetensors",
            "--device", "cuda", "--harden", "none", "--out", out, "--quiet",
        )  # fmt: skip
        assert result.status in (0, 5), result
        found.append(_metrics(out))
    assert found[0] == found[1]


def test_lazy_folder_blocks_come_pinned_and_exact_on_cuda(tmp_path, monkeypatch):
    """A folder decoded by DataLoader workers reaches CUDA through pinned memory, with the
    pixels of a decode into memory."""
    from PIL import Image

    from auditclf.config import DataConfig
    from auditclf.data import lazy, prepare_data

    monkeypatch.setattr(lazy, "MIN_IMAGES_FOR_WORKERS", 0)
    pixels = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        (tmp_path / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / f"c{i % 2}" / f"{i:02d}.png")
    images = prepare_data(DataConfig(dataset=str(tmp_path)), seed=0).imageset.images
    eager, device = np.asarray(images), torch.device("cuda")
    blocks = lazy.row_blocks(len(images), 16)
    for rows, block in zip(blocks, lazy.image_blocks(images, blocks, device=device), strict=True):
        assert block.is_pinned()
        on_device = block.to(device, non_blocking=True)
        assert torch.equal(on_device.cpu(), torch.from_numpy(eager[rows]))


def test_fine_tuning_pretrained_weights_head_only_on_cuda(tmp_path):
    """``--weights`` with ``train.freeze_backbone`` under CUDA's bf16 autocast and
    channels_last: the backbone (BatchNorm statistics included) leaves training unchanged."""
    import torchvision
    from safetensors.torch import load_file

    from tests.test_pretrained import _folder

    weights = tmp_path / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    config = tmp_path / "audit.yaml"
    config.write_text(
        "train: {epochs: 1, freeze_backbone: true}\nrobustness: {enabled: false}\n"
        "harden: {method: none}\nfairness: {enabled: false}\n"
        "explain: {correct_per_class: 1, errors_per_class: 0, lime_samples: 50}\n"
    )
    result = cli(
        "run", "--config", config, "--dataset", _folder(tmp_path / "images"),
        "--model", "resnet50", "--weights", weights, "--image-size", "64", "--device", "cuda",
        "--out", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert result.status == 0, result
    published = torch.load(weights, weights_only=True)
    trained = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(trained[k], v) for k, v in published.items() if not k.startswith("fc."))
