"""``auditclf init``: a commented ``audit.yaml`` with every section and option.

Generated from the config classes themselves (their fields, descriptions,
types, bounds and defaults), so the file cannot drift from what
``load_config`` accepts: loading it gives exactly the defaults.
"""

from __future__ import annotations

import functools
import inspect
import operator
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from auditclf.config import PRESETS, AuditConfig, GateSpec

WIDTH = 96
HEADER = """\
# auditclf configuration, written by `auditclf init`: every section and option, set to its
# default. Units: pixel values, eps and normalisation are in [0, 1] pixel units (eps may be
# written 0.1 or 8/255); fractions are in [0, 1]; counts are images unless said otherwise.
# Flags override this file (`auditclf run --config audit.yaml --epochs 3`); delete what you
# do not change. Unknown keys are refused, naming the key.
"""
GATE_EXAMPLE = """\
Example:
gates:
  - performance.accuracy >= 0.95
  - {metric: robustness.pgd_linf@0.1.accuracy, min: 0.5, on: lower_ci, severity: warn}
  - {metric: fairness.stroke.accuracy.difference, max: 0.1, missing: pass}"""


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None


def _nullable(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return annotation, False


def _kind(annotation: Any, *, plural: bool = False) -> str:
    """A type in words: "integer", "one of: a, b", "list of numbers"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _kind(args[0], plural=plural)
    if origin is Literal:
        return "one of: " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        if set(args) == {float, str}:  # EpsValue
            return "eps values (0.1 or 8/255)" if plural else "eps (0.1 or 8/255)"
        return " or ".join(_kind(a, plural=plural) for a in args)
    if origin is list:
        if typing.get_origin(args[0]) is Literal:
            return "list drawn from: " + ", ".join(map(str, typing.get_args(args[0])))
        return "list of " + _kind(args[0], plural=True)
    if origin is dict:
        return f"mapping of {_kind(args[0], plural=True)} to {_kind(args[1], plural=True)}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "mappings" if plural else "mapping"
    words = {bool: "true or false", int: "integer", float: "number", str: "text", Path: "path"}
    word = words.get(annotation, getattr(annotation, "__name__", str(annotation)))
    if plural and word in ("integer", "number", "text"):
        return word + "s"
    return word


def _bounds(info: FieldInfo) -> str:
    signs = (
        (annotated_types.Ge, "ge", "≥"),
        (annotated_types.Gt, "gt", ">"),
        (annotated_types.Le, "le", "≤"),
        (annotated_types.Lt, "lt", "<"),
    )
    return ", ".join(
        f"{sign} {getattr(item, attribute)}"
        for item in info.metadata
        for kind, attribute, sign in signs
        if isinstance(item, kind)
    )


def _value(value: Any) -> str:
    """One YAML value on one line (flow style): ``[2, 3]``, ``null``, ``0.001``."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6, allow_unicode=True)[1:-2]


def _comment(text: str, indent: str, hanging: str = "") -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# {hanging}"
    )


def _doc(model: type[BaseModel]) -> str:
    text = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0]
    return text.replace("\n", " ").replace("``", "`")


def _field_text(info: FieldInfo) -> str:
    annotation, nullable = _nullable(info.annotation)
    detail = ", ".join(filter(None, [_kind(annotation), _bounds(info)]))
    detail += ", or null" if nullable else ""
    return f"{info.description} ({detail})" if info.description else f"({detail})"


def _write(model: type[BaseModel], values: dict, indent: str, lines: list[str]) -> None:
    for name, info in model.model_fields.items():
        section = _section_model(info.annotation)
        if section is not None:
            lines.append("")
            lines += _comment(info.description or _doc(section), indent)
            lines.append(f"{indent}{name}:")
            _write(section, values[name], indent + "  ", lines)
            continue
        if name == "gates":
            lines.append("")
        lines += _comment(_field_text(info), indent)
        if name == "gates":
            lines += _gate_fields(indent)
        lines.append(f"{indent}{name}: {_value(values[name])}")


def _gate_fields(indent: str) -> list[str]:
    """The keys of a gate in mapping form, and an example, as comments."""
    lines = _comment(_doc(GateSpec), indent)
    for name, info in GateSpec.model_fields.items():
        default = "required" if info.is_required() else f"default {_value(info.default)}"
        lines += _comment(f"  {name}: {_field_text(info)}; {default}", indent, hanging="    ")
    lines += [f"{indent}# {line}" for line in GATE_EXAMPLE.splitlines()]
    return lines


def starter_yaml() -> str:
    """The commented ``audit.yaml``: every option of :class:`AuditConfig` at its default."""
    lines = HEADER.splitlines()
    lines.append("")
    values = AuditConfig().model_dump(mode="json")
    # null, as declared: the preset fills these, so that switching the preset takes effect
    values["robustness"] |= dict.fromkeys(PRESETS["default"])
    _write(AuditConfig, values, "", lines)
    return "\n".join(lines) + "\n"
