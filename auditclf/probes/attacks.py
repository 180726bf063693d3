"""The attack probe: adversarial examples through torchattacks (the only module importing it).

For every attack × eps it adds, per attacked test image, the prediction on
the adversarial image, its logit margin (true-class logit minus the best
other; negative = fooled) and whether the adversarial image was valid
(finite, in [0, 1], within eps). Every adversarial image is re-evaluated by a
plain eval-mode forward pass of our own, not taken from the attack's word.

Attacks (torchattacks): FGSM (Goodfellow et al. 2015), PGD-L∞ and PGD-L2
(Madry et al. 2018), APGD with cross-entropy and DLR losses (Croce & Hein
2020), and Square (Andriushchenko et al. 2020) as the black-box reference.
eps is in [0, 1] pixel units (the model adapter normalises inside).

Randomness (random starts, APGD and Square sampling) is seeded per block of
``robustness.batch_size`` images from (run seed, attack, eps, the block's
first sample id), so results do not depend on ``analyses.batch_size`` or on
the device; torchattacks draws a batch's random start from one generator, so
per-image seeding would need one attack call per image.

It also records what the sanity checks need: clean-input gradients (zero or
non-finite ones mean masked gradients), a repeated forward pass (a randomised
model needs expectation over transformation), the loss after half and all
PGD steps, and a bisection of each image's minimal L∞ perturbation.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks
from PIL import Image

from auditclf.config import ATTACK_NORMS, RobustnessConfig, eps_label, parse_eps
from auditclf.data.splits import stratified_subsample
from auditclf.errors import DataError
from auditclf.probes.base import PROBES, ProbeContext
from auditclf.seeding import derive_seed, numpy_rng
from auditclf.train.standard import to_unit_float

DEFAULT_RADII = {
    ("linf", 1): ["0.05", "0.1", "0.2", "0.3"],
    ("linf", 3): ["2/255", "4/255", "8/255", "16/255"],
    ("l2", 1): ["0.5", "1", "2", "3"],
    ("l2", 3): ["0.25", "0.5", "1"],
}
REFERENCE_EPS = {1: "0.1", 3: "8/255"}  # the radius of the gallery, the loss check, hardening
VALID_SLACK = 1e-5  # float32 rounding allowed beyond eps when checking validity


def radii(cfg: RobustnessConfig, norm: str, channels: int) -> list[str]:
    """The eps labels of one norm's grid, from the config or the defaults for the channels."""
    given = cfg.eps_linf if norm == "linf" else cfg.eps_l2
    labels = (
        [eps_label(v) for v in given] if given else DEFAULT_RADII[(norm, 1 if channels == 1 else 3)]
    )
    return sorted(dict.fromkeys(labels), key=parse_eps)


def reference_eps(cfg: RobustnessConfig, channels: int) -> str:
    grid = radii(cfg, "linf", channels)
    preferred = REFERENCE_EPS[1 if channels == 1 else 3]
    return preferred if preferred in grid else grid[len(grid) // 2]


def column(attack: str, eps: str, what: str) -> str:
    """The sample-table column of one attack × eps: adv.<attack>@<eps>.<what>."""
    return f"adv.{attack}@{eps}.{what}"


def build_attack(
    name: str,
    model: torch.nn.Module,
    eps: float,
    cfg: RobustnessConfig,
    *,
    seed: int,
    steps: int | None = None,
) -> torchattacks.Attack:
    steps = steps or cfg.steps
    alpha = (cfg.step_size or 2.5 / steps) * eps
    seed32 = seed % 2**31
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd_linf":
        return torchattacks.PGD(
            model, eps=eps, alpha=alpha, steps=steps, random_start=cfg.random_start
        )
    if name == "pgd_l2":
        return torchattacks.PGDL2(
            model, eps=eps, alpha=alpha, steps=steps, random_start=cfg.random_start
        )
    if name in ("apgd_ce", "apgd_dlr"):
        return torchattacks.APGD(
            model,
            norm="Linf",
            eps=eps,
            steps=steps,
            n_restarts=cfg.restarts,
            seed=seed32,
            loss=name[5:],
        )
    if name == "square":
        return torchattacks.Square(
            model,
            norm="Linf",
            eps=eps,
            n_queries=cfg.square_queries,
            n_restarts=1,
            seed=seed32,
            loss="margin",
        )
    raise ValueError(f"unknown attack {name!r}")


@torch.no_grad()
def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float()


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    return true - others.amax(1)


def _valid(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    finite = torch.isfinite(adv).flatten(1).all(1)
    in_box = ((adv >= 0) & (adv <= 1)).flatten(1).all(1)
    return finite & in_box & (size <= eps * (1 + VALID_SLACK) + 1e-6)


class AttackRunner:
    """Runs attacks block by block over the attacked subset, with seeded randomness."""

    def __init__(self, ctx: ProbeContext, subset: np.ndarray) -> None:
        self.ctx, self.cfg = ctx, ctx.robustness
        self.model = ctx.model
        self.subset = subset
        self.images = torch.from_numpy(ctx.test.images[subset])
        self.labels = torch.from_numpy(ctx.test.labels[subset])
        self.ids = ctx.test.ids[subset]

    def stratified_rows(self, count: int) -> np.ndarray:
        """Positions of a class-stratified subset of the attacked images (seeded, sorted).

        Data sets are often stored sorted by class: taking the first ``count``
        images would cover a few classes only.
        """
        labels = self.labels.numpy()
        if count >= len(labels):
            return np.arange(len(labels))
        seed = derive_seed(self.ctx.seed, "rows", count)
        try:
            return stratified_subsample(labels, count, seed=seed, classes=self.ctx.classes)
        except DataError:  # fewer rows than classes, or classes too rare to stratify
            return np.sort(numpy_rng(seed).permutation(len(labels))[:count])

    def blocks(self, rows: np.ndarray | None = None):
        rows = np.arange(len(self.subset)) if rows is None else rows
        size = self.cfg.batch_size
        for start in range(0, len(rows), size):
            block = rows[start : start + size]
            x = to_unit_float(self.images[block], self.ctx.device)
            y = self.labels[block].to(self.ctx.device)
            yield block, x, y

    def _seeded(self, attack: torchattacks.Attack, x, y, key: tuple) -> torch.Tensor:
        devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(self.ctx.seed, *key))
            return attack(x, y)

    def run(
        self, name: str, eps_text: str, *, rows: np.ndarray | None = None, steps: int | None = None
    ) -> dict[str, np.ndarray]:
        """pred, margin, valid per image of ``rows`` (default: the whole subset)."""
        eps, norm = parse_eps(eps_text), ATTACK_NORMS[name]
        restarts = self.cfg.restarts if name in ("pgd_linf", "pgd_l2") else 1
        outputs = {"pred": [], "margin": [], "valid": [], "loss": []}
        for block, x, y in self.blocks(rows):
            best_margin = best_pred = best_valid = best_loss = None
            for restart in range(restarts):
                attack = build_attack(
                    name,
                    self.model,
                    eps,
                    self.cfg,
                    steps=steps,
                    seed=derive_seed(self.ctx.seed, name, eps_text, restart),
                )
                adv = self._seeded(attack, x, y, (name, eps_text, self.ids[block[0]], restart))
                logits = _logits(self.model, adv)
                margin = _margin(logits, y)
                loss = F.cross_entropy(logits, y, reduction="none")
                valid = _valid(adv, x, eps, norm)
                if best_margin is None:
                    best_margin, best_pred, best_valid, best_loss = (
                        margin,
                        logits.argmax(1),
                        valid,
                        loss,
                    )
                else:  # keep, per image, the restart that got furthest
                    better = margin < best_margin
                    best_margin = torch.where(better, margin, best_margin)
                    best_pred = torch.where(better, logits.argmax(1), best_pred)
                    best_valid = torch.where(better, valid, best_valid)
                    best_loss = torch.where(better, loss, best_loss)
            for key, value in (
                ("pred", best_pred),
                ("margin", best_margin),
                ("valid", best_valid),
                ("loss", best_loss),
            ):
                outputs[key].append(value.cpu())
        return {key: torch.cat(values).numpy() for key, values in outputs.items()}

    def clean_loss_and_gradients(self) -> dict[str, np.ndarray]:
        """Per image: CE loss, whether its input gradient is zero or non-finite, and the
        largest logit difference between two forward passes of the same input."""
        loss_out, zero_out, repeat_out, softmax_out = [], [], [], []
        for _, x, y in self.blocks():
            x = x.clone().requires_grad_(True)
            logits = self.model(x).float()
            loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), x)
            flat = grad.flatten(1)
            zero = (flat == 0).all(1) | ~torch.isfinite(flat).all(1)
            again = _logits(self.model, x.detach())
            repeat = (again - logits.detach()).abs().amax(1)
            sums_to_one = (logits.detach().min(1).values >= 0) & (
                (logits.detach().sum(1) - 1).abs() < 1e-4
            )
            loss_out.append(loss.detach().cpu())
            zero_out.append(zero.cpu())
            repeat_out.append(repeat.cpu())
            softmax_out.append(sums_to_one.cpu())
        return {
            "loss_clean": torch.cat(loss_out).numpy(),
            "grad_zero": torch.cat(zero_out).numpy(),
            "repeat_diff": torch.cat(repeat_out).numpy(),
            "softmax_output": torch.cat(softmax_out).numpy(),
        }

    def minimal_eps(self, rows: np.ndarray, high: float) -> tuple[np.ndarray, np.ndarray]:
        """Bisection of each image's smallest L∞ eps that PGD flips, in [0, high].

        PGD runs without random start here (deterministic), with a per-image
        eps tensor so every image bisects its own interval in one batch.
        Returns (estimate, upper bound); an image PGD cannot flip at ``high``
        gets +inf, one already misclassified gets 0.
        """
        iterations, steps = self.cfg.min_eps_iterations, self.cfg.steps
        low = np.zeros(len(rows))
        upper = np.full(len(rows), high)
        flipped_at_high = self._flips(rows, upper, steps)
        wrong_clean = self._flips(rows, np.zeros(len(rows)), steps)
        upper[~flipped_at_high] = np.inf
        for _ in range(iterations):
            active = np.isfinite(upper) & ~wrong_clean
            if not active.any():
                break
            mid = (low + np.where(np.isfinite(upper), upper, high)) / 2
            flips = np.zeros(len(rows), dtype=bool)
            flips[active] = self._flips(rows[active], mid[active], steps)
            upper = np.where(active & flips, mid, upper)
            low = np.where(active & ~flips, mid, low)
        estimate = np.where(wrong_clean, 0.0, (low + upper) / 2)
        estimate[~np.isfinite(upper)] = np.inf
        return estimate, np.where(wrong_clean, 0.0, upper)

    def _flips(self, rows: np.ndarray, eps: np.ndarray, steps: int) -> np.ndarray:
        flipped = []
        for block, x, y in self.blocks(rows):
            local = np.searchsorted(rows, block)
            radius = torch.tensor(eps[local], dtype=torch.float32, device=self.ctx.device).view(
                -1, 1, 1, 1
            )
            if torch.all(radius == 0):
                adv = x
            else:
                attack = torchattacks.PGD(
                    self.model, eps=1.0, alpha=1.0, steps=steps, random_start=False
                )
                # torchattacks clamps with eps and steps with alpha; tensors broadcast per image
                attack.eps, attack.alpha = radius, radius * (2.5 / steps)
                adv = attack(x, y)
            flipped.append((_logits(self.model, adv).argmax(1) != y).cpu())
        return torch.cat(flipped).numpy()


def training_attack(
    method: str,
    model: torch.nn.Module,
    eps: float,
    *,
    steps: int,
    step_size: float | None,
    seed: int,
    device: torch.device,
):
    """A ``perturb(x, y)`` for adversarial training, each call seeded from (seed, call index).

    ``pgd``: PGD-L∞ with random start (Madry et al. 2018), step 2.5·eps/steps by
    default. ``fgsm-rs``: FGSM from a uniform random start with step 1.25·eps
    (Wong, Rice & Kolter, "Fast is better than free", 2020), torchattacks' FFGSM.
    """
    if method == "pgd":
        attack = torchattacks.PGD(
            model, eps=eps, alpha=(step_size or 2.5 / steps) * eps, steps=steps, random_start=True
        )
    elif method == "fgsm-rs":
        attack = torchattacks.FFGSM(model, eps=eps, alpha=(step_size or 1.25) * eps)
    else:
        raise ValueError(f"unknown hardening method {method!r}")
    calls = iter(range(2**62))
    devices = [device] if device.type == "cuda" else []

    def perturb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "harden", next(calls)))
            return attack(x, y)

    return perturb


def adversarial_versions(ctx: ProbeContext, rows: np.ndarray) -> tuple[torch.Tensor, str] | None:
    """PGD-L∞ adversarial versions of the test images ``rows`` at the reference eps, against
    their true labels (the attribution probe explains them beside the clean images);
    ``None`` when the robustness probe is off. Seeded per block like the grid's runs."""
    cfg = ctx.robustness
    if cfg is None or not cfg.enabled or len(rows) == 0:
        return None
    eps_text = reference_eps(cfg, ctx.test.images.shape[1])
    runner = AttackRunner(ctx, np.asarray(rows))
    adversarial = []
    for block, x, y in runner.blocks():
        attack = build_attack(
            "pgd_linf", ctx.model, parse_eps(eps_text), cfg, seed=derive_seed(ctx.seed, "explain")
        )
        key = ("explain", eps_text, runner.ids[block[0]])
        adversarial.append(runner._seeded(attack, x, y, key))
    return torch.cat(adversarial).detach(), eps_text


def _png(image: np.ndarray) -> str:
    """(C, H, W) floats in [0, 1] → a PNG data URI (upscaled for small images)."""
    array = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    picture = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    scale = max(1, 96 // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gallery(runner: AttackRunner, eps_text: str, per_class: int, classes: list[str]) -> dict:
    """A few images per class: clean, PGD-L∞ adversarial, and the amplified perturbation."""
    eps = parse_eps(eps_text)
    items = []
    labels = runner.labels.numpy()
    for c in range(len(classes)):
        rows = np.flatnonzero(labels == c)[:per_class]
        if not len(rows):
            continue
        for block, x, y in runner.blocks(rows):
            attack = build_attack(
                "pgd_linf",
                runner.model,
                eps,
                runner.cfg,
                seed=derive_seed(runner.ctx.seed, "gallery"),
            )
            adv = runner._seeded(attack, x, y, ("gallery", eps_text, runner.ids[block[0]]))
            clean_p = torch.softmax(_logits(runner.model, x), 1)
            adv_p = torch.softmax(_logits(runner.model, adv), 1)
            for i in range(len(block)):
                delta = (adv[i] - x[i]).cpu().numpy()
                items.append(
                    {
                        "id": str(runner.ids[block[i]]),
                        "label": classes[c],
                        "clean_pred": classes[int(clean_p[i].argmax())],
                        "clean_confidence": float(clean_p[i].max()),
                        "adv_pred": classes[int(adv_p[i].argmax())],
                        "adv_confidence": float(adv_p[i].max()),
                        "clean": _png(x[i].cpu().numpy()),
                        "adversarial": _png(adv[i].cpu().numpy()),
                        "perturbation": _png(delta / (2 * eps) + 0.5),
                    }
                )
    return {
        "attack": "pgd_linf",
        "eps": eps_text,
        "items": items,
        "perturbation_scale": f"perturbation shown as 0.5 + δ / (2·{eps_text}): mid-grey "
        "is no change, black and white are −eps and +eps",
    }


def planned_attacks(cfg: RobustnessConfig, num_classes: int) -> list[str]:
    """The configured attacks that can run: APGD-DLR needs at least 3 classes."""
    return [a for a in cfg.attacks if not (a == "apgd_dlr" and num_classes < 3)]


def planned_grid(cfg: RobustnessConfig, channels: int, num_classes: int) -> dict[str, list[str]]:
    """{attack: eps labels} the probe will run, the large-eps PGD point included."""
    grid = {a: radii(cfg, ATTACK_NORMS[a], channels) for a in planned_attacks(cfg, num_classes)}
    large = eps_label(cfg.large_eps)
    if "pgd_linf" in grid and large not in grid["pgd_linf"]:
        grid["pgd_linf"] = sorted([*grid["pgd_linf"], large], key=parse_eps)
    return grid


def run_artifacts(cfg: RobustnessConfig, channels: int, num_classes: int, attacked: int) -> dict:
    """How the probe ran, for the analyses and the report."""
    attacks = planned_attacks(cfg, num_classes)
    return {
        "attacks": attacks,
        "reference_eps": reference_eps(cfg, channels),
        "large_eps": eps_label(cfg.large_eps),
        "square_samples": min(cfg.square_samples, attacked),
        "min_eps_tolerance": parse_eps(cfg.large_eps) / 2 ** (cfg.min_eps_iterations + 1),
        "skipped": (
            []
            if attacks == list(cfg.attacks)
            else ["apgd_dlr: the DLR loss needs at least 3 classes"]
        ),
    }


def stand_in_columns(
    cfg: RobustnessConfig, channels: int, num_classes: int, labels: np.ndarray
) -> tuple[dict[str, np.ndarray], dict]:
    """Columns shaped like the probe's (no image fooled), for dry runs that list metric keys."""
    columns = {"attacked": np.ones(len(labels))}
    for name, grid in planned_grid(cfg, channels, num_classes).items():
        for eps_text in grid:
            columns[column(name, eps_text, "pred")] = labels.astype(np.float64)
            columns[column(name, eps_text, "margin")] = np.ones(len(labels))
            columns[column(name, eps_text, "valid")] = np.ones(len(labels))
    for key in SANITY_COLUMNS:
        columns[f"sanity.{key}"] = np.zeros(len(labels))
    if cfg.min_eps_samples:
        columns["min_eps"] = columns["min_eps.upper"] = np.full(len(labels), 0.1)
    return columns, run_artifacts(cfg, channels, num_classes, len(labels))


SANITY_COLUMNS = (
    "loss_clean",
    "grad_zero",
    "repeat_diff",
    "softmax_output",
    "loss_half_steps",
    "loss_full_steps",
)


@PROBES.register("attacks", summary="FGSM, PGD-L∞/L2, APGD-CE/DLR, Square (torchattacks)")
def attack_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    cfg = ctx.robustness
    if cfg is None or not cfg.enabled:
        return table
    channels = ctx.test.images.shape[1]
    n = len(ctx.test.labels)
    subset = (
        np.arange(n)
        if cfg.samples is None or cfg.samples >= n
        else stratified_subsample(ctx.test.labels, cfg.samples, seed=ctx.seed, classes=ctx.classes)
    )
    runner = AttackRunner(ctx, subset)
    columns: dict[str, np.ndarray] = {"attacked": np.zeros(n)}
    columns["attacked"][subset] = 1

    def put(name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        target = columns.setdefault(name, np.full(n, np.nan))
        target[subset if rows is None else subset[rows]] = values

    reference = reference_eps(cfg, channels)
    full = None  # PGD-L∞ at the reference eps with all steps: the grid usually has it
    for name, grid in planned_grid(cfg, channels, len(ctx.classes)).items():
        rows = None if name != "square" else runner.stratified_rows(cfg.square_samples)
        for eps_text in grid:
            out = runner.run(name, eps_text, rows=rows)
            for what in ("pred", "margin", "valid"):
                put(column(name, eps_text, what), out[what].astype(np.float64), rows)
            if name == "pgd_linf" and eps_text == reference:
                full = out
    for key, values in runner.clean_loss_and_gradients().items():
        put(f"sanity.{key}", values.astype(np.float64))
    half = runner.run("pgd_linf", reference, steps=max(1, cfg.steps // 2))
    full = full or runner.run("pgd_linf", reference)
    put("sanity.loss_half_steps", half["loss"].astype(np.float64))
    put("sanity.loss_full_steps", full["loss"].astype(np.float64))
    if cfg.min_eps_samples:
        rows = runner.stratified_rows(cfg.min_eps_samples)
        estimate, upper = runner.minimal_eps(rows, parse_eps(cfg.large_eps))
        put("min_eps", estimate, rows)
        put("min_eps.upper", upper, rows)
    if cfg.gallery_per_class:
        ctx.artifacts["gallery"] = gallery(runner, reference, cfg.gallery_per_class, ctx.classes)
    ctx.artifacts["robustness"] = run_artifacts(cfg, channels, len(ctx.classes), len(subset))
    return table.assign(**columns)
