"""Pretrained weights from a local file (``model.weights``, ``--weights``).

The file holds a published state dict, torchvision's for instance
(``resnet50-0676ba61.pth``, saved with ``torch.save(model.state_dict())``),
or the same tensors as ``.safetensors``. auditclf never downloads it. The file
is untrusted: it is read weights-only (safetensors, or
``torch.load(weights_only=True)`` through :func:`read_checkpoint` without
trust), so a file that would need unpickling is refused and never run.

Its tensors must fit the architecture key for key and shape for shape, with
these exceptions, each the usual practice:

- the classification head (the last ``nn.Linear``: ``fc``, ``classifier.1``,
  ``classifier.6``, ``heads.head``) is the network's own, freshly initialised
  for the data's classes; the file's (ImageNet's 1,000 classes) is dropped;
- for 1-channel images the first conv's RGB kernels are summed over the
  channels (as timm's ``adapt_input_conv`` does), so a gray image meets the
  network as it would that image repeated in three channels;
- a ViT built for another image size gets the file's position embeddings
  interpolated to its patch grid (torchvision's ``interpolate_embeddings``);
- BatchNorm's ``num_batches_tracked`` counters, which older published files
  lack, keep the network's own (they play no part with a set momentum).

Anything else that does not fit is refused (``ModelRefused``, exit 4) with
one line naming the file and the keys.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from auditclf.errors import ModelRefused, UsageError
from auditclf.models.loading import describe, fit_state_dict, read_checkpoint

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
WEIGHTS_HINT = (
    "model.weights takes a plain state dict (torch.save(model.state_dict())) or a "
    ".safetensors file, never a pickled model"
)
_CHUNK = 1 << 20


def imagenet_normalization(channels: int) -> tuple[list[float], list[float]]:
    """ImageNet's (mean, std), in [0, 1] units; for 1-channel images their channel average
    (0.449, 0.226), which goes with the first conv summed over RGB."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [round(sum(IMAGENET_MEAN) / 3, 3)], [round(sum(IMAGENET_STD) / 3, 3)]


def classification_head(net: nn.Module) -> str | None:
    """Name of the network's classification head: its last ``nn.Linear`` in module order
    (None when it has none)."""
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (published weights run to 500 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_conv_key(net: nn.Module) -> str | None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return None


def _adapted(net: nn.Module, found: dict[str, torch.Tensor], path: Path) -> dict:
    """The file's tensors made to fit ``net`` by the exceptions of the module docstring."""
    own = net.state_dict()
    head = classification_head(net)
    tensors = {
        key: value for key, value in found.items() if head is None or not key.startswith(f"{head}.")
    }
    if head is not None:
        tensors |= {k: v for k, v in own.items() if k.startswith(f"{head}.")}
    conv = _first_conv_key(net)
    if conv in tensors and own[conv].shape[1] == 1:
        rgb = own[conv].shape[:1] + (3,) + own[conv].shape[2:]
        if tensors[conv].shape == rgb:
            tensors[conv] = tensors[conv].sum(dim=1, keepdim=True)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in tensors:
            tensors[key] = value
    return _fit_position_embedding(net, tensors, path)


def _fit_position_embedding(net: nn.Module, tensors: dict, path: Path) -> dict:
    from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

    key = "encoder.pos_embedding"
    if not isinstance(net, VisionTransformer) or key not in tensors:
        return tensors
    if tensors[key].shape == net.state_dict()[key].shape:
        return tensors
    try:
        return dict(interpolate_embeddings(net.image_size, net.patch_size, tensors))
    except (ValueError, RuntimeError) as exc:
        raise ModelRefused(
            f"{path}: its {key} of shape {list(tensors[key].shape)} cannot be interpolated to "
            f"{net.image_size} px ({describe(exc)})"
        ) from None


def load_pretrained(net: nn.Module, path: Path, *, architecture: str) -> dict:
    """Load the weights file ``path`` into ``net`` in place (see the module docstring).

    Returns the provenance the model card records: ``{"file": name, "sha256":
    the file's digest, "head": the replaced head's name}``.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such weights file (model.weights)")
    found = read_checkpoint(path, trust=False, hint=WEIGHTS_HINT).state_dict
    fit_state_dict(net, _adapted(net, found, path), source=path, architecture=architecture)
    return {"file": path.name, "sha256": file_sha256(path), "head": classification_head(net)}
