"""Models: build from the zoo or a user factory, or load a checkpoint; wrap in the adapter."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from auditclf import __version__
from auditclf.config import ONNX_MODEL_PREFIX, ModelConfig
from auditclf.data.lazy import SCAN_BLOCK, LazyImages, image_blocks, row_blocks
from auditclf.errors import ModelRefused, UsageError
from auditclf.gradients import NO_GRADIENTS
from auditclf.models.adapter import ModelAdapter, conv_layers
from auditclf.models.loading import (
    Checkpoint,
    build_architecture,
    fit_state_dict,
    read_checkpoint,
    save_model,
    weights_sha256,
)
from auditclf.models.pretrained import imagenet_normalization, load_pretrained
from auditclf.models.runtime import OnnxModule
from auditclf.models.sidecar import SIDECAR_FORMAT, read_sidecar
from auditclf.models.zoo import MODELS

__all__ = [
    "MODELS",
    "ModelAdapter",
    "PreparedModel",
    "conv_layers",
    "initial_network",
    "prepare_model",
    "prepare_onnx",
    "save_model",
    "weights_sha256",
    "wrap_module",
]


@dataclass
class PreparedModel:
    """The adapter plus its card: what the report says about the model."""

    adapter: ModelAdapter
    spec: dict
    needs_training: bool
    notes: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    # {"file", "sha256"} of a checkpoint that was unpickled (--trust-checkpoint), else None
    unsafe_load: dict | None = None
    # whether spec's architecture and arguments rebuild the network (for retraining from
    # scratch): not for a whole pickled model or a module passed in memory
    rebuildable: bool = True
    # the SHA-256 of the file audited as it is (an ONNX model), which stands for the
    # weights' hash; None for a network in torch
    file_sha256: str | None = None

    @property
    def gradients(self) -> bool:
        """Whether gradients flow through the model (its adapter's, set by the loader):
        without them only what queries the model runs (:mod:`auditclf.gradients`)."""
        return self.adapter.gradients

    def card(self) -> dict:
        params = sum(p.numel() for p in self.adapter.net.parameters())
        return {
            "architecture": self.spec["architecture"],
            "arguments": self.spec["arguments"],
            "source": self.spec.get("source", "trained by this run"),
            "parameters": int(params),
            "weights_sha256": self.file_sha256 or weights_sha256(self.adapter.net),
            "normalization": self.spec["normalization"],
            "target_layer": self.adapter.target_layer_name,
            "pretrained": self.spec.get("pretrained"),
            "notes": self.notes + _target_layer_notes(self.adapter) + self._gradient_notes(),
            "unsafe_load": self.unsafe_load,
        }


    def _gradient_notes(self) -> list[str]:
        """What a model without gradients was audited by (none for a model with them)."""
        if self.gradients:
            return []
        return [
            f"{NO_GRADIENTS}: audited by queries only (clean metrics, calibration, fairness, "
            "corruptions, black-box attacks, LIME); the Limitations name what was skipped"
        ]


def _target_layer_notes(adapter: ModelAdapter) -> list[str]:
    """What Grad-CAM does on a model whose target layer is a ViT's patch grid."""
    name = adapter.target_layer_name
    if name is None or not name.endswith(".patch_grid"):
        return []
    return [
        f"Grad-CAM on this ViT takes the tokens entering its last encoder block ({name}): "
        "the class token dropped and the patch tokens laid out as the h × w patch grid "
        "(side / 16), as pytorch-grad-cam's reshape_transform does; the block's output tokens "
        "would give zero gradients, as only the class token reaches the head"
    ]


def channel_stats(images: np.ndarray | LazyImages) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) uint8 images, in [0, 1] units.

    Read block by block and summed exactly in integers (Python ints: the sums
    of squares of a large set overflow int64 when multiplied out), so a set
    too large for memory needs no more than one block of it.
    """
    channels = images.shape[1]
    sums, squares = [0] * channels, [0] * channels
    for block in image_blocks(images, row_blocks(len(images), SCAN_BLOCK)):
        pixels = block.numpy()
        block_sums = pixels.sum(axis=(0, 2, 3), dtype=np.int64)
        block_squares = np.square(pixels, dtype=np.uint16).sum(axis=(0, 2, 3), dtype=np.int64)
        for c in range(channels):
            sums[c] += int(block_sums[c])
            squares[c] += int(block_squares[c])
    count = len(images) * images.shape[2] * images.shape[3]
    mean = [s / count / 255.0 for s in sums]
    std = [
        max(((q * count - s * s) / (count * count)) ** 0.5 / 255.0, 1e-3)
        for s, q in zip(sums, squares, strict=True)
    ]
    return [round(m, 6) for m in mean], [round(s, 6) for s in std]


def _normalization(
    cfg: ModelConfig, channels: int, fallback: Callable[[], tuple[list, list]]
) -> dict:
    """``model.mean/std`` when given, else ``fallback()`` (computed only then)."""
    mean, std = (cfg.mean, cfg.std) if cfg.mean is not None else fallback()
    if cfg.mean is not None and cfg.std is None:
        raise UsageError("model.mean is set but model.std is not; give both")
    for key, values in (("model.mean", mean), ("model.std", std)):
        if len(values) not in (1, channels):
            raise UsageError(
                f"{key} has {len(values)} values; the images have {channels} channel(s)"
            )
    return {"mean": list(mean), "std": list(std)}


def _identity(channels: int) -> tuple[list, list]:
    return [0.0] * channels, [1.0] * channels


def _check_outputs(
    adapter: ModelAdapter, input_shape: tuple, num_classes: int, source: str
) -> None:
    """One forward pass on random images: logits of the right shape, or a refusal."""
    probe = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = adapter(probe)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ModelRefused(
            f"{source}: the model returns shape {list(logits.shape)}; expected "
            f"[batch, {num_classes}] logits for {num_classes} classes"
        )


def _check_finite(net: torch.nn.Module, source: str) -> None:
    """Refuse weights holding NaN or infinities, naming the first such tensor."""
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelRefused(f"{source}: tensor {name!r} holds NaN or infinite values")


def _unsafe_finding(checkpoint: Checkpoint) -> dict:
    message = (
        f"{checkpoint.path} (SHA-256 {checkpoint.sha256}) was unpickled because "
        "--trust-checkpoint was given: loading it could have run any code it carries. Audit "
        "only files you trust, prefer .safetensors, and set unsafe_load: forbid in CI"
    )
    return {"severity": "warning", "section": "model", "metric": None, "message": message}


def _provenance_findings(sidecar: dict, data_hash: str, seed: int) -> list[dict]:
    """Warn when a checkpoint was trained on another split of the data than this run's."""
    trained_on = sidecar.get("data_hash")
    if trained_on is None or trained_on == data_hash:
        return []
    message = (
        f"the checkpoint's model.json says it was trained on different data or another split "
        f"(seed {sidecar.get('seed', '?')}, data hash {trained_on[:12]}…; this run: seed "
        f"{seed}, {data_hash[:12]}…): test images may have been training images, so the test "
        "metrics may be optimistic; audit with the seed and data it was trained with"
    )
    return [{"severity": "warning", "section": "model", "metric": None, "message": message}]


def initial_network(
    cfg: ModelConfig, architecture: str, arguments: dict
) -> tuple[torch.nn.Module, dict | None]:
    """The network a run trains: ``architecture`` built for ``arguments``, with the
    pretrained ``model.weights`` loaded when given (then also their provenance:
    file name, SHA-256, replaced head; else None)."""
    net = build_architecture(architecture, arguments, model_name=cfg.name)
    if cfg.weights is None:
        return net, None
    pretrained = load_pretrained(net, cfg.weights, architecture=architecture)
    _check_finite(net, str(cfg.weights))
    return net, pretrained


def _trained_here(classes: list[str], pretrained: dict | None) -> str:
    """The card's ``source`` of a model this run trains."""
    if pretrained is None:
        return "trained by this run"
    return (
        f"fine-tuned by this run from the pretrained weights {pretrained['file']} "
        f"(SHA-256 {pretrained['sha256'][:12]}…); its classification head "
        f"({pretrained['head']}) was replaced and freshly initialised for the "
        f"{len(classes)} classes"
    )


def _data_arguments(classes: list[str], input_shape: tuple[int, int, int]) -> dict:
    """The architecture arguments this run's data implies."""
    channels, height, width = input_shape
    return {"in_channels": channels, "num_classes": len(classes), "input_size": [height, width]}


def prepare_model(
    cfg: ModelConfig,
    *,
    classes: list[str],
    input_shape: tuple[int, int, int],
    train_images: np.ndarray | LazyImages,
    data_hash: str,
    seed: int,
    forbid_unsafe: bool = False,
) -> PreparedModel:
    """Build (to train) or load (to audit) the model named in ``cfg``.

    ``train_images`` supply the normalisation of a model trained here (ImageNet's
    with pretrained ``model.weights``; ``model.mean/std`` over either); a
    checkpoint brings its own from its checked sidecar, or from
    ``model.mean/std``, or none (identity) with a note saying so. The sidecar
    is checked before the checkpoint is read; ``forbid_unsafe`` (the config's
    ``unsafe_load: forbid``) refuses a checkpoint that would have to be
    unpickled. Loaded weights holding NaN or infinities are refused.
    """
    channels = input_shape[0]
    arguments = _data_arguments(classes, input_shape)
    notes: list[str] = []
    if cfg.name.startswith(ONNX_MODEL_PREFIX):
        return prepare_onnx(cfg, classes=classes, input_shape=input_shape)
    if cfg.checkpoint is None:
        net, pretrained = initial_network(cfg, cfg.name, arguments)
        default = (
            partial(channel_stats, train_images)
            if pretrained is None
            else partial(imagenet_normalization, channels)
        )
        normalization = _normalization(cfg, channels, default)
        spec = {
            "format": SIDECAR_FORMAT,
            "architecture": cfg.name,
            "arguments": arguments,
            "classes": classes,
            "normalization": normalization,
            "input_shape": list(input_shape),
            "data_hash": data_hash,
            "seed": seed,
            "auditclf_version": __version__,
            "source": _trained_here(classes, pretrained),
        }
        if pretrained is not None:
            spec["pretrained"] = pretrained
        adapter = ModelAdapter(
            net, **normalization, target_layer=cfg.target_layer, source=f"model {cfg.name}"
        )
        return PreparedModel(adapter, spec, needs_training=True, notes=notes)
    return _load_checkpoint(
        cfg,
        classes=classes,
        input_shape=input_shape,
        data_hash=data_hash,
        seed=seed,
        forbid_unsafe=forbid_unsafe,
    )


def _load_checkpoint(
    cfg: ModelConfig,
    *,
    classes: list[str],
    input_shape: tuple[int, int, int],
    data_hash: str,
    seed: int,
    forbid_unsafe: bool,
) -> PreparedModel:
    """``prepare_model`` for ``model.checkpoint``: sidecar, weights, checks, card."""
    channels = input_shape[0]
    arguments = _data_arguments(classes, input_shape)
    notes: list[str] = []
    source = str(cfg.checkpoint)
    sidecar = read_sidecar(cfg.checkpoint, model_name=cfg.name, expected=arguments, classes=classes)
    checkpoint = read_checkpoint(
        cfg.checkpoint, trust=cfg.trust_checkpoint, forbid_unsafe=forbid_unsafe
    )
    if sidecar is not None:
        architecture, arguments = sidecar["architecture"], sidecar["arguments"]
        findings = _provenance_findings(sidecar, data_hash, seed)
        normalization = sidecar["normalization"]
    else:
        findings = []
        architecture = cfg.name
        normalization = _normalization(cfg, channels, lambda: _identity(channels))
        if cfg.mean is None:
            notes.append(
                "no normalisation given (model.mean/std) and no sidecar .json: "
                "inputs reach the network as [0, 1] pixels"
            )
    if checkpoint.module is not None:
        net = checkpoint.module
        architecture = type(net).__name__
        notes.append("loaded as a whole pickled/TorchScript model (--trust-checkpoint)")
    else:
        net = build_architecture(architecture, arguments, model_name=cfg.name)
        fit_state_dict(net, checkpoint.state_dict, source=cfg.checkpoint, architecture=architecture)
    _check_finite(net, source)
    unsafe_load = None
    rebuildable = checkpoint.module is None
    if checkpoint.unsafe:
        unsafe_load = {"file": source, "sha256": checkpoint.sha256}
        findings.insert(0, _unsafe_finding(checkpoint))
    spec = {
        **(sidecar or {}),
        "format": SIDECAR_FORMAT,
        "architecture": architecture,
        "arguments": arguments,
        "classes": classes,
        "normalization": normalization,
        "input_shape": list(input_shape),
        "source": source,
    }
    adapter = ModelAdapter(net, **normalization, target_layer=cfg.target_layer, source=source)
    _check_outputs(adapter, input_shape, len(classes), source)
    return PreparedModel(
        adapter,
        spec,
        needs_training=False,
        notes=notes,
        findings=findings,
        unsafe_load=unsafe_load,
        rebuildable=rebuildable,
    )


def wrap_module(
    net: torch.nn.Module,
    cfg: ModelConfig,
    *,
    classes: list[str],
    input_shape: tuple[int, int, int],
) -> PreparedModel:
    """An in-memory network (the Python API's ``audit(model=net)``), prepared as a loaded
    whole-model checkpoint is: a copy (the caller's module is left as it is), normalisation
    from ``model.mean/std`` or none, and the same output check."""
    channels = input_shape[0]
    notes = ["passed in memory to the Python API (auditclf.audit(model=...))"]
    normalization = _normalization(cfg, channels, lambda: _identity(channels))
    if cfg.mean is None:
        notes.append(
            "no normalisation given (model.mean/std): inputs reach the network as [0, 1] pixels"
        )
    net = copy.deepcopy(net)
    spec = {
        "format": SIDECAR_FORMAT,
        "architecture": type(net).__name__,
        "arguments": _data_arguments(classes, input_shape),
        "classes": classes,
        "normalization": normalization,
        "input_shape": list(input_shape),
        "source": f"in-memory {type(net).__name__} passed to auditclf.audit()",
    }
    source = "the model passed to audit()"
    adapter = ModelAdapter(net, **normalization, target_layer=cfg.target_layer, source=source)
    _check_outputs(adapter, input_shape, len(classes), source)
    return PreparedModel(adapter, spec, needs_training=False, notes=notes, rebuildable=False)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_onnx(
    cfg: ModelConfig, *, classes: list[str], input_shape: tuple[int, int, int]
) -> PreparedModel:
    """``model.name: onnx:<file>``: an ONNX model audited as it is, run by onnxruntime's CPU
    provider (:class:`OnnxModule`; the file checked by ``check_onnx``: no custom operators,
    one image input). Its normalisation is inside the graph (as auditclf exports it), so
    the adapter's is the identity; it is not trained, cannot be retrained, and has no
    gradients (``PreparedModel.gradients`` is False). The card names the file, its
    SHA-256 and opset."""
    path = Path(cfg.name[len(ONNX_MODEL_PREFIX) :])
    net = OnnxModule(path)
    sha256 = _file_sha256(path)
    channels = input_shape[0]
    normalization = {"mean": [0.0] * channels, "std": [1.0] * channels}
    spec = {
        "format": SIDECAR_FORMAT,
        "architecture": "onnx",
        "arguments": _data_arguments(classes, input_shape),
        "classes": classes,
        "normalization": normalization,
        "input_shape": list(input_shape),
        "source": f"ONNX file {path} (SHA-256 {sha256[:12]}…, opset {net.opset}), run by "
        "onnxruntime's CPU provider",
        "onnx": {"file": str(path), "sha256": sha256, "opset": net.opset},
    }
    notes = [
        "an ONNX file audited as it is: its normalisation is inside the graph (it takes [0, 1] "
        "pixels), it runs no Python code, and no gradients flow through it"
    ]
    adapter = ModelAdapter(net, **normalization, gradients=False, source=str(path))
    _check_outputs(adapter, input_shape, len(classes), str(path))
    return PreparedModel(
        adapter,
        spec,
        needs_training=False,
        notes=notes,
        rebuildable=False,
        file_sha256=sha256,
    )
