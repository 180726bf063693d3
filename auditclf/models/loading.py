"""Loading and saving weights, safely.

Checkpoints load weights only: ``.safetensors`` files, or ``.pt``/``.pth``
state dicts through ``torch.load(weights_only=True)``. A pickled whole model
or a TorchScript archive runs code when loaded, so it is refused unless the
user passes ``--trust-checkpoint`` (and the config does not say
``unsafe_load: forbid``); there is no silent fallback. A load that did unpickle
is reported as such (``Checkpoint.unsafe``, with the file's SHA-256).

A file that is empty, truncated, a broken or suspicious zip (members outside
the archive, declared sizes far beyond the file's), or that fails while being
read is refused with one line (``ModelRefused``); nothing raised while reading
it escapes as an internal error.

A model trained by auditclf is saved as ``<name>.safetensors`` plus
``<name>.json`` (architecture, arguments, classes, normalisation, input
shape, data hash, seed), from which ``--checkpoint`` rebuilds it; the sidecar
is read by :mod:`auditclf.models.sidecar`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import io
import json
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from auditclf.errors import AuditError, ModelRefused, UsageError
from auditclf.io import atomic_write_bytes, atomic_write_text
from auditclf.models.zoo import MODELS

TRUST_HINT = "pass --trust-checkpoint to load it anyway, only if you trust where it came from"
FORBID_HINT = "the config's unsafe_load: forbid refuses it even with --trust-checkpoint"
MAX_KEYS_SHOWN = 5
MAX_REASON = 200
# A torch archive stores its members uncompressed: declared sizes far beyond the file's own
# size mean a zip bomb or forged headers, refused before torch reads a byte of them.
MAX_UNPACK_RATIO = 100
ZIP_MAGIC = b"PK\x03\x04"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


@dataclass
class Checkpoint:
    """What a checkpoint file held: a state dict, or (trusted only) a whole module.

    ``unsafe`` is true when the file was unpickled (a pickle beyond weights, a
    whole module, TorchScript); ``sha256`` is then the file's digest.
    """

    path: Path
    state_dict: dict[str, torch.Tensor] | None = None
    module: nn.Module | None = None
    unsafe: bool = False
    sha256: str | None = None


def _clean(text: str) -> list[str]:
    """The non-empty lines of an error text, without terminal colour codes."""
    lines = (_ANSI.sub("", line).strip() for line in text.splitlines())
    return [line for line in lines if line]


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an exception, on one line and at most ``MAX_REASON`` long."""
    lines = _clean(str(exc))
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _weights_only_reason(exc: BaseException) -> str:
    """Why torch's weights-only unpickler refused a file, as one sentence.

    torch's message is several paragraphs of advice; the offending global (an
    ``os.system``, a model class) is what the user needs to see.
    """
    found = _GLOBAL.search(str(exc))
    if found:
        return f"it names the global {found[1]}, which a weights-only load does not allow"
    lines = [line for line in _clean(str(exc)) if not line.startswith(_TORCH_BOILERPLATE)]
    return f"the weights-only loader says: {lines[0]}" if lines else "it holds more than tensors"


def _zip_members(path: Path) -> list[str] | None:
    """The member names of a zip checkpoint (None: not a zip); a broken or forged zip is
    refused: unreadable directory, names outside the archive, bomb-sized declared sizes,
    or a member whose bytes fail their CRC."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            if handle.read(4) == ZIP_MAGIC:
                raise ModelRefused(f"{path}: a broken zip archive (no directory: truncated?)")
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                if info.filename.startswith(("/", "\\")) or ".." in parts or ":" in info.filename:
                    raise ModelRefused(
                        f"{path}: zip member {info.filename[:MAX_REASON]!r} points outside the "
                        "archive; refused"
                    )
            declared = sum(info.file_size for info in infos)
            if declared > MAX_UNPACK_RATIO * max(path.stat().st_size, 1):
                raise ModelRefused(
                    f"{path}: its zip members declare {declared} bytes unpacked from a "
                    f"{path.stat().st_size}-byte file (a zip bomb or forged sizes); refused"
                )
            broken = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise ModelRefused(f"{path}: a broken zip archive ({describe(exc)})") from None
    if broken is not None:
        raise ModelRefused(f"{path}: a corrupt zip archive (member {broken[:MAX_REASON]!r})")
    return [info.filename for info in infos]


def _is_torchscript(members: list[str]) -> bool:
    return any(name.endswith("constants.pkl") or "/code/" in name for name in members)


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


def _unpickle(path: Path, what: str, load: Callable[[], Any]) -> Any:
    """Run a loader that executes the file's code; whatever it raises is a refusal."""
    try:
        return load()
    except (AuditError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the file's own code raised it
        raise ModelRefused(f"{path}: could not be loaded as {what} ({describe(exc)})") from exc


def _unsafe(
    path: Path,
    *,
    trust: bool,
    forbid: bool,
    refusal: str,
    what: str,
    load: Callable[[Any], Any],
    hint: str,
) -> Checkpoint:
    """Unpickle ``path`` when the user trusts it and the config allows it; else refuse
    (``hint`` says what to do instead)."""
    if not trust or forbid:
        raise ModelRefused(f"{path}: {refusal}; {FORBID_HINT if trust else hint}")
    data = path.read_bytes()  # hashed and loaded from the same bytes: the SHA-256 the
    digest = hashlib.sha256(data).hexdigest()  # report names is what was unpickled
    payload = _unpickle(path, what, lambda: load(io.BytesIO(data)))
    if isinstance(payload, nn.Module):
        return Checkpoint(path, module=payload, unsafe=True, sha256=digest)
    return Checkpoint(path, state_dict=_state_dict_from(payload, path), unsafe=True, sha256=digest)


def read_checkpoint(
    path: Path, *, trust: bool, forbid_unsafe: bool = False, hint: str = TRUST_HINT
) -> Checkpoint:
    """Read a checkpoint without executing code unless ``trust`` is set.

    ``forbid_unsafe`` (the config's ``unsafe_load: forbid``) refuses any file
    that would have to be unpickled even when ``trust`` is set, before a byte
    of it is unpickled; ``hint`` ends the refusal of a file that would need
    unpickling when ``trust`` is not set.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ModelRefused(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        try:
            return Checkpoint(path, state_dict=load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            reason = describe(exc)
            raise ModelRefused(f"{path}: not a readable safetensors file ({reason})") from None
    members = _zip_members(path)
    if members is not None and _is_torchscript(members):
        return _unsafe(
            path,
            trust=trust,
            forbid=forbid_unsafe,
            refusal="is a TorchScript archive, which runs code when loaded",
            what="TorchScript",
            load=lambda source: torch.jit.load(source, map_location="cpu"),
            hint=hint,
        )
    try:
        with warnings.catch_warnings():  # torch's advice on pickle protocols: not the user's
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith(_TORCH_BOILERPLATE[0]):  # a damaged pickle stream
            raise ModelRefused(f"{path}: not a readable checkpoint ({describe(exc)})") from None
        return _unsafe(
            path,
            trust=trust,
            forbid=forbid_unsafe,
            refusal=f"refused: it cannot be loaded weights-only: {_weights_only_reason(exc)}",
            what="a pickle",
            load=lambda source: torch.load(source, map_location="cpu", weights_only=False),
            hint=hint,
        )
    except EOFError:
        raise ModelRefused(
            f"{path}: not a readable checkpoint (it ends early, truncated)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a weights-only read runs no code: the file is bad
        raise ModelRefused(f"{path}: not a readable checkpoint ({describe(exc)})") from None
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


def save_model(net: nn.Module, spec: dict, weights_path: Path) -> None:
    """Write ``weights_path`` (.safetensors) and its ``.json`` sidecar atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    atomic_write_bytes(weights_path, save(tensors))
    atomic_write_text(
        Path(weights_path).with_suffix(".json"), json.dumps(spec, indent=2, sort_keys=True) + "\n"
    )


def _load_module(reference: str, target: str):
    """Import the module (or run the file) the user's ``model.name`` points at."""
    if target.endswith(".py") and not Path(target).is_file():
        raise UsageError(f"{target}: no such file (model.name {reference!r})")
    try:
        if not target.endswith(".py"):
            return importlib.import_module(target)
        spec = importlib.util.spec_from_file_location(f"auditclf_user_{Path(target).stem}", target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    except ImportError as exc:
        raise UsageError(f"model.name {reference!r}: cannot import {target!r} ({exc})") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code raised it
        raise ModelRefused(
            f"model.name {reference!r}: loading {target} raised {describe(exc)}"
        ) from exc


def _import_factory(reference: str):
    target, _, attribute = reference.rpartition(":")
    module = _load_module(reference, target)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UsageError(f"model.name {reference!r}: {target} has no callable {attribute!r}")
    return factory


def build_architecture(
    name: str, arguments: dict[str, Any], *, model_name: str | None = None
) -> nn.Module:
    """Build a zoo model by name, or call a user factory ``module:function`` / ``file.py:function``.

    A factory is imported only when ``name`` is ``model_name``, the config's
    ``model.name`` (the code the user named): an architecture read from a file
    (a sidecar, a saved spec) never imports anything. A user factory receives
    whichever of ``in_channels``, ``num_classes`` and ``input_size`` its
    signature accepts; whatever it raises is a ``ModelRefused``.
    """
    if ":" not in name:
        return MODELS.get(name)(**arguments)
    if name != model_name:
        raise ModelRefused(
            f"architecture {name!r} names code that neither the command line nor the config "
            f"named (model.name is {model_name!r}); it is not imported"
        )
    factory = _import_factory(name)
    accepted = inspect.signature(factory).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    chosen = {k: v for k, v in arguments.items() if takes_all or k in accepted}
    try:
        net = factory(**chosen)
    except AuditError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code raised it
        raise ModelRefused(f"model.name {name!r}: the factory raised {describe(exc)}") from exc
    if not isinstance(net, nn.Module):
        raise UsageError(
            f"model.name {name!r}: the factory returned {type(net).__name__}, not a torch.nn.Module"
        )
    return net
