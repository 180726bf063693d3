"""The model adapter: [0, 1] pixels in, logits out, normalisation inside.

Keeping the mean/std inside the model means attacks, eps and clipping all work
in [0, 1] pixel units, whatever normalisation the network was trained with.

It is also the one door through which every probe, attack, attribution and
training step calls the network, so it is where the network's own failures
become a ``ModelRefused`` (exit 4): whatever its ``forward`` raises
(``SystemExit`` included; ``KeyboardInterrupt`` stays an interrupt), and an
output that is not a tensor of logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from auditclf.errors import AuditError, ModelRefused, UsageError
from auditclf.models.loading import describe
from auditclf.models.zoo import PatchGridNorm


def conv_layers(net: nn.Module) -> list[str]:
    """Names of the layers Grad-CAM can take an (N, C, h, w) map from, in module order:
    every ``nn.Conv2d``, and the patch-token grid of a ViT block (``PatchGridNorm``)."""
    names = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            names.append(name)
        elif isinstance(module, PatchGridNorm):
            names.append(f"{name}.patch_grid")
    return names


class ModelAdapter(nn.Module):
    """Wraps a network: ``forward(x)`` with x in [0, 1], (N, C, H, W) float32 → logits (N, K).

    mean, std: per-channel normalisation in [0, 1] units (length C, or 1 to
    broadcast). ``target_layer`` is the layer Grad-CAM uses: the last of
    :func:`conv_layers` unless a name is given (a ViT's last block's patch grid;
    else the last ``nn.Conv2d``); None when the net has none.
    ``source`` names the model in errors (its checkpoint file, say).

    ``gradients``: whether gradients flow through the network (white-box attacks, Grad-CAM,
    Integrated Gradients, retraining). The loader that knows sets it (False for a model that
    can only be queried, an ONNX file run by onnxruntime); None takes the network's own
    declaration, its ``has_gradients`` attribute (default True). A forward pass that should
    carry a gradient and does not is a refusal, never a silent zero gradient
    (:meth:`forward`).
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        target_layer: str | None = None,
        *,
        source: str = "the model",
        gradients: bool | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.source = source
        declared = getattr(net, "has_gradients", True) if gradients is None else gradients
        self.gradients = bool(declared)
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        convs = conv_layers(net)
        if target_layer is not None and target_layer not in convs:
            found = ", ".join(convs) or "none"
            raise UsageError(
                f"model.target_layer {target_layer!r} is not a conv layer of the "
                f"model; conv layers found: {found}"
            )
        self.target_layer_name = target_layer or (convs[-1] if convs else None)
        self.eval()

    @property
    def target_layer(self) -> nn.Module | None:
        if self.target_layer_name is None:
            return None
        return self.net.get_submodule(self.target_layer_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            logits = self.net((x - self.mean) / self.std)
        except (AuditError, torch.cuda.OutOfMemoryError):  # ours; memory is no model fault
            raise
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the network's own code raised it
            raise ModelRefused(
                f"{self.source}: the model's forward failed on a batch of shape "
                f"{list(x.shape)} ({describe(exc)})"
            ) from exc
        if not isinstance(logits, torch.Tensor):
            raise ModelRefused(
                f"{self.source}: the model's forward returned {type(logits).__name__}, not a "
                "tensor of logits; wrap it so that it returns the logits alone"
            )
        if not logits.requires_grad and self._expects_gradient(x):
            raise ModelRefused(
                f"{self.source}: the model's output carries no gradient (its forward detaches "
                "it or runs without autograd), so gradient attacks, Grad-CAM, Integrated "
                "Gradients and training cannot run on it; declare it as a model without "
                "gradients (has_gradients = False on the module) to audit it by queries only"
            )
        return logits

    def _expects_gradient(self, x: torch.Tensor) -> bool:
        """Whether this pass should carry a gradient: a model with gradients, autograd on,
        and the input or a weight requiring one (an attack's input, a training step's
        weights). A model without gradients is never asked for one (the probes skip what
        needs it), so its passes are not checked."""
        if not (self.gradients and torch.is_grad_enabled()):
            return False
        return x.requires_grad or any(p.requires_grad for p in self.net.parameters())


def pass_layout(x: torch.Tensor, model: nn.Module | None = None) -> torch.memory_format:
    """The memory layout of a pass of ``model``: channels-last for a batch of images
    (N, C, H, W) while the model runs channels-last (:func:`channels_last`), contiguous
    otherwise. With the network's weights channels-last too, convolutions and pooling take
    the fast kernels on the CPU as on a GPU (the tutorial CNN's forward pass 4× faster,
    forward + backward 1.5×, on two CPU cores); one layout for every pass of a model keeps
    the numbers independent of the batch."""
    if x.dim() != 4 or model is None:
        return torch.contiguous_format
    return getattr(model, "pass_format", torch.contiguous_format)


@contextmanager
def channels_last(model: nn.Module, sample: torch.Tensor):
    """The model's 4-D weights channels-last inside the block (→ True), if a pass of
    ``sample`` (a few images) runs that way; a network that cannot (a user model that
    flattens with ``.view``, which needs contiguous activations) stays contiguous (→ False).
    Contiguous again afterwards (saving and hashing read contiguous tensors; the values
    never change)."""
    fast = sample.dim() == 4
    if fast:
        model.to(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                model(sample.contiguous(memory_format=torch.channels_last))
        except (ModelRefused, RuntimeError):
            fast = False
            model.to(memory_format=torch.contiguous_format)
    model.pass_format = torch.channels_last if fast else torch.contiguous_format
    try:
        yield fast
    finally:
        model.to(memory_format=torch.contiguous_format)
        model.pass_format = torch.contiguous_format
