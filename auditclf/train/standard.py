"""Standard training: Adam and cross-entropy, as in the classic tutorial.

Optional inverse-frequency class weights, class-balanced oversampling for
imbalanced data, or per-image sampling weights (group-balanced retraining);
early stopping on the validation loss (the best epoch's weights are kept). On
CUDA: bf16 autocast and pinned host memory; on the CPU, plain float32; on both,
``channels_last`` weights and batches (the fast convolution and pooling kernels).
Batches are read block by block (:func:`image_blocks`), so a
set decoded from files is never held in memory whole.

``train.freeze_backbone`` fine-tunes the classification head alone (the last
``nn.Linear``): the optimiser gets only its parameters, the rest have
``requires_grad`` off while training, and every BatchNorm layer stays in eval
mode, so that the frozen backbone keeps its running statistics too (in train
mode they would drift to the new data, and a frozen network would change after
all; small fine-tuning batches would make them noisy). Dropout still acts.
Afterwards every parameter requires gradients again, so attacks, attributions
and the sanity check's re-initialisation see the network as any other.

Under torchrun (:func:`auditclf.distributed.active`) training is data-parallel:
``DistributedDataParallel`` averages the gradients of the processes, so every rank
takes the same optimiser steps. Each epoch's order is drawn on every rank from the run
seed as in one process (a permutation, or the weighted or oversampled draws), and split
with ``DistributedSampler`` semantics (no shuffling of its own, padded to a multiple of
the world size by repeating the first positions, rank ``r`` taking positions
``r::world``), in per-rank batches of ``batch_size // world``: the ranks' k-th batches
together are the one-process run's k-th batch (the global batch stays the configured
one when the world size divides it), and the affine augmentation gives each image the
transform it gets in one process (:func:`random_affine`'s ``share``). The BatchNorm
statistics are rank 0's (DDP broadcasts its buffers before each forward pass, and they
are broadcast again after each epoch). The validation split is evaluated in shards and
the sums added up across ranks; rank 0 decides whether the epoch improved and
broadcasts it, so every rank stops at the same epoch and keeps the same weights, which
is checked at the end (the audit's sharded probes rely on it). The module trained and
returned is the unwrapped one. A failure on one rank while training (its batch, say) is
printed by that rank, and every rank ends at once with its status
(:func:`auditclf.distributed.failing_alone`).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from auditclf import distributed
from auditclf.config import TrainConfig
from auditclf.data import LazyImages, SplitView
from auditclf.data.lazy import image_blocks, row_blocks
from auditclf.errors import UsageError
from auditclf.models.adapter import ModelAdapter, channels_last, pass_layout
from auditclf.models.pretrained import classification_head
from auditclf.seeding import torch_generator
from auditclf.train.augment import random_affine


@dataclass
class TrainHistory:
    """Per-epoch losses/accuracies and how training ended."""

    device: str
    mixed_precision: str | None
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    world_size: int = 1  # processes of a data-parallel training (1: a single process)

    def to_dict(self) -> dict:
        return asdict(self)


def to_unit_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) on any device → float32 in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


PROGRESS_EVERY = 25  # training steps between progress-bar updates (each reads the device)


def _class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def group_balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per-image sampling weight 1 / (images in its group): every group is drawn equally often."""
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[index]


def _epoch_order(
    labels: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    num_classes: int,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    if sample_weights is not None:
        return torch.multinomial(sample_weights, len(labels), replacement=True, generator=generator)
    if not cfg.oversample:
        return torch.randperm(len(labels), generator=generator)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).double()
    return torch.multinomial(
        1.0 / counts[labels], len(labels), replacement=True, generator=generator
    )


@contextmanager
def trainable_parameters(adapter: ModelAdapter, freeze_backbone: bool) -> Iterator[list]:
    """The parameters to train: all, or (``freeze_backbone``) the classification head's,
    the others' ``requires_grad`` switched off until the block ends."""
    if not freeze_backbone:
        yield list(adapter.parameters())
        return
    head = classification_head(adapter.net)
    if head is None:
        raise UsageError("train.freeze_backbone: the model has no nn.Linear head to train alone")
    frozen = [p for n, p in adapter.net.named_parameters() if not n.startswith(f"{head}.")]
    flags = [p.requires_grad for p in frozen]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield list(adapter.net.get_submodule(head).parameters())
    finally:
        for parameter, flag in zip(frozen, flags, strict=True):
            parameter.requires_grad_(flag)


def _train_mode(adapter: ModelAdapter, freeze_backbone: bool) -> None:
    """Train mode, with every BatchNorm kept in eval mode when the backbone is frozen."""
    adapter.train()
    if freeze_backbone:
        for module in adapter.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def evaluate_loss(
    adapter: ModelAdapter,
    images: np.ndarray | LazyImages,
    labels: np.ndarray,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the eval-mode model on uint8 images."""
    total_loss, correct = _loss_sums(
        adapter, images, labels, row_blocks(len(labels), batch_size), device
    )
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n


@torch.no_grad()
def _loss_sums(
    adapter: ModelAdapter,
    images: np.ndarray | LazyImages,
    labels: np.ndarray,
    blocks: list[np.ndarray],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode model's summed cross-entropy (float64) and number correct (int64) over
    the rows of ``blocks``, on the device."""
    adapter.eval()
    # summed on the device in float64 (each batch's float32 sum widened, as a Python float
    # would be), read once at the end: no synchronisation per batch
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for rows, pixels in zip(blocks, image_blocks(images, blocks, device=device), strict=True):
        x = to_unit_float(pixels, device)
        y = torch.from_numpy(labels[rows]).to(device)
        logits = adapter(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    return total_loss, correct


def _validate(
    adapter: ModelAdapter, val: SplitView, device: torch.device, batch_size: int = 512
) -> tuple[float, float]:
    """The validation loss and accuracy (NaN without a validation split); under DDP each
    rank evaluates its shard and the sums are added up, the same numbers on every rank."""
    if not len(val.labels):
        return float("nan"), float("nan")
    if not distributed.active():
        return evaluate_loss(adapter, val.images, val.labels, device, batch_size)
    rows = distributed.shard(np.arange(len(val.labels)))
    blocks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    total_loss, correct = _loss_sums(adapter, val.images, val.labels, blocks, device)
    summed = distributed.sum_all(torch.stack([total_loss, correct.double()]))
    total, right = summed.tolist()
    return total / len(val.labels), right / len(val.labels)


def rank_batches(order: np.ndarray, batch_size: int, share: tuple[int, int] | None) -> list:
    """This process's batches of an epoch's ``order``: consecutive blocks of ``batch_size``
    in a single process (``share`` None); under DDP (``share`` = (rank, world)) the
    positions ``DistributedSampler`` gives the rank (not shuffled again, padded to a
    multiple of ``world``), in blocks of ``batch_size // world`` (at least 1): every rank
    gets as many batches of the same sizes, and the ranks' k-th batches together are the
    single process's k-th batch when ``world`` divides ``batch_size``."""
    if share is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    from torch.utils.data import DistributedSampler

    rank, world = share
    positions = DistributedSampler(
        range(len(order)), num_replicas=world, rank=rank, shuffle=False, drop_last=False
    )
    mine = order[np.fromiter(positions, dtype=np.int64)]
    size = max(batch_size // world, 1)
    return [mine[i : i + size] for i in range(0, len(mine), size)]


def _data_parallel(adapter: ModelAdapter, device: torch.device) -> nn.Module:
    """``adapter`` wrapped in ``DistributedDataParallel`` (its GPU named on CUDA)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        adapter, device_ids=[device.index] if device.type == "cuda" else None
    )


def _epoch_totals(
    seen: int, loss_sum: torch.Tensor, hits: torch.Tensor
) -> tuple[float, float, float]:
    """The epoch's (images, summed loss, correct) over every rank (this process's alone
    outside DDP): one transfer from the device, one all-reduce under DDP."""
    totals = torch.stack([loss_sum.new_tensor(float(seen)), loss_sum, hits.double()])
    count, total, right = distributed.sum_all(totals).tolist()
    return count, total, right


def _check_same_weights(adapter: ModelAdapter) -> None:
    """Under DDP: refuse to go on unless every rank holds the same weights and buffers
    (the sharded probes after training assume one model); nothing in a single process."""
    if not distributed.active():
        return
    digest = hashlib.sha256()
    for name, tensor in adapter.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
    digests = distributed.all_values(digest.hexdigest())
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"data-parallel training ended with different weights on the {len(digests)} "
            "ranks (state digests " + ", ".join(d[:12] for d in digests) + ")"
        )


# (logits, labels, class weights) → (loss, the logits of the batch's own images)
Loss = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]
]


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard loss: (class-weighted) cross-entropy, and the logits it scored."""
    return F.cross_entropy(logits, y, weight=weight), logits


def train_classifier(
    adapter: ModelAdapter, train: SplitView, val: SplitView, cfg: TrainConfig, **options
) -> TrainHistory:
    """Train ``adapter`` in place and return its history (the options: :func:`_train_epochs`);
    with ``cfg.freeze_backbone``, the classification head alone (see the module docstring)."""
    device = options["device"]
    adapter.to(device).eval()  # eval: the layout's trial pass changes no BatchNorm statistic
    sample = to_unit_float(torch.from_numpy(np.asarray(train.images[:2])), device)
    with (
        trainable_parameters(adapter, cfg.freeze_backbone) as parameters,
        channels_last(adapter, sample),  # the fast kernels, on the CPU as on a GPU
        distributed.failing_alone(),  # under DDP: a failure cannot wait for a meeting
    ):
        return _train_epochs(adapter, train, val, cfg, parameters=parameters, **options)


def _train_epochs(
    adapter: ModelAdapter,
    train: SplitView,
    val: SplitView,
    cfg: TrainConfig,
    *,
    parameters: list[nn.Parameter],
    num_classes: int,
    seed: int,
    device: torch.device,
    hflip_ok: bool,
    progress: bool = True,
    inputs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    loss_of: Loss = cross_entropy,
    keep_last: bool = False,
    sample_weights: np.ndarray | None = None,
) -> TrainHistory:
    """Train ``parameters`` of ``adapter`` in place; return its history. Images are uint8
    (N, C, H, W).

    ``inputs(x, y)`` replaces each (augmented) batch by the images the model
    sees: adversarial images (adversarial training), or the images and their
    AugMix views stacked; ``loss_of(logits, y, class_weight)`` turns the
    model's float32 logits of them into the loss and the logits of the batch's
    own images (the running accuracy's); ``keep_last`` keeps the final
    weights instead of the epoch with the lowest validation loss, as
    adversarial training does (its clean validation loss rises while
    robustness grows). ``sample_weights`` (one per training image) make each
    epoch draw ``len(train)`` images with replacement in proportion to them,
    instead of a permutation (and instead of ``cfg.oversample``).

    Under torchrun the training is data-parallel (the module docstring): per-rank batches
    of ``cfg.batch_size // world``, the global batch staying ``cfg.batch_size``.
    """
    cuda = device.type == "cuda"  # the adapter is on the device already (train_classifier)
    share = (distributed.rank(), distributed.world()) if distributed.active() else None
    model = adapter if share is None else _data_parallel(adapter, device)
    history = TrainHistory(
        device=str(device),
        mixed_precision="bf16" if cuda else None,
        world_size=1 if share is None else share[1],
    )
    labels = torch.from_numpy(train.labels)
    weight = _class_weights(train.labels, num_classes).to(device) if cfg.class_weighted else None
    draw_weights = None if sample_weights is None else torch.as_tensor(sample_weights).double()
    optimizer = torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best_loss, best_state, waited = float("inf"), None, 0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        generator = torch_generator(seed, "train", epoch)
        order = _epoch_order(labels, cfg, generator, num_classes, draw_weights).numpy()
        _train_mode(adapter, cfg.freeze_backbone)
        # running sums stay on the device (float64, as Python floats were): the progress bar
        # reads them every PROGRESS_EVERY steps, not every step
        seen = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        hits = torch.zeros((), dtype=torch.int64, device=device)
        blocks = rank_batches(order, cfg.batch_size, share)
        batches = tqdm(
            zip(blocks, image_blocks(train.images, blocks, device=device), strict=True),
            total=len(blocks),
            disable=None if progress else True,  # None: auto-off when not a TTY
            leave=False,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
        )
        for step, (idx, pixels) in enumerate(batches):
            x = to_unit_float(pixels, device)
            y = labels[idx].to(device, non_blocking=True)
            if cfg.augment:
                x = random_affine(x, generator, hflip=hflip_ok, share=share)
            if inputs is not None:
                x = inputs(x, y)
            x = x.contiguous(memory_format=pass_layout(x, adapter))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss, logits = loss_of(model(x).float(), y, weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            loss_sum += loss.detach().double() * len(y)
            hits += (logits.argmax(1) == y).sum()
            if progress and step % PROGRESS_EVERY == 0:
                batches.set_postfix(
                    loss=f"{loss_sum.item() / seen:.4f}", acc=f"{hits.item() / seen:.3f}"
                )
        if share is not None:  # BatchNorm statistics: rank 0's on every rank
            distributed.broadcast_tensors(adapter.buffers())
        seen, loss_sum, hits = _epoch_totals(seen, loss_sum, hits)
        val_loss, val_acc = _validate(adapter, val, device)
        history.epochs.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": hits / seen,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started,
            }
        )
        if progress:
            tqdm.write(
                f"epoch {epoch}/{cfg.epochs}: loss {loss_sum / seen:.4f} "
                f"acc {hits / seen:.4f} val_loss {val_loss:.4f} val_acc {val_acc:.4f}"
            )
        if keep_last or not len(val.labels):
            continue
        if distributed.broadcast(val_loss < best_loss):  # rank 0 decides for every rank
            best_loss, best_state, waited = val_loss, copy.deepcopy(adapter.state_dict()), 0
            history.best_epoch = epoch
        else:
            waited += 1
            if waited >= cfg.patience:
                history.stopped_early = epoch < cfg.epochs
                break
    if best_state is not None:
        adapter.load_state_dict(best_state)
    else:
        history.best_epoch = len(history.epochs)
    adapter.eval()
    _check_same_weights(adapter)
    return history
