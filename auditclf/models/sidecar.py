"""The ``.json`` sidecar beside a checkpoint, read as the untrusted file it is.

A sidecar (``model.json``, written by auditclf beside ``model.safetensors``)
says how to rebuild the network. It travels with the weights, so it is no more
trusted than they are: it may only name a built-in architecture of the model
registry, with the arguments that architecture's signature takes, each of the
right type and equal to what this run's data implies (so a hostile sidecar can
neither import code nor make auditclf build a network of any size). A
``module:factory`` or ``file.py:factory`` is accepted only when it is exactly
the config's ``model.name``: code runs only when the user named it.

Every field auditclf uses is checked here; a bad one is refused with one line
naming the file and the field (``ModelRefused``, exit 4). Fields it does not
use are dropped, so nothing unchecked reaches a report or a later sidecar.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

from auditclf.errors import ModelRefused
from auditclf.models.zoo import MODELS

SIDECAR_FORMAT = "auditclf-model/1"
MAX_SIDECAR_BYTES = 1 << 20
MAX_SHOWN = 80
MAX_NORMALIZATION = 1e6
_NAME = re.compile(r"[\w.+-]{1,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LAYER = re.compile(r"[\w.]{1,200}")


def _shown(value: Any) -> str:
    """A value from the file, quoted on one line and cut short (it may be hostile)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _refuse(path: Path, field: str, problem: str) -> ModelRefused:
    return ModelRefused(f"{path}: field {_shown(field)} {problem}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number of a sane size (a normalisation value, in [0, 1] units)."""
    if _is_int(value):
        return abs(value) <= MAX_NORMALIZATION
    return isinstance(value, float) and math.isfinite(value) and abs(value) <= MAX_NORMALIZATION


def _architecture(raw: dict, path: Path, model_name: str) -> str:
    name = raw["architecture"]
    known = ", ".join(MODELS.names())
    if not isinstance(name, str):
        raise _refuse(path, "architecture", f"must name a built-in architecture ({known})")
    if ":" in name and name != model_name:
        raise _refuse(
            path,
            "architecture",
            f"names code ({_shown(name)}), which a sidecar may not: it may only name a built-in "
            f"architecture ({known}); name your own factory with --model",
        )
    if ":" not in name and name not in MODELS:
        raise _refuse(
            path, "architecture", f"{_shown(name)} is not a built-in architecture ({known})"
        )
    return name


def _parameters(architecture: str) -> tuple[set[str], set[str]]:
    """(accepted, required) argument names: a zoo entry's signature, or what a factory gets."""
    if ":" in architecture:  # the user's factory takes whichever of the three it accepts
        return {"in_channels", "num_classes", "input_size"}, set()
    signature = inspect.signature(MODELS.get(architecture)).parameters
    required = {n for n, p in signature.items() if p.default is inspect.Parameter.empty}
    return set(signature), required


def _typed(name: str, value: Any) -> bool:
    if name == "input_size":
        return isinstance(value, list) and len(value) == 2 and all(map(_is_int, value))
    return _is_int(value)


def _arguments(raw: dict, path: Path, architecture: str, expected: dict[str, Any]) -> dict:
    """The architecture's arguments: its own parameter names, typed, equal to the data's."""
    arguments = raw["arguments"]
    if not isinstance(arguments, dict):
        raise _refuse(path, "arguments", "must be a mapping of argument names to values")
    accepted, required = _parameters(architecture)
    unknown, missing = sorted(set(arguments) - accepted), sorted(required - set(arguments))
    if unknown:
        raise _refuse(path, f"arguments.{unknown[0]}", f"is not an argument of {architecture}")
    if missing:
        raise _refuse(path, f"arguments.{missing[0]}", f"is missing ({architecture} requires it)")
    for name, value in arguments.items():
        if not _typed(name, value):
            kind = "a list of two integers" if name == "input_size" else "an integer"
            raise _refuse(path, f"arguments.{name}", f"must be {kind}, not {_shown(value)}")
        if value != expected[name]:
            raise _refuse(
                path,
                f"arguments.{name}",
                f"is {_shown(value)} but this run's data needs {expected[name]!r}; audit with "
                "the data the model was built for",
            )
    return dict(arguments)


def _classes(raw: dict, path: Path, classes: list[str]) -> list[str]:
    found = raw["classes"]
    if not isinstance(found, list) or not all(isinstance(c, str) for c in found):
        raise _refuse(path, "classes", "must be a list of class names (strings)")
    if found != list(classes):
        raise _refuse(
            path,
            "classes",
            f"says the model was trained on classes {_shown(found)}, but the data has "
            f"{_shown(list(classes))}",
        )
    return found


def _normalization(raw: dict, path: Path, channels: int) -> dict[str, list[float]]:
    found = raw["normalization"]
    if not isinstance(found, dict) or set(found) != {"mean", "std"}:
        raise _refuse(path, "normalization", "must be a mapping with exactly mean and std")
    for key in ("mean", "std"):
        values = found[key]
        if not isinstance(values, list) or not all(map(_is_number, values)):
            raise _refuse(path, f"normalization.{key}", "must be a list of finite numbers")
        if len(values) not in (1, channels):
            raise _refuse(
                path,
                f"normalization.{key}",
                f"has {len(values)} values; the images have {channels} channel(s)",
            )
    if any(s <= 0 for s in found["std"]):
        raise _refuse(path, "normalization.std", "must be > 0 for every channel")
    return {key: [float(v) for v in found[key]] for key in ("mean", "std")}


def _provenance(raw: dict, path: Path) -> dict[str, Any]:
    """The optional fields that say what the model was trained on (seed, data hash) and
    fine-tuned from (pretrained)."""
    kept = {}
    for key, valid, kind in (("data_hash", str, "a string"), ("seed", int, "an integer")):
        if key in raw:
            value = raw[key]
            if not isinstance(value, valid) or isinstance(value, bool):
                raise _refuse(path, key, f"must be {kind}, not {_shown(value)}")
            kept[key] = value
    if "pretrained" in raw:
        kept["pretrained"] = _pretrained(raw["pretrained"], path)
    return kept


def _pretrained(found: Any, path: Path) -> dict[str, Any]:
    """The weights file a model was fine-tuned from: a short file name, its SHA-256 and
    the name of the replaced head (or null)."""
    if not isinstance(found, dict) or set(found) != {"file", "sha256", "head"}:
        raise _refuse(path, "pretrained", "must be a mapping with exactly file, sha256 and head")
    if not (isinstance(found["file"], str) and _NAME.fullmatch(found["file"])):
        raise _refuse(path, "pretrained.file", f"is not a plain file name: {_shown(found['file'])}")
    if not (isinstance(found["sha256"], str) and _SHA256.fullmatch(found["sha256"])):
        raise _refuse(path, "pretrained.sha256", "must be 64 lower-case hex digits")
    head = found["head"]
    if head is not None and not (isinstance(head, str) and _LAYER.fullmatch(head)):
        raise _refuse(path, "pretrained.head", f"is not a layer name: {_shown(head)}")
    return dict(found)


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise ModelRefused(f"{path}: larger than {MAX_SIDECAR_BYTES} bytes; not a model sidecar")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelRefused(f"{path}: not valid JSON ({reason})") from None


def read_sidecar(
    checkpoint: Path, *, model_name: str, expected: dict[str, Any], classes: list[str]
) -> dict | None:
    """The checked sidecar of ``checkpoint`` (``<stem>.json``), or None when there is none.

    model_name: the config's ``model.name``, the one factory a sidecar may name.
    expected: the arguments this run's data implies (``in_channels``,
    ``num_classes``, ``input_size``); classes: the data's classes. A JSON file
    that is not an auditclf sidecar (no ``format: auditclf-model/1``) is ignored.
    """
    path = Path(checkpoint).with_suffix(".json")
    if not path.is_file():
        return None
    raw = _read_json(path)
    if not isinstance(raw, dict) or raw.get("format") != SIDECAR_FORMAT:
        return None
    for key in ("architecture", "arguments", "classes", "normalization"):
        if key not in raw:
            raise _refuse(path, key, "is missing")
    architecture = _architecture(raw, path, model_name)
    return {
        "format": SIDECAR_FORMAT,
        "architecture": architecture,
        "arguments": _arguments(raw, path, architecture, expected),
        "classes": _classes(raw, path, classes),
        "normalization": _normalization(raw, path, expected["in_channels"]),
        **_provenance(raw, path),
    }
