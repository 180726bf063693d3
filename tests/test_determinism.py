"""No number depends on a batch size: per-image randomness in the attacks, model passes of a
fixed size, so an image's result is the same in whatever batch it is attacked or evaluated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks

from auditclf.config import ATTACK_NAMES, load_config
from auditclf.data import prepare_data
from auditclf.pipeline import PhaseTimer, build_model
from auditclf.probes.attacks import AttackRunner, adversarial_versions
from auditclf.probes.base import FORWARD_CHUNK, FixedChunks, ProbeContext
from auditclf.seeding import derive_seed
from tests.conftest import FAST_ROBUSTNESS, cli

# Every attack on, small samples; the model comes from the digits_run fixture (no training).
AUDIT = (
    "seed: 0\ndata:\n  dataset: digits\nanalyses:\n  bootstrap: 50\n  batch_size: {analyses}\n"
    + FAST_ROBUSTNESS.replace("robustness:\n", "robustness:\n  batch_size: {robustness}\n")
    + "harden:\n  method: none\nexplain:\n  enabled: false\nfairness:\n  enabled: false\n"
    + "corruptions:\n  samples: 40\n  names: [fog, perspective, elastic, motion_blur]\n"
    + "  batch_size: {robustness}\n"
)


def _same(a, b) -> bool:
    """Exact equality, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_batch_sizes_change_no_metric(tmp_path, digits_run):
    outputs = []
    for robustness, analyses in ((7, 13), (100, 256), (300, 64)):
        config = tmp_path / f"audit-{robustness}.yaml"
        config.write_text(AUDIT.format(robustness=robustness, analyses=analyses))
        out = tmp_path / f"out-{robustness}"
        checkpoint = digits_run / "model.safetensors"
        result = cli("run", "--config", config, "--checkpoint", checkpoint, "--out", out)
        assert result.status == 0, result
        outputs.append(out)
    reports = [json.loads((out / "report.json").read_text()) for out in outputs]
    first = reports[0]["models"]["baseline"]
    assert any(k.startswith("robustness.square@") for k in first["metrics"])
    for other in reports[1:]:
        model = other["models"]["baseline"]
        assert model["metrics"].keys() == first["metrics"].keys()
        moved = [k for k, v in first["metrics"].items() if not _same(v, model["metrics"][k])]
        assert not moved, moved
        assert model["findings"] == first["findings"]
    samples = [(out / "samples.csv").read_text() for out in outputs]
    assert samples[1] == samples[0] and samples[2] == samples[0]


@pytest.fixture(scope="module")
def digits(digits_run):
    """The digits run's model on its test split, and a probe context for it."""
    config = load_config(
        None,
        {"data": {"dataset": "digits"}, "model": {"checkpoint": digits_run / "model.safetensors"}},
    )
    data = prepare_data(config.data, seed=0)
    prepared, _ = build_model(config, data, torch.device("cpu"), progress=False, timer=PhaseTimer())
    return config, data.view("test"), prepared.adapter, data.classes


def _runner(digits, batch_size: int, steps: int | None = None) -> AttackRunner:
    config, test, model, classes = digits
    update = {"batch_size": batch_size, "square_queries": 30}
    robustness = config.robustness.model_copy(update=update | ({"steps": steps} if steps else {}))
    ctx = ProbeContext(
        model=model,
        test=test,
        classes=classes,
        device=torch.device("cpu"),
        seed=0,
        batch_size=256,
        robustness=robustness,
    )
    return AttackRunner(ctx, np.arange(40))


def test_fixed_chunks_give_an_image_the_same_logits_and_gradient_in_any_batch(digits):
    _, test, model, _ = digits
    x = torch.from_numpy(test.images[:70]).float() / 255
    y = torch.from_numpy(test.labels[:70])
    chunked = FixedChunks(model)

    def logits_and_gradients(size: int):
        logits, gradients = [], []
        for start in range(0, len(x), size):
            part = x[start : start + size].clone().requires_grad_(True)
            out = chunked(part)
            loss = F.cross_entropy(out, y[start : start + size], reduction="sum")
            gradients.append(torch.autograd.grad(loss, part)[0])
            logits.append(out.detach())
        return torch.cat(logits), torch.cat(gradients)

    reference = logits_and_gradients(len(x))
    for size in (1, 7, FORWARD_CHUNK, FORWARD_CHUNK + 1):
        logits, gradients = logits_and_gradients(size)
        assert torch.equal(logits, reference[0]) and torch.equal(gradients, reference[1]), size


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_gives_an_image_the_same_result_in_any_block(digits, name):
    eps = "1" if name == "pgd_l2" else "0.1"
    steps = 3 if name in ("apgd_t", "fab_t") else None  # 9 target ranks each: kept short
    big, small = _runner(digits, 40, steps), _runner(digits, 7, steps)
    together, apart = big.run(name, eps), small.run(name, eps)
    for key in ("pred", "margin", "valid", "loss"):
        assert np.array_equal(together[key], apart[key]), key
    # a block in another order: each image keeps its own adversarial version
    block = np.arange(40)[::-1].copy()
    x = torch.from_numpy(big.images.numpy()[block]).float() / 255
    y = big.labels[block]
    reversed_adv = big.adversarial(name, eps, block, x, y)
    (_, x0, y0), *_ = big.blocks()
    forward_adv = big.adversarial(name, eps, np.arange(40), x0, y0)
    assert torch.equal(reversed_adv, forward_adv[block])


def test_a_random_start_is_drawn_from_the_image_seed(digits):
    runner = _runner(digits, 40)
    (block, x, y), *_ = runner.blocks()
    seeds = [derive_seed(0, "pgd_linf", "0.1", i, 0) for i in runner.ids[block]]
    starts = []
    for image, seed in zip(x, seeds, strict=True):
        noise = torch.empty_like(image).uniform_(
            -0.1, 0.1, generator=torch.Generator().manual_seed(seed)
        )
        starts.append(torch.clamp(image + noise, 0, 1))
    # torchattacks' PGD with no step returns its start
    start_only = torchattacks.PGD(runner.model, eps=0.1, alpha=0.025, steps=0)
    with runner.model.per_image(seeds, x.dim()):
        assert torch.equal(start_only(x, y), torch.stack(starts))

    # and the steps from there are torchattacks' PGD, on each image's own summed loss
    def reference(start: torch.Tensor) -> torch.Tensor:
        adv = start
        for _ in range(runner.cfg.steps):
            adv = adv.clone().requires_grad_(True)
            loss = F.cross_entropy(runner.model(adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            step = adv.detach() + 0.025 * grad.sign()
            adv = torch.clamp(x + torch.clamp(step - x, -0.1, 0.1), 0, 1)
        return adv

    ours = runner.adversarial("pgd_linf", "0.1", block, x, y)
    assert torch.equal(ours, reference(torch.stack(starts)))


def test_with_no_random_start_it_is_torchattacks_pgd(digits):
    runner = _runner(digits, 40)
    (_, x, y), *_ = runner.blocks()
    for i in range(3):  # one image: the summed loss is torchattacks' mean
        one = x[i : i + 1], y[i : i + 1]
        plain = torchattacks.PGD(runner.model, eps=0.1, alpha=0.025, random_start=False)
        with runner.model.per_image([0], x.dim()):
            ours = plain(*one)
        assert torch.equal(ours, plain(*one))


def test_explained_adversarial_images_do_not_depend_on_the_block(digits):
    rows = np.arange(0, 60, 3)
    small, big = _runner(digits, 7).ctx, _runner(digits, 300).ctx
    first, eps = adversarial_versions(small, rows)
    second, _ = adversarial_versions(big, rows)
    assert eps == "0.1" and torch.equal(first, second)
