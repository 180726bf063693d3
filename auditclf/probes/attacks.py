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

No number depends on ``robustness.batch_size`` (images attacked together, which
sets the memory an attack needs): every random draw an attack makes for its
images is drawn per image, from a generator seeded by (run seed, attack, eps,
sample id, restart), and the model sees every image in passes of a fixed size
(:class:`FixedChunks`), so an image's logits and gradients do not depend on its
batch either; see :class:`PerImageRandomness` for how torchattacks is steered.

It also records what the sanity checks need: clean-input gradients (zero or
non-finite ones mean masked gradients), a repeated forward pass (a randomised
model needs expectation over transformation), the loss after half and all
PGD steps, and a bisection of each image's minimal L∞ perturbation.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks
from torch.overrides import TorchFunctionMode

from auditclf import distributed
from auditclf.catalog import ATTACK_NORMS, BLACK_BOX_ATTACKS
from auditclf.config import AUTOATTACK_TARGETS, RobustnessConfig, eps_label, parse_eps
from auditclf.data.splits import stratified_subsample
from auditclf.errors import DataError
from auditclf.gradients import NO_GRADIENTS
from auditclf.keys import adv_column as column  # the one spelling of adv.<attack>@<eps>.<what>
from auditclf.keys import gallery_array
from auditclf.probes.base import PROBES, FixedChunks, PassSizes, ProbeContext, in_blocks
from auditclf.progress import Task
from auditclf.registry import Registry
from auditclf.seeding import derive_seed, numpy_rng
from auditclf.train.standard import to_unit_float

DEFAULT_RADII = {
    ("linf", 1): ["0.05", "0.1", "0.2", "0.3"],
    ("linf", 3): ["2/255", "4/255", "8/255", "16/255"],
    ("l2", 1): ["0.5", "1", "2", "3"],
    ("l2", 3): ["0.25", "0.5", "1"],
}
LOSS_CHECK_IMAGES = 30  # fewer survivors at the reference eps: the loss check takes all
LARGE_EPS_PROBE = "pgd_linf"  # the attack run at the large eps (else APGD-CE)
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


class Attack(Protocol):
    """One attack of the grid: the facts the probe plans and runs it by, and how to build it.

    A new attack is one class below (a few lines around torchattacks) registered under a
    name of :data:`auditclf.catalog.CATALOG` (``attack``), with its norm in
    :data:`auditclf.catalog.ATTACK_NORMS`; ``tests/test_methods.py`` runs every one.
    """

    name: str
    norm: str  # "linf" or "l2": the ball eps measures
    white_box: bool  # needs the model's gradients (else it only queries the model)
    on_correct_only: bool  # torchattacks attacks only the images the model gets right
    min_classes: int  # fewer classes and the attack cannot run ...
    min_classes_reason: str  # ... for this reason (stated in the report)

    def restarts(self, cfg: RobustnessConfig) -> int:
        """How many times the runner starts it per image (keeping the furthest)."""

    def samples(self, cfg: RobustnessConfig) -> int | None:
        """Images it attacks: a stratified count of its own, or None for the whole subset."""

    def build(
        self, model: torch.nn.Module, eps: float, cfg: RobustnessConfig, *, seed: int, steps: int
    ) -> torchattacks.Attack:
        """The torchattacks attack at radius ``eps`` (pixel units) with ``steps`` iterations;
        ``seed`` seeds the generators the attack re-seeds itself (APGD, Square)."""


ATTACKS: Registry[type[Attack]] = Registry("attack")


class _TorchAttack:
    """What most attacks share: every attacked image, restarts as configured; white-box
    unless the catalog lists it among :data:`~auditclf.catalog.BLACK_BOX_ATTACKS`."""

    name: str
    on_correct_only = False
    min_classes = 2
    min_classes_reason = "a classifier needs at least 2 classes"

    @property
    def norm(self) -> str:
        return ATTACK_NORMS[self.name]

    @property
    def white_box(self) -> bool:
        return self.name not in BLACK_BOX_ATTACKS

    def restarts(self, cfg: RobustnessConfig) -> int:
        return cfg.restarts

    def samples(self, cfg: RobustnessConfig) -> int | None:
        return None


def _alpha(cfg: RobustnessConfig, eps: float, steps: int) -> float:
    """The PGD step: ``step_size`` × eps, by default 2.5 · eps / steps (Madry et al. 2018)."""
    return (cfg.step_size or 2.5 / steps) * eps


@ATTACKS.register("fgsm")
class Fgsm(_TorchAttack):
    """FGSM (Goodfellow et al. 2015): one step of eps along the sign of the gradient."""

    name = "fgsm"

    def restarts(self, cfg: RobustnessConfig) -> int:
        return 1  # deterministic: a restart would repeat it

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        return torchattacks.FGSM(model, eps=eps)


@ATTACKS.register("pgd_linf")
class PgdLinf(_TorchAttack):
    """PGD in the L∞ ball (Madry et al. 2018), from a random start unless configured off."""

    name = "pgd_linf"

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        alpha = _alpha(cfg, eps, steps)
        return torchattacks.PGD(
            model, eps=eps, alpha=alpha, steps=steps, random_start=cfg.random_start
        )


@ATTACKS.register("pgd_l2")
class PgdL2(_TorchAttack):
    """PGD in the L2 ball (Madry et al. 2018), from a random start unless configured off."""

    name = "pgd_l2"

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        alpha = _alpha(cfg, eps, steps)
        return torchattacks.PGDL2(
            model, eps=eps, alpha=alpha, steps=steps, random_start=cfg.random_start
        )


class _Apgd(_TorchAttack):
    """APGD in the L∞ ball (Croce & Hein 2020) with the loss ``loss``; one restart per call:
    the runner restarts it, each restart with its own per-image seeds."""

    loss: str
    on_correct_only = True

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        return torchattacks.APGD(
            model,
            norm="Linf",
            eps=eps,
            steps=steps,
            n_restarts=1,
            seed=seed % 2**31,
            loss=self.loss,
        )


@ATTACKS.register("apgd_ce")
class ApgdCe(_Apgd):
    """APGD on the cross-entropy loss."""

    name = "apgd_ce"
    loss = "ce"


@ATTACKS.register("apgd_dlr")
class ApgdDlr(_Apgd):
    """APGD on the difference-of-logits-ratio loss, which compares the true class with the
    second and third largest logits."""

    name = "apgd_dlr"
    loss = "dlr"
    min_classes = 3
    min_classes_reason = "the DLR loss needs at least 3 classes"


@ATTACKS.register("square")
class Square(_TorchAttack):
    """Square (Andriushchenko et al. 2020), the black-box reference: random square updates
    kept when they lower the margin, ``square_queries`` queries per image, on its own
    stratified ``square_samples`` images (queries are slow)."""

    name = "square"
    on_correct_only = True

    def restarts(self, cfg: RobustnessConfig) -> int:
        return 1

    def samples(self, cfg: RobustnessConfig) -> int | None:
        return cfg.square_samples

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        return torchattacks.Square(
            model,
            norm="Linf",
            eps=eps,
            n_queries=cfg.square_queries,
            n_restarts=1,
            seed=seed % 2**31,
            loss="margin",
        )


# The targeted attacks of AutoAttack's standard version (``robustness.preset: autoattack``).


def _target_ranks(attack: torchattacks.Attack, images: torch.Tensor) -> int:
    """How many target classes AutoAttack's standard version tries per image: 9, or every
    class but the true one when the model has fewer (its logits say how many)."""
    with torch.no_grad():
        classes = attack.get_logits(images[:1]).shape[1]
    return min(AUTOATTACK_TARGETS, classes - 1)


class _ApgdtRankByRank(torchattacks.APGDT):
    """torchattacks' APGD-T, one target rank per call of its ``perturb``, on every image.

    torchattacks' loop over the target ranks hands each rank after the first only the
    images the earlier ranks left, so their random starts would be drawn for part of the
    batch from one generator: an image's start would depend on its batch-mates. Here every
    rank runs on the whole batch (``perturb`` set to one target class, the rank it sets
    shifted to ours), so every start is shaped like the batch and drawn per image
    (:class:`PerImageRandomness`). An image keeps the adversarial of the first rank that
    fooled it, as AutoAttack keeps it. The price: images already fooled are attacked again
    at later ranks (their result dropped); the loop stops once every image is fooled.
    """

    def __init__(self, model: torch.nn.Module, **kwargs) -> None:
        self._rank_offset = 0  # perturb's loop sets target_class 2 only; this shifts it
        super().__init__(model, n_classes=2, **kwargs)

    @property
    def target_class(self) -> int | None:
        return self._target_class

    @target_class.setter
    def target_class(self, rank: int | None) -> None:
        self._target_class = None if rank is None else rank + self._rank_offset

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.clone().detach(), labels.clone().detach()
        adv = images.clone()
        left = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for offset in range(_target_ranks(self, images)):
            self._rank_offset = offset
            robust, attempt = self.perturb(images, labels, cheap=True)
            fooled = left & ~robust
            adv[fooled] = attempt[fooled]
            left &= robust
            if not left.any():
                break
        return adv


class _FabTargeted(torchattacks.FAB):
    """torchattacks' multi-targeted FAB at as many target ranks as AutoAttack's standard
    version (counted from the model's logits when called)."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.n_target_classes = _target_ranks(self, images)
        return super().forward(images, labels)


@ATTACKS.register("apgd_t")
class ApgdT(_TorchAttack):
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, towards each of the
    classes the clean logits rank highest after the true one in turn (9, or all), as
    AutoAttack's standard version runs it (rho 0.75, one restart per call)."""

    name = "apgd_t"
    on_correct_only = True
    min_classes = 4
    min_classes_reason = "the targeted DLR loss needs at least 4 classes"

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        return _ApgdtRankByRank(
            model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed % 2**31
        )


@ATTACKS.register("fab_t")
class FabT(_TorchAttack):
    """FAB-T, the targeted fast adaptive boundary attack (Croce & Hein 2020): the smallest
    perturbation it finds towards each of the classes the clean logits rank highest after
    the true one (9, or all), kept when within eps; torchattacks' defaults (alpha_max 0.1,
    eta 1.05, beta 0.9) are AutoAttack's. It draws no random number on its first start."""

    name = "fab_t"
    on_correct_only = True

    def restarts(self, cfg: RobustnessConfig) -> int:
        return 1  # its first start is the image itself: a restart would repeat it

    def build(self, model, eps, cfg, *, seed, steps) -> torchattacks.Attack:
        return _FabTargeted(
            model,
            norm="Linf",
            eps=eps,
            steps=steps,
            n_restarts=1,
            multi_targeted=True,
            seed=seed % 2**31,
        )


class PerImageRandomness(TorchFunctionMode):
    """Inside one torchattacks call: random draws per image, and a loss summed over images.

    torchattacks draws a batch's random start in one call on one generator (PGD:
    ``uniform_``; PGD-L2: ``normal_`` then ``uniform_``; APGD: ``torch.rand``; Square:
    ``torch.rand`` for its initial stripes), so an image's start depended on the batch it
    came in. This mode catches exactly the draws shaped like the batch (leading size N, as
    many dimensions as the images) and fills image i's part from image i's own generator,
    ``seeds[i]``, drawn on the CPU (the same numbers on any device) in the dtype the call
    asks for. Draws of another shape (Square's square positions and signs, which
    torchattacks shares between all images of a batch) come from the global generator,
    which the attack seeds the same way for every batch. APGD and Square are handed only
    the images they attack (the correctly classified ones), so their draws have N rows;
    should a randomised model change its mind between our clean pass and theirs, their
    draw has fewer rows and comes from the global generator: reproducible, not per image
    (the ``deterministic_forward`` check fails such a model anyway).

    FGSM and PGD step along the gradient of the cross-entropy averaged over the batch;
    the mean is replaced by the sum: the step (a sign, or an L2-normalised gradient) is
    the same, but an image's gradient no longer carries a factor 1/N that rounds
    differently for every N.

    Only the draws and the reduction are overridden, so torchattacks still does all the
    attack work; a copy of its loops would drift from the engine the report names. The
    mode is paused during the model's forward pass (:class:`AttackedModel`): a model's own
    randomness stays its own.
    """

    def __init__(self, seeds: list[int], ndim: int) -> None:
        super().__init__()
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.ndim = ndim

    @contextmanager
    def paused(self):
        """This mode off for a block (it must be the innermost mode when the block starts)."""
        TorchFunctionMode.__exit__(self, None, None, None)
        try:
            yield
        finally:
            TorchFunctionMode.__enter__(self)

    def _per_image(self, shape) -> bool:
        return len(shape) == self.ndim and shape[0] == len(self.generators)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.cross_entropy and kwargs.get("reduction") == "mean":
            kwargs["reduction"] = "sum"
        elif func in (torch.rand, torch.randn) and "generator" not in kwargs:
            size = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else args
            if self._per_image(size):
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                parts = [
                    func(size[1:], generator=g, dtype=dtype, device="cpu") for g in self.generators
                ]
                return torch.stack(parts).to(kwargs.get("device") or "cpu")
        elif func in (torch.Tensor.uniform_, torch.Tensor.normal_) and "generator" not in kwargs:
            tensor = args[0]
            if self._per_image(tensor.shape):
                drawn = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
                for part, generator in zip(drawn, self.generators, strict=True):
                    func(part, *args[1:], generator=generator, **kwargs)
                return tensor.copy_(drawn)
        return func(*args, **kwargs)


class AttackedModel(torch.nn.Module):
    """The model as the attacks see it: in passes of a fixed size (:class:`FixedChunks`),
    and with the running attack's :class:`PerImageRandomness` paused during the pass."""

    def __init__(self, model: torch.nn.Module, sizes: PassSizes | None = None) -> None:
        super().__init__()
        self.passes = FixedChunks(model, sizes)
        self.randomness: PerImageRandomness | None = None
        if next(model.parameters(), None) is None:  # an exported file's runtime, say
            # torchattacks takes its device from the model's first parameter (and prints to
            # stdout when there is none): an empty one, on the device of the model's buffers
            anchor = next(model.buffers(), None)
            device = anchor.device if anchor is not None else torch.device("cpu")
            self.device_anchor = torch.nn.Parameter(
                torch.empty(0, device=device), requires_grad=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.randomness is None:
            return self.passes(x)
        with self.randomness.paused():
            return self.passes(x)

    @contextmanager
    def per_image(self, seeds: list[int], ndim: int):
        """A block in which attacks on this model draw their randomness per image."""
        self.randomness = PerImageRandomness(seeds, ndim)
        try:
            with self.randomness:
                yield
        finally:
            self.randomness = None


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
    """Runs attacks block by block over the attacked subset, with per-image randomness.

    A block is ``robustness.batch_size`` images; it halves on a GPU out-of-memory error
    (``sizes``, recorded in the report)."""

    def __init__(
        self, ctx: ProbeContext, subset: np.ndarray, clean_pred: np.ndarray | None = None
    ) -> None:
        """``clean_pred``: the clean probe's predictions of the ``subset`` images, so that
        attacks that take only the correctly classified images need no clean pass of their
        own (None: they make one)."""
        self.ctx, self.cfg = ctx, ctx.robustness
        self.clean_pred = clean_pred
        self.sizes = PassSizes(block=self.cfg.batch_size, chunk=ctx.chunk)
        self.model = AttackedModel(ctx.model, self.sizes)
        self.subset = subset
        self.images = torch.from_numpy(np.asarray(ctx.test.images[subset]))
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

    def batch(self, block: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (float32 in [0, 1]) and labels of ``block``, on the device."""
        x = to_unit_float(self.images[block], self.ctx.device)
        return x, self.labels[block].to(self.ctx.device)

    def blocks(self, rows: np.ndarray | None = None):
        """(block, x, y) over ``rows`` (default: the whole subset), one block at a time."""
        rows = np.arange(len(self.subset)) if rows is None else rows
        for start in range(0, len(rows), self.sizes.block):
            block = rows[start : start + self.sizes.block]
            yield block, *self.batch(block)

    def each_block(self, rows: np.ndarray | None, work) -> list:
        """``work(block, x, y)`` per block of ``rows``, a block retried at half the size when
        the GPU runs out of memory (:func:`in_blocks`)."""
        rows = np.arange(len(self.subset)) if rows is None else rows
        return in_blocks(rows, self.sizes, lambda b: work(b, *self.batch(b)), "attack probe")

    def each_row(
        self, rows: np.ndarray | None, work, names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """{name: value per row of ``rows``} from ``work(block, x, y)``, which returns one
        tensor per name for its block (:meth:`each_block`). Under torchrun each rank works on
        its :func:`~auditclf.distributed.shard` of ``rows`` and every rank gets every row's
        values: the results do not depend on the block, so neither on the rank."""
        rows = np.arange(len(self.subset)) if rows is None else rows
        return distributed.map_rows(
            rows, lambda mine: _to_numpy(names, self.each_block(mine, work))
        )

    def _per_image(self, attack: torchattacks.Attack, x, y, seeds: list[int]) -> torch.Tensor:
        """``attack(x, y)`` with each image's randomness from its own seed; the global
        generators, which APGD and Square re-seed, are restored afterwards."""
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self.model.per_image(seeds, x.dim()):
            return attack(x, y)

    def adversarial(
        self,
        name: str,
        eps_text: str,
        block: np.ndarray,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        restart: int = 0,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Adversarial versions of the images ``block``: image i's random draws come from
        (run seed, attack, eps, its sample id, restart), so they do not depend on the block."""
        method = ATTACKS.get(name)()
        built = method.build(
            self.model,
            parse_eps(eps_text),
            self.cfg,
            steps=steps or self.cfg.steps,
            seed=derive_seed(self.ctx.seed, name, eps_text),
        )
        seeds = [derive_seed(self.ctx.seed, name, eps_text, i, restart) for i in self.ids[block]]
        if not method.on_correct_only:
            return self._per_image(built, x, y, seeds)
        # hand it only the images it attacks, so that its draws cover exactly those seeded
        adv = x.clone()
        if self.clean_pred is not None:
            correct = self.clean_pred[block] == self.labels.numpy()[block]
        else:
            correct = (_logits(self.model, x).argmax(1) == y).cpu().numpy()
        if correct.any():
            chosen = [seed for seed, keep in zip(seeds, correct, strict=True) if keep]
            mask = torch.from_numpy(correct).to(x.device)
            adv[mask] = self._per_image(built, x[mask], y[mask], chosen)
        return adv

    def run(
        self, name: str, eps_text: str, *, rows: np.ndarray | None = None, steps: int | None = None
    ) -> dict[str, np.ndarray]:
        """pred, margin, valid per image of ``rows`` (default: the whole subset)."""
        method = ATTACKS.get(name)()
        eps, norm, restarts = parse_eps(eps_text), method.norm, method.restarts(self.cfg)

        def work(block, x, y) -> tuple[torch.Tensor, ...]:
            best_margin = best_pred = best_valid = best_loss = None
            for restart in range(restarts):
                adv = self.adversarial(name, eps_text, block, x, y, restart=restart, steps=steps)
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
            return best_pred, best_margin, best_valid, best_loss

        return self.each_row(rows, work, ("pred", "margin", "valid", "loss"))

    def clean_loss_and_gradients(self) -> dict[str, np.ndarray]:
        """Per image: CE loss, whether its input gradient is zero or non-finite, and the
        largest logit difference between two forward passes of the same input."""

        def work(_block, x, y) -> tuple[torch.Tensor, ...]:
            x = x.clone().requires_grad_(True)
            logits = self.model(x).float()
            loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), x)
            flat = grad.flatten(1)
            zero = (flat == 0).all(1) | ~torch.isfinite(flat).all(1)
            return loss.detach(), zero, *_query_checks(self.model, x.detach(), logits.detach())

        return self.each_row(None, work, ("loss_clean", "grad_zero", *QUERY_CHECKS))

    def repeated_pass(self) -> dict[str, np.ndarray]:
        """Per image, the checks that need no gradient (:func:`_query_checks`), for a model
        without gradients."""

        def work(_block, x, _y) -> tuple[torch.Tensor, ...]:
            return _query_checks(self.model, x, _logits(self.model, x))

        return self.each_row(None, work, QUERY_CHECKS)

    def minimal_eps(
        self, rows: np.ndarray, high: float, bracket: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bisection of each image's smallest L∞ eps that PGD flips, in [0, high].

        PGD runs without random start here (deterministic), with a per-image
        eps tensor so every image bisects its own interval in one batch.
        ``bracket`` = (low, upper) per image, from the fixed-eps attacks: the largest grid
        eps at which PGD-L∞ left the image correct (0 if none) and the smallest at which it
        fooled it (+inf if none, 0 if it is wrong already). Bisection then starts inside
        it, and stops at the same tolerance, high / 2^(iterations+1), in fewer steps.
        Returns (estimate, upper bound); an image PGD cannot flip at ``high``
        gets +inf, one already misclassified gets 0.
        """
        iterations, steps = self.cfg.min_eps_iterations, self.cfg.steps
        limit = high / 2 ** (iterations + 1) * (1 + 1e-9)  # the tolerance, float rounding aside
        if bracket is None:
            low = np.zeros(len(rows))
            upper = np.full(len(rows), high)
            flipped_at_high = self._flips(rows, upper, steps)
            wrong_clean = self._flips(rows, np.zeros(len(rows)), steps)
            upper[~flipped_at_high] = np.inf
        else:
            low, upper = (np.asarray(b, dtype=np.float64).copy() for b in bracket)
            wrong_clean = upper == 0
        while True:
            active = np.isfinite(upper) & ~wrong_clean & ((upper - low) / 2 > limit)
            if not active.any():
                break
            mid = (low + upper) / 2
            flips = np.zeros(len(rows), dtype=bool)
            flips[active] = self._flips(rows[active], mid[active], steps)
            upper = np.where(active & flips, mid, upper)
            low = np.where(active & ~flips, mid, low)
        estimate = np.where(wrong_clean, 0.0, (low + upper) / 2)
        estimate[~np.isfinite(upper)] = np.inf
        return estimate, np.where(wrong_clean, 0.0, upper)

    def _flips(self, rows: np.ndarray, eps: np.ndarray, steps: int) -> np.ndarray:
        def work(block, x, y) -> tuple[torch.Tensor]:
            local = np.searchsorted(rows, block)
            radius = torch.tensor(eps[local], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
            if not eps[local].any():
                adv = x
            else:
                # torchattacks clamps with eps and steps with alpha; tensors broadcast per image
                pgd = torchattacks.PGD(
                    self.model,
                    eps=radius,
                    alpha=radius * (2.5 / steps),
                    steps=steps,
                    random_start=False,
                )
                # no random start here: the mode only sums the loss over images (the seeds
                # stand ready should a draw shaped like the batch ever be made)
                seeds = [derive_seed(self.ctx.seed, "min_eps", i) for i in self.ids[block]]
                adv = self._per_image(pgd, x, y, seeds)
            return (_logits(self.model, adv).argmax(1) != y,)

        return self.each_row(rows, work, ("flips",))["flips"]


def _query_checks(
    model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the largest logit difference between ``logits`` and a second pass of the
    same input, and whether the outputs look like probabilities (non-negative, summing to
    one)."""
    repeat = (_logits(model, x) - logits).abs().amax(1)
    sums_to_one = (logits.min(1).values >= 0) & ((logits.sum(1) - 1).abs() < 1e-4)
    return repeat, sums_to_one


def _to_numpy(names: tuple[str, ...], per_block: list[tuple[torch.Tensor, ...]]) -> dict:
    """{name: the blocks' values concatenated, as NumPy}: one copy off the device per name."""
    return {
        name: torch.cat([values[k] for values in per_block]).cpu().numpy()
        for k, name in enumerate(names)
    }


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


def adversarial_eps(ctx: ProbeContext, count: int) -> str | None:
    """The eps of :func:`adversarial_versions` of ``count`` images: the reference eps, or
    None when none are made (the robustness probe off, a model without gradients)."""
    cfg = ctx.robustness
    if cfg is None or not cfg.enabled or not ctx.gradients or count == 0:
        return None
    return reference_eps(cfg, ctx.test.images.shape[1])


def adversarial_versions(ctx: ProbeContext, rows: np.ndarray) -> tuple[torch.Tensor, str] | None:
    """PGD-L∞ adversarial versions of the test images ``rows`` at the reference eps, against
    their true labels (the attribution probe explains them beside the clean images);
    ``None`` when the robustness probe is off or the model has no gradients. They are the
    images the grid's PGD-L∞ run at that eps made (first restart): the same per-image seeds."""
    eps_text = adversarial_eps(ctx, len(rows))
    if eps_text is None:
        return None
    runner = AttackRunner(ctx, np.asarray(rows))
    with no_weight_gradients(ctx.model):
        adversarial = runner.each_block(
            None, lambda block, x, y: runner.adversarial("pgd_linf", eps_text, block, x, y).detach()
        )
    return torch.cat(adversarial), eps_text


def gallery(
    runner: AttackRunner, eps_text: str, per_class: int, classes: list[str]
) -> tuple[dict, dict[str, np.ndarray]]:
    """A few images per class: clean, PGD-L∞ adversarial (the grid's, first restart), and
    the perturbation scaled to [0, 1] → (the items' captions, their (K, C, H, W) images
    for the artifact file, row i being item i)."""
    eps = parse_eps(eps_text)
    labels = runner.labels.numpy()
    rows = np.concatenate(
        [np.flatnonzero(labels == c)[:per_class] for c in range(len(classes))]
    ).astype(np.int64)

    def work(block, x, y) -> tuple[torch.Tensor, ...]:
        adv = runner.adversarial("pgd_linf", eps_text, block, x, y)
        clean_p = torch.softmax(_logits(runner.model, x), 1)
        adv_p = torch.softmax(_logits(runner.model, adv), 1)
        return x, adv.detach(), clean_p, adv_p

    x, adv, clean_p, adv_p = runner.each_row(
        rows, work, ("x", "adv", "clean", "adversarial")
    ).values()
    items = []
    for i, row in enumerate(rows):
        items.append(
            {
                "id": str(runner.ids[row]),
                "label": classes[labels[row]],
                "clean_pred": classes[int(clean_p[i].argmax())],
                "clean_confidence": float(clean_p[i].max()),
                "adv_pred": classes[int(adv_p[i].argmax())],
                "adv_confidence": float(adv_p[i].max()),
            }
        )
    images = {"clean": x, "adversarial": adv, "perturbation": (adv - x) / (2 * eps) + 0.5}
    notes = {
        "attack": "pgd_linf",
        "eps": eps_text,
        "items": items,
        "perturbation_scale": f"perturbation shown as 0.5 + δ / (2·{eps_text}): mid-grey "
        "is no change, black and white are −eps and +eps",
    }
    return notes, {gallery_array(k): v.astype(np.float32) for k, v in images.items()}


def planned_attacks(cfg: RobustnessConfig, num_classes: int, gradients: bool = True) -> list[str]:
    """The configured attacks that can run with ``num_classes`` classes (APGD-DLR needs 3),
    on a model with ``gradients`` or, without, the black-box ones only."""
    return [
        a
        for a in cfg.attacks
        if num_classes >= ATTACKS.get(a).min_classes
        and (gradients or not ATTACKS.get(a)().white_box)
    ]


def planned_grid(
    cfg: RobustnessConfig, channels: int, num_classes: int, gradients: bool = True
) -> dict[str, list[str]]:
    """{attack: eps labels} the probe will run, the large-eps point included: on PGD-L∞, or
    on APGD-CE when PGD-L∞ does not run (the AutoAttack preset)."""
    planned = planned_attacks(cfg, num_classes, gradients)
    grid = {a: radii(cfg, ATTACK_NORMS[a], channels) for a in planned}
    large = eps_label(cfg.large_eps)
    probe = LARGE_EPS_PROBE if LARGE_EPS_PROBE in grid else "apgd_ce"
    if probe in grid and large not in grid[probe]:
        grid[probe] = sorted([*grid[probe], large], key=parse_eps)
    return grid


def run_artifacts(
    cfg: RobustnessConfig, channels: int, num_classes: int, attacked: int, gradients: bool = True
) -> dict:
    """How the probe ran, for the analyses and the report."""
    attacks = planned_attacks(cfg, num_classes, gradients)
    return {
        "attacks": attacks,
        "gradients": gradients,
        "reference_eps": reference_eps(cfg, channels),
        "large_eps": eps_label(cfg.large_eps),
        "square_samples": min(cfg.square_samples, attacked),
        "min_eps_tolerance": parse_eps(cfg.large_eps) / 2 ** (cfg.min_eps_iterations + 1),
        "skipped": [_skip_reason(name, num_classes) for name in cfg.attacks if name not in attacks],
    }


def _skip_reason(name: str, num_classes: int) -> str:
    """Why the configured attack ``name`` did not run: too few classes, or no gradients."""
    method = ATTACKS.get(name)
    if num_classes < method.min_classes:
        return f"{name}: {method.min_classes_reason}"
    return f"{name}: a white-box attack, and {NO_GRADIENTS}"


def stand_in_columns(
    cfg: RobustnessConfig,
    channels: int,
    num_classes: int,
    labels: np.ndarray,
    gradients: bool = True,
) -> tuple[dict[str, np.ndarray], dict]:
    """Columns shaped like the probe's (no image fooled) on a model with ``gradients`` or
    without, for dry runs that list metric keys."""
    columns = {"attacked": np.ones(len(labels))}
    for name, grid in planned_grid(cfg, channels, num_classes, gradients).items():
        for eps_text in grid:
            columns[column(name, eps_text, "pred")] = labels.astype(np.float64)
            columns[column(name, eps_text, "margin")] = np.ones(len(labels))
            columns[column(name, eps_text, "valid")] = np.ones(len(labels))
    for key in SANITY_COLUMNS if gradients else QUERY_CHECKS:
        columns[f"sanity.{key}"] = np.zeros(len(labels))
    if cfg.min_eps_samples and gradients:
        columns["min_eps"] = columns["min_eps.upper"] = np.full(len(labels), 0.1)
    return columns, run_artifacts(cfg, channels, num_classes, len(labels), gradients)


QUERY_CHECKS = ("repeat_diff", "softmax_output")  # the sanity columns a query gives
SANITY_COLUMNS = (
    "loss_clean",
    "grad_zero",
    "repeat_diff",
    "softmax_output",
    "loss_half_steps",
    "loss_full_steps",
)


@contextmanager
def no_weight_gradients(model: torch.nn.Module):
    """The model's parameters do not require gradients inside the block (attacks need input
    gradients only); each parameter's own setting is restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def fooled(out: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Per image: the model gets the attack's image wrong (an invalid adversarial image, out
    of the ball or [0, 1], fails the ``adversarial_valid`` check, which makes the whole
    section unreliable; it still counts here, as in the accuracy, so no curve can rise)."""
    return out["pred"] != labels


class Ladder:
    """One attack up its eps grid, each image attacked until it falls (monotone worst case).

    An adversarial image found at eps is inside every larger L∞ (or L2) ball, so an image
    fooled at eps counts as fooled at every larger eps of the same norm, with that image's
    prediction, margin and validity (:func:`fooled`); only the survivors are attacked at
    the next eps. The column ``adv.<attack>@<eps>.ran`` says which images the attack ran
    on at that eps (1) and which carry an earlier eps's result (0): the raw numbers stay in
    the table.
    """

    def __init__(self, rows: np.ndarray, labels: np.ndarray) -> None:
        self.rows = rows
        self.labels = labels
        self.alive = np.ones(len(rows), dtype=bool)
        self.last: dict[str, np.ndarray] | None = None

    def step(self, run) -> dict[str, np.ndarray]:
        """``run(rows)`` on the survivors → this eps's results for every row of the ladder."""
        result = {k: v.copy() for k, v in self.last.items()} if self.last else None
        attacked = self.rows[self.alive]
        out = run(attacked) if len(attacked) else None
        if result is None:
            result = out
            result["ran"] = np.ones(len(self.rows))
        else:
            result["ran"] = np.zeros(len(self.rows))
            if out is not None:
                for key, values in out.items():
                    result[key] = result[key].astype(np.result_type(result[key], values))
                    result[key][self.alive] = values
                result["ran"][self.alive] = 1
        if out is not None:
            self.alive[self.alive] = ~fooled(out, self.labels[self.alive])
        self.last = result
        return result


@PROBES.register("attacks")
def attack_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    cfg = ctx.robustness
    if cfg is None or not cfg.enabled:
        return table
    grid = planned_grid(cfg, ctx.test.images.shape[1], len(ctx.classes), ctx.gradients)
    what = f"attacks on {ctx.label}" if ctx.label else "attacks"
    steps = sum(len(radii_) for radii_ in grid.values()) + 3  # + sanity, bisection, gallery
    with no_weight_gradients(ctx.model), ctx.progress.task(what, total=steps) as task:
        return _attack_probe(ctx, table, grid, task)


def _attack_probe(ctx: ProbeContext, table: pd.DataFrame, grid: dict, task: Task) -> pd.DataFrame:
    cfg = ctx.robustness
    channels = ctx.test.images.shape[1]
    n = len(ctx.test.labels)
    subset = (
        np.arange(n)
        if cfg.samples == "all" or cfg.samples >= n
        else stratified_subsample(ctx.test.labels, cfg.samples, seed=ctx.seed, classes=ctx.classes)
    )
    runner = AttackRunner(ctx, subset, clean_pred=table["pred"].to_numpy()[subset])
    labels = runner.labels.numpy()
    columns: dict[str, np.ndarray] = {"attacked": np.zeros(n)}
    columns["attacked"][subset] = 1

    def put(name: str, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        target = columns.setdefault(name, np.full(n, np.nan))
        target[subset if rows is None else subset[rows]] = values

    reference = reference_eps(cfg, channels)
    pgd_ladder = {}  # PGD-L∞'s {eps: results}: the reference eps's losses, the brackets
    for name, radii_ in grid.items():
        count = ATTACKS.get(name)().samples(cfg)
        rows = np.arange(len(subset)) if count is None else runner.stratified_rows(count)
        ladder = Ladder(rows, labels[rows])
        for eps_text in radii_:
            task.advance(0, f"{name} eps {eps_text}, {int(ladder.alive.sum())} images standing")
            out = ladder.step(lambda attacked, e=eps_text, a=name: runner.run(a, e, rows=attacked))
            task.advance()
            for what in ("pred", "margin", "valid", "ran"):
                put(column(name, eps_text, what), out[what].astype(np.float64), rows)
            if name == "pgd_linf":
                pgd_ladder[eps_text] = out
    task.advance(0, "sanity checks: input gradients, repeated pass, loss after half the steps")
    _sanity(runner, put, reference, pgd_ladder.get(reference))
    task.advance(1, f"minimal perturbation: bisection on {cfg.min_eps_samples} images")
    if cfg.min_eps_samples and ctx.gradients:
        rows = runner.stratified_rows(cfg.min_eps_samples)
        large = parse_eps(cfg.large_eps)
        wrong = runner.clean_pred[rows] != labels[rows]
        bracket = _bracket(pgd_ladder, rows, labels, large, wrong) if pgd_ladder else None
        estimate, upper = runner.minimal_eps(rows, large, bracket)
        put("min_eps", estimate, rows)
        put("min_eps.upper", upper, rows)
    task.advance(1, "gallery")
    if cfg.gallery_per_class and ctx.gradients:
        ctx.artifacts["gallery"], images = gallery(
            runner, reference, cfg.gallery_per_class, ctx.classes
        )
        ctx.arrays.update(images)
    ctx.artifacts["robustness"] = run_artifacts(
        cfg, channels, len(ctx.classes), len(subset), ctx.gradients
    ) | {"passes": runner.sizes.record()}
    task.advance()
    # joined in one step: inserting ~100 columns one by one fragments the frame
    return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)


def _sanity(runner: AttackRunner, put, reference: str, full: dict | None) -> None:
    """The sanity columns: input gradients, a repeated pass and the loss check, or the
    repeated pass alone on a model without gradients."""
    if not runner.ctx.gradients:
        for key, values in runner.repeated_pass().items():
            put(f"sanity.{key}", values.astype(np.float64))
        return
    for key, values in runner.clean_loss_and_gradients().items():
        put(f"sanity.{key}", values.astype(np.float64))
    _loss_check(runner, put, reference, full)


def _loss_check(runner: AttackRunner, put, reference: str, full: dict | None) -> None:
    """The loss after half and all PGD-L∞ steps at the reference eps, on the images that eps
    attacked (the survivors of the smaller eps; the grid's run gives the full steps); on
    every attacked image when fewer than :data:`LOSS_CHECK_IMAGES` survived (a mean over a
    handful of images would be noise)."""
    cfg = runner.cfg
    survivors = 0 if full is None else int((full["ran"] == 1).sum())
    if survivors < min(LOSS_CHECK_IMAGES, len(runner.subset)):
        full = runner.run("pgd_linf", reference)
        full["ran"] = np.ones(len(full["loss"]))
    ran = np.flatnonzero(full["ran"] == 1)
    half = runner.run("pgd_linf", reference, rows=ran, steps=max(1, cfg.steps // 2))
    put("sanity.loss_half_steps", half["loss"].astype(np.float64), ran)
    put("sanity.loss_full_steps", full["loss"][ran].astype(np.float64), ran)


def _bracket(
    ladder: dict[str, dict[str, np.ndarray]],
    rows: np.ndarray,
    labels: np.ndarray,
    large: float,
    wrong: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image of ``rows``: (largest grid eps at which PGD-L∞ left it correct, or 0;
    smallest at which it fooled it, +inf if none up to ``large``, 0 if wrong when clean)."""
    low, upper = np.zeros(len(rows)), np.full(len(rows), np.inf)
    for eps_text, out in sorted(ladder.items(), key=lambda kv: parse_eps(kv[0])):
        eps = parse_eps(eps_text)
        if eps > large:
            break
        hit = fooled(out, labels)[rows]
        low = np.where(~hit, eps, low)
        upper = np.where(hit & ~np.isfinite(upper), eps, upper)
    return np.where(wrong, 0.0, low), np.where(wrong, 0.0, upper)
