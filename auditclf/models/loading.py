"""Loading and saving weights, safely.

Checkpoints load weights only: ``.safetensors`` files, or ``.pt``/``.pth``
state dicts through ``torch.load(weights_only=True)``. A pickled whole model
or a TorchScript archive runs code when loaded, so it is refused unless the
user passes ``--trust-checkpoint``; there is no silent fallback.

A model trained by auditclf is saved as ``<name>.safetensors`` plus
``<name>.json`` (architecture, arguments, classes, normalisation, input
shape, data hash, seed), from which ``--checkpoint`` rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from auditclf.errors import ModelRefused, UsageError
from auditclf.io import atomic_write_bytes, atomic_write_text
from auditclf.models.zoo import MODELS

SIDECAR_FORMAT = "auditclf-model/1"
TRUST_HINT = "pass --trust-checkpoint to load it anyway, only if you trust where it came from"
MAX_KEYS_SHOWN = 5


@dataclass
class Checkpoint:
    """What a checkpoint file held: a state dict, or (trusted only) a whole module."""

    path: Path
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist()
        )


def _state_dict_from(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise ModelRefused(
        f"{path}: not a state dict of tensors (found {type(obj).__name__}); "
        "save model.state_dict() or a .safetensors file"
    )


def read_checkpoint(path: Path, *, trust: bool) -> Checkpoint:
    """Read a checkpoint without executing code unless ``trust`` is set."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            return Checkpoint(path, state_dict=load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelRefused(f"{path}: not a readable safetensors file ({exc})") from None
    if _is_torchscript(path):
        if not trust:
            raise ModelRefused(
                f"{path}: is a TorchScript archive, which runs code when loaded; {TRUST_HINT}"
            )
        return Checkpoint(path, module=torch.jit.load(str(path), map_location="cpu"))
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        if not trust:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "corrupt"
            raise ModelRefused(
                f"{path}: refused, it cannot be loaded weights-only ({reason}); {TRUST_HINT}"
            ) from None
        payload = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(payload, nn.Module):
        return Checkpoint(path, module=payload)
    return Checkpoint(path, state_dict=_state_dict_from(payload, path))


def fit_state_dict(
    net: nn.Module, state_dict: dict[str, torch.Tensor], *, source: Path, architecture: str
) -> None:
    """Load ``state_dict`` into ``net`` strictly; a misfit is refused naming the keys."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for label, keys in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatch (checkpoint vs model)", mismatched),
    ):
        if keys:
            more = f" (+{len(keys) - MAX_KEYS_SHOWN} more)" if len(keys) > MAX_KEYS_SHOWN else ""
            problems.append(f"{label}: {', '.join(keys[:MAX_KEYS_SHOWN])}{more}")
    if problems:
        raise ModelRefused(f"{source}: does not fit {architecture}: {'; '.join(problems)}")
    net.load_state_dict(state_dict, strict=True)


def weights_sha256(net: nn.Module) -> str:
    """SHA-256 over the state dict (sorted keys, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(net.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(
            tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        )
    return digest.hexdigest()


def read_sidecar(checkpoint: Path) -> dict | None:
    """The ``.json`` written beside an auditclf checkpoint, if there is one."""
    sidecar = Path(checkpoint).with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        spec = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelRefused(f"{sidecar}: not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != SIDECAR_FORMAT:
        return None
    for key in ("architecture", "arguments", "classes", "normalization"):
        if key not in spec:
            raise ModelRefused(f"{sidecar}: missing key {key!r}")
    return spec


def save_model(net: nn.Module, spec: dict, weights_path: Path) -> None:
    """Write ``weights_path`` (.safetensors) and its ``.json`` sidecar atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    atomic_write_bytes(weights_path, save(tensors))
    atomic_write_text(
        Path(weights_path).with_suffix(".json"), json.dumps(spec, indent=2, sort_keys=True) + "\n"
    )


def _import_factory(reference: str):
    target, _, attribute = reference.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"{path}: no such file (model.name {reference!r})")
        spec = importlib.util.spec_from_file_location(f"auditclf_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(
                f"model.name {reference!r}: cannot import {target!r} ({exc})"
            ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UsageError(f"model.name {reference!r}: {target} has no callable {attribute!r}")
    return factory


def build_architecture(name: str, arguments: dict[str, Any]) -> nn.Module:
    """Build a zoo model by name, or call a user factory ``module:function`` / ``file.py:function``.

    A user factory receives whichever of ``in_channels``, ``num_classes`` and
    ``input_size`` its signature accepts.
    """
    if ":" not in name:
        return MODELS.get(name)(**arguments)
    factory = _import_factory(name)
    accepted = inspect.signature(factory).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    net = factory(**{k: v for k, v in arguments.items() if takes_all or k in accepted})
    if not isinstance(net, nn.Module):
        raise UsageError(
            f"model.name {name!r}: the factory returned {type(net).__name__}, not a torch.nn.Module"
        )
    return net
