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
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

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
    adapter.eval()
    # summed on the device in float64 (each batch's float32 sum widened, as a Python float
    # would be), read once at the end: no synchronisation per batch
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    blocks = row_blocks(len(labels), batch_size)
    for rows, pixels in zip(blocks, image_blocks(images, blocks, device=device), strict=True):
        x = to_unit_float(pixels, device)
        y = torch.from_numpy(labels[rows]).to(device)
        logits = adapter(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n


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
    """
    cuda = device.type == "cuda"  # the adapter is on the device already (train_classifier)
    history = TrainHistory(device=str(device), mixed_precision="bf16" if cuda else None)
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
        blocks = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
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
                x = random_affine(x, generator, hflip=hflip_ok)
            if inputs is not None:
                x = inputs(x, y)
            x = x.contiguous(memory_format=pass_layout(x, adapter))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss, logits = loss_of(adapter(x).float(), y, weight)
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
        loss_sum, hits = loss_sum.item(), hits.item()
        val_loss, val_acc = (
            evaluate_loss(adapter, val.images, val.labels, device)
            if len(val.labels)
            else (float("nan"), float("nan"))
        )
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
        if val_loss < best_loss:
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
    return history
