"""Untrusted inputs: a corpus of malicious checkpoints, sidecars, zips and templates.

Every payload tries to create a canary file. Each must be refused before any
training or attack (exit 4, one line on stderr, no traceback), and the canary
must never appear. Templates planted through a saved report are ignored (the
shipped ones render); templates the user names render in jinja2's sandbox,
which refuses the escape (exit 2). Then: model faults (a forward that raises,
exits or returns a tuple, NaN weights, broken files) are refusals too, and a
trusted unpickling is shown in every output and can be forbidden.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from jinja2 import Environment
from jinja2.exceptions import SecurityError
from junitparser import JUnitXml, Skipped
from safetensors.torch import load_file, save_file

from auditclf.api import Audit
from auditclf.cli import COMMANDS
from auditclf.gates import Gate, evaluate_gate
from auditclf.probes.base import FORWARD_CHUNK
from auditclf.report import html
from auditclf.results import AuditResult
from auditclf.schema import validate_report
from tests.conftest import MINIMAL_CONFIG, cli

# Everything that would cost time is off: a refusal must come before any of it.
TINY_CONFIG = MINIMAL_CONFIG + "data:\n  dataset: digits\n"
FORBID_CONFIG = TINY_CONFIG + "unsafe_load: forbid\n"


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("security-config")
    paths = {"tiny": folder / "tiny.yaml", "forbid": folder / "forbid.yaml"}
    paths["tiny"].write_text(TINY_CONFIG)
    paths["forbid"].write_text(FORBID_CONFIG)
    return paths


def _one_line(result) -> None:
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result
    assert "Traceback" not in result.err and "\x1b" not in result.err, result


class Reduce:
    """Pickles as the call ``func(*args)``: what a malicious pickle runs when loaded."""

    def __init__(self, func: Callable, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@dataclass
class Bench:
    """Where a case builds its files: ``tmp`` folder, the ``canary`` its payload would
    create, and the digits run whose model the checkpoints wrap."""

    tmp: Path
    canary: Path
    run: Path

    def code(self) -> str:
        return f"open({str(self.canary)!r}, 'w').close()"

    def shell(self) -> str:
        return f"touch {self.canary}"

    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.run / "model.safetensors"))

    def sidecar(self) -> dict:
        return json.loads((self.run / "model.json").read_text())

    def file(self, name: str, data: bytes) -> list[str]:
        path = self.tmp / name
        path.write_bytes(data)
        return ["--checkpoint", str(path)]

    def torch_bytes(self, obj, **kwargs) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer, **kwargs)
        return buffer.getvalue()

    def with_sidecar(self, **changes) -> list[str]:
        """The digits model's weights beside its sidecar with ``changes`` made to it."""
        shutil.copy(self.run / "model.safetensors", self.tmp / "model.safetensors")
        spec = {**self.sidecar(), **changes}
        (self.tmp / "model.json").write_text(json.dumps(spec))
        return ["--checkpoint", str(self.tmp / "model.safetensors")]

    def with_arguments(self, **changes) -> list[str]:
        return self.with_sidecar(arguments={**self.sidecar()["arguments"], **changes})


def _rebuilt_zip(data: bytes, rename=lambda name: name, replace: dict | None = None) -> bytes:
    """A torch zip archive with members renamed or their bytes replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info.filename)
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    body = new
            target.writestr(rename(info.filename), body)
    return out.getvalue()


# posix.system and builtins.__import__ written as raw protocol-0 opcodes, the way an attacker
# hand-crafts a pickle that no Python object of ours could produce.
def _posix_system(b: Bench) -> bytes:
    return f"cposix\nsystem\n(S'{b.shell()}'\ntR.".encode()


def _import_chain(b: Bench) -> bytes:
    return (
        f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'{b.shell()}'\ntR."
    ).encode()


def _torchscript(b: Bench) -> list[str]:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    path = b.tmp / "scripted.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return ["--checkpoint", str(path)]


def _zip_bomb(b: Bench) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
        archive.writestr("archive/data/0", bytes(40 << 20))  # 40 MiB of zeros, ~40 kB packed
    return out.getvalue()


def _factory_file(b: Bench) -> str:
    path = b.tmp / "evil_factory.py"
    path.write_text(f"{b.code()}\ndef make(**kwargs):\n    {b.code()}\n")
    return f"{path}:make"


def _corrupted(data: bytes) -> bytes:
    """A torch zip with one byte of its stored tensor data flipped (the CRC no longer holds)."""
    at = data.index(b"archive/data/0") + 200
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _deep_sidecar(b: Bench) -> list[str]:
    argv = b.with_sidecar()
    (b.tmp / "model.json").write_text("[" * 200_000)
    return argv


# name -> (build the inputs, return the extra argv; a phrase the one stderr line must hold)
CORPUS: dict[str, tuple[Callable[[Bench], list[str]], str]] = {
    "os.system in a raw pickle": (
        lambda b: b.file("m.pt", pickle.dumps(Reduce(os.system, b.shell()), protocol=2)),
        "posix.system",
    ),
    "subprocess.run in torch.save": (
        lambda b: b.file("m.pt", b.torch_bytes(Reduce(subprocess.run, ["touch", str(b.canary)]))),
        "which a weights-only load does not allow",
    ),
    "subprocess.check_call nested in dicts": (
        lambda b: b.file(
            "m.pt",
            b.torch_bytes(
                {
                    "state_dict": b.state_dict(),
                    "meta": {"a": [{"b": Reduce(subprocess.check_call, ["touch", str(b.canary)])}]},
                }
            ),
        ),
        "which a weights-only load does not allow",
    ),
    "eval in torch.save": (
        lambda b: b.file("m.pt", b.torch_bytes({"w": Reduce(eval, b.code())})),
        "the global eval,",
    ),
    "exec in a .pth": (
        lambda b: b.file("m.pth", b.torch_bytes(Reduce(exec, b.code()))),
        "the global exec,",
    ),
    "builtins.__import__ chain, protocol 0": (
        lambda b: b.file("m.pt", _import_chain(b)),
        "the global getattr,",
    ),
    "posix.system, protocol 0": (lambda b: b.file("m.pt", _posix_system(b)), "posix.system"),
    **{
        f"os.system in a raw pickle, protocol {p}": (
            lambda b, p=p: b.file("m.pt", pickle.dumps({"x": Reduce(os.system, b.shell())}, p)),
            "weights-only",
        )
        for p in range(6)
    },
    "os.system in torch.save, pickle protocol 5": (
        lambda b: b.file("m.pt", b.torch_bytes(Reduce(os.system, b.shell()), pickle_protocol=5)),
        "weights-only",
    ),
    "os.system in a legacy (non-zip) torch.save": (
        lambda b: b.file(
            "m.pt",
            b.torch_bytes(Reduce(os.system, b.shell()), _use_new_zipfile_serialization=False),
        ),
        "posix.system",
    ),
    "Path.touch with the weights": (
        lambda b: b.file(
            "m.ckpt", b.torch_bytes({**b.state_dict(), "x": Reduce(Path.touch, b.canary)})
        ),
        "weights-only",
    ),
    "a real .pt whose data.pkl is replaced": (
        lambda b: b.file(
            "m.pt",
            _rebuilt_zip(
                b.torch_bytes(b.state_dict()),
                replace={"data.pkl": pickle.dumps(Reduce(os.system, b.shell()), protocol=2)},
            ),
        ),
        "posix.system",
    ),
    "a TorchScript archive": (_torchscript, "TorchScript"),
    "a TorchScript look-alike holding a payload": (
        lambda b: b.file(
            "m.pt",
            _rebuilt_zip(
                b.torch_bytes(Reduce(os.system, b.shell())),
                rename=lambda n: n.replace("data.pkl", "constants.pkl"),
            ),
        ),
        "TorchScript",
    ),
    "a payload zip named .safetensors": (
        lambda b: b.file("model.safetensors", b.torch_bytes(Reduce(os.system, b.shell()))),
        "safetensors",
    ),
    "a raw pickle named .safetensors": (
        lambda b: b.file("model.safetensors", pickle.dumps(Reduce(os.system, b.shell()))),
        "safetensors",
    ),
    "a zip bomb": (lambda b: b.file("m.pt", _zip_bomb(b)), "zip bomb"),
    "zip members climbing out with ../": (
        lambda b: b.file(
            "m.pt",
            _rebuilt_zip(
                b.torch_bytes(Reduce(os.system, b.shell())),
                rename=lambda n: "../../" + n,
            ),
        ),
        "outside the archive",
    ),
    "zip members with absolute paths": (
        lambda b: b.file(
            "m.pt", _rebuilt_zip(b.torch_bytes(b.state_dict()), rename=lambda n: "/tmp/" + n)
        ),
        "outside the archive",
    ),
    "a corrupt zip (CRC mismatch)": (
        lambda b: b.file("m.pt", _corrupted(b.torch_bytes(b.state_dict()))),
        "corrupt zip",
    ),
    "sidecar: subprocess:run with shell=True": (
        lambda b: b.with_sidecar(
            architecture="subprocess:run", arguments={"args": b.shell(), "shell": True}
        ),
        "field 'architecture' names code",
    ),
    "sidecar: os:system": (
        lambda b: b.with_sidecar(architecture="os:system", arguments={"command": b.shell()}),
        "field 'architecture' names code",
    ),
    "sidecar: builtins:exec": (
        lambda b: b.with_sidecar(architecture="builtins:exec", arguments={"source": b.code()}),
        "field 'architecture' names code",
    ),
    "sidecar: file.py:factory": (
        lambda b: b.with_sidecar(architecture=_factory_file(b)),
        "field 'architecture' names code",
    ),
    "sidecar: an unknown architecture": (
        lambda b: b.with_sidecar(architecture="evil-net"),
        "'evil-net' is not a built-in architecture",
    ),
    "sidecar: a module name without a factory": (
        lambda b: b.with_sidecar(architecture="os"),
        "is not a built-in architecture",
    ),
    "sidecar: architecture is a list": (
        lambda b: b.with_sidecar(architecture=["subprocess", "run"]),
        "field 'architecture'",
    ),
    "sidecar: in_channels is a string": (
        lambda b: b.with_arguments(in_channels="1; touch x"),
        "field 'arguments.in_channels' must be an integer",
    ),
    "sidecar: num_classes is a boolean": (
        lambda b: b.with_arguments(num_classes=True),
        "field 'arguments.num_classes' must be an integer",
    ),
    "sidecar: input_size holds a string": (
        lambda b: b.with_arguments(input_size=[8, "8"]),
        "field 'arguments.input_size' must be a list of two integers",
    ),
    "sidecar: a network of any size": (
        lambda b: b.with_arguments(input_size=[65536, 65536]),
        "field 'arguments.input_size' is [65536, 65536]",
    ),
    "sidecar: an argument basic-cnn does not take": (
        lambda b: b.with_arguments(shell=True),
        "field 'arguments.shell' is not an argument of basic-cnn",
    ),
    "sidecar: NaN normalisation": (
        lambda b: b.with_sidecar(normalization={"mean": [float("nan")], "std": [0.3]}),
        "field 'normalization.mean'",
    ),
    "sidecar: normalisation of strings": (
        lambda b: b.with_sidecar(normalization={"mean": ["__import__('os')"], "std": [1]}),
        "field 'normalization.mean'",
    ),
    "sidecar: a 400-digit normalisation": (
        lambda b: b.with_sidecar(normalization={"mean": [0.3], "std": [10**400]}),
        "field 'normalization.std'",
    ),
    "sidecar: classes that are not strings": (
        lambda b: b.with_sidecar(classes=list(range(10))),
        "field 'classes'",
    ),
    "sidecar: data_hash that is not a string": (
        lambda b: b.with_sidecar(data_hash={"$ref": "x"}),
        "field 'data_hash'",
    ),
    "sidecar: nested a million deep": (
        _deep_sidecar,
        "not valid JSON",
    ),
}


# Trusted (--trust-checkpoint), but the config says unsafe_load: forbid: refused unread.
FORBIDDEN: dict[str, Callable[[Bench], list[str]]] = {
    "forbid: os.system in torch.save": lambda b: b.file(
        "m.pt", b.torch_bytes(Reduce(os.system, b.shell()))
    ),
    "forbid: a TorchScript archive": _torchscript,
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated upstream
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("name", list(CORPUS) + list(FORBIDDEN))
def test_malicious_input_is_refused_and_never_runs(name, digits_run, configs, tmp_path):
    bench = Bench(tmp_path, tmp_path / "canary", digits_run)
    if name in FORBIDDEN:
        argv, phrase = [*FORBIDDEN[name](bench), "--trust-checkpoint"], "unsafe_load: forbid"
        config = configs["forbid"]
    else:
        (build, phrase), config = CORPUS[name], configs["tiny"]
        argv = build(bench)
    out = tmp_path / "out"
    result = cli("run", "--config", config, *argv, "--out", out, "--quiet")
    assert result.status == 4, result
    _one_line(result)
    assert phrase in result.err, result
    assert not bench.canary.exists()
    assert not out.exists()


# The control: unpickled the unsafe way, outside auditclf, these payloads do create the canary.
LIVE = [
    name
    for name in CORPUS
    if any(word in name for word in ("pickle", "torch.save", "data.pkl", "protocol 0", ".pth"))
    or name in ("Path.touch with the weights", "a payload zip named .safetensors")
]


@pytest.mark.parametrize("name", LIVE)
def test_the_pickle_payloads_are_live(name, digits_run, tmp_path):
    bench = Bench(tmp_path, tmp_path / "canary", digits_run)
    _, path = CORPUS[name][0](bench)
    control = shutil.copy(path, tmp_path / "control.pt")  # torch.load reads .safetensors safely
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        torch.load(control, weights_only=False)
    assert bench.canary.exists()


# ---------------------------------------------------------------- templates

ESCAPES = {
    "lipsum globals": "{{{{ lipsum.__globals__.os.system('touch {canary}') }}}}",
    "cycler init globals": "{{{{ cycler.__init__.__globals__.os.popen('touch {canary}') }}}}",
    "subclasses walk": "{{{{ ''.__class__.__mro__[1].__subclasses__() }}}}",
    "a method of the result": "{{{{ result.load('{canary}') }}}}",
    "mutating the result": "{{{{ result.limitations.append('{canary}') }}}}",
}


def _planted(folder: Path, canary: Path, escape: str = "lipsum globals") -> Path:
    folder.mkdir()
    for name in ("report.html.j2", "compare.html.j2"):
        (folder / name).write_text(ESCAPES[escape].format(canary=canary))
    return folder


def _copy_with_templates(run: Path, target: Path, templates: Path) -> Path:
    """A copy of a run's report.json and samples.csv whose config names ``templates``."""
    target.mkdir()
    shutil.copy(run / "samples.csv", target / "samples.csv")
    raw = json.loads((run / "report.json").read_text())
    raw["run"]["config"]["report"]["templates"] = str(templates)
    (target / "report.json").write_text(json.dumps(raw))
    return target


def _shipped(page: Path) -> bool:
    return "Content-Security-Policy" in page.read_text()


def test_report_never_takes_templates_from_a_saved_report(unsafe_run, tmp_path):
    canary = tmp_path / "canary"
    folder = _copy_with_templates(unsafe_run, tmp_path / "copy", _planted(tmp_path / "t", canary))
    result = cli("report", folder)
    assert result.status == 0, result
    assert _shipped(folder / "report.html") and not canary.exists()


def test_gate_out_never_takes_templates_from_a_saved_report(unsafe_run, tmp_path):
    canary = tmp_path / "canary"
    folder = _copy_with_templates(unsafe_run, tmp_path / "copy", _planted(tmp_path / "t", canary))
    out = tmp_path / "gated"
    result = cli("gate", folder, "--gate", "performance.accuracy>=0.1", "--out", out)
    assert result.status == 0, result
    assert _shipped(out / "report.html") and not canary.exists()
    loaded = Audit.load(folder / "report.json")  # the Python API: the same rule
    assert "Content-Security-Policy" in loaded.to_html()
    loaded.save(tmp_path / "saved")
    assert _shipped(tmp_path / "saved" / "report.html") and not canary.exists()


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_named_templates_render_sandboxed(escape, unsafe_run, tmp_path):
    canary = tmp_path / "canary"
    templates = _planted(tmp_path / "t", canary, escape)
    result = cli("report", unsafe_run, "--out", tmp_path / "o", "--templates", templates)
    assert result.status == 2, result
    _one_line(result)
    assert f"{templates}: report.html.j2" in result.err and "unsafe" in result.err
    assert not canary.exists() and not (tmp_path / "o" / "report.html").exists()


def test_the_sandbox_refuses_methods_of_a_gate_outcome():
    gate = Gate("performance.accuracy", ">=", 0.5)
    outcome = evaluate_gate(gate, {"performance.accuracy": 1.0}, {})
    page = html.environment().from_string("{{ g.status }} {{ g.to_dict() }}")
    with pytest.raises(SecurityError, match="to_dict"):
        page.render(g=outcome)


def test_compare_templates_render_sandboxed(unsafe_run, tmp_path):
    canary = tmp_path / "canary"
    templates = _planted(tmp_path / "t", canary)
    out = tmp_path / "o"
    result = cli("compare", unsafe_run, unsafe_run, "--out", out, "--templates", templates)
    assert result.status == 2, result
    _one_line(result)
    assert "compare.html.j2" in result.err and not canary.exists()


def test_shipped_templates_render_the_same_in_the_sandbox(digits_run, monkeypatch):
    result = AuditResult.load(digits_run / "report.json")
    drawn, draw = {}, html.render_figure

    def draw_once(data, arrays):  # each figure drawn once: renderings differ only in environment
        if id(data) not in drawn:
            drawn[id(data)] = draw(data, arrays)
        return drawn[id(data)]

    monkeypatch.setattr(html, "render_figure", draw_once)
    sandboxed = html.render_html(result)
    monkeypatch.setattr(html, "ReportSandbox", Environment)
    assert html.render_html(result) == sandboxed


# ---------------------------------------------------------------- model faults

FAULTY = textwrap.dedent("""
    import sys
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, num_classes, mode):
            super().__init__()
            self.linear = nn.Linear(1, num_classes)
            self.mode, self.calls = mode, 0

        def forward(self, x):
            self.calls += 1
            logits = self.linear(x.mean((1, 2, 3))[:, None])
            if self.mode == "raise":
                raise ValueError("boom in forward")
            if self.mode == "tuple":
                return logits, logits
            if self.mode == "exit" and self.calls > 1:  # the output check passes, the audit not
                sys.exit(0)
            if self.mode == "interrupt":
                raise KeyboardInterrupt
            return logits

    def raises(num_classes):
        return Net(num_classes, "raise")

    def returns_tuple(num_classes):
        return Net(num_classes, "tuple")

    def exits(num_classes):
        return Net(num_classes, "exit")

    def interrupted(num_classes):
        return Net(num_classes, "interrupt")

    def factory_exits(num_classes):
        sys.exit(0)

    def factory_raises(num_classes):
        raise RuntimeError("no such weights")
""")


@pytest.fixture
def faulty(tmp_path) -> tuple[Path, Path]:
    """(the factory file, a state dict that fits its Net)."""
    factory = tmp_path / "faulty.py"
    factory.write_text(FAULTY)
    weights = tmp_path / "net.pt"
    torch.save({f"linear.{k}": v for k, v in nn.Linear(1, 10).state_dict().items()}, weights)
    return factory, weights


@pytest.mark.parametrize(
    ("factory", "phrase"),
    [
        ("raises", "forward failed on a batch of shape [2, 1, 8, 8] (ValueError: boom in forward)"),
        ("returns_tuple", "forward returned tuple, not a tensor of logits"),
        # the clean probe's passes are FORWARD_CHUNK images
        ("exits", f"forward failed on a batch of shape [{FORWARD_CHUNK}, 1, 8, 8] (SystemExit: 0)"),
        ("factory_exits", "the factory raised SystemExit: 0"),
        ("factory_raises", "the factory raised RuntimeError: no such weights"),
    ],
)
def test_what_model_code_raises_is_a_refusal(factory, phrase, faulty, configs, tmp_path):
    source, weights = faulty
    model = f"{source}:{factory}"
    argv = ["--model", model, "--checkpoint", weights, "--out", tmp_path / "o", "--quiet"]
    result = cli("run", "--config", configs["tiny"], *argv)
    assert result.status == 4, result
    _one_line(result)
    assert phrase in result.err
    assert not (tmp_path / "o").exists()


def test_a_factory_module_that_exits_on_import_is_a_refusal(configs, tmp_path):
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\ndef make(): pass\n")
    model = f"{tmp_path / 'exits.py'}:make"
    result = cli("run", "--config", configs["tiny"], "--model", model, "--out", tmp_path / "o")
    assert result.status == 4, result
    _one_line(result)
    assert "raised SystemExit: 0" in result.err


def test_an_interrupt_from_the_model_stays_an_interrupt(faulty, configs, tmp_path):
    source, weights = faulty
    argv = ["--model", f"{source}:interrupted", "--checkpoint", weights, "--out", tmp_path / "o"]
    result = cli("run", "--config", configs["tiny"], *argv, "--quiet")
    assert result.status == 130, result


def test_only_argparse_may_exit_without_an_error(monkeypatch):
    assert cli("--version").status == 0 and cli("run", "--help").status == 0

    def exits(args, out):
        raise SystemExit(0)

    monkeypatch.setitem(COMMANDS, "list", exits)
    result = cli("list")
    assert result.status == 6, result
    _one_line(result)
    assert "SystemExit" in result.err


def _nan_weights(b: Bench) -> list[str]:
    state = b.state_dict()
    state["classifier.3.weight"][0, 0] = float("nan")
    (b.tmp / "model.json").write_text((b.run / "model.json").read_text())
    save_file(state, str(b.tmp / "model.safetensors"))
    return ["--checkpoint", str(b.tmp / "model.safetensors")]


def _inf_weights(b: Bench) -> list[str]:
    state = b.state_dict()
    state["features.0.bias"][1] = float("-inf")
    return b.file("m.pt", b.torch_bytes(state))


def _unimportable(b: Bench) -> list[str]:
    """A pickle naming a class of a module that does not exist (``fractionz.Fraction``)."""
    data = b.torch_bytes({"state_dict": b.state_dict(), "epoch": Fraction(1)})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        renamed = archive.read("archive/data.pkl").replace(b"fractions", b"fractionz")
    return b.file("m.pt", _rebuilt_zip(data, replace={"data.pkl": renamed}))


BROKEN: dict[str, tuple[Callable[[Bench], list[str]], str]] = {
    "NaN weights": (_nan_weights, "tensor 'classifier.3.weight' holds NaN or infinite values"),
    "Inf weights": (_inf_weights, "tensor 'features.0.bias' holds NaN or infinite values"),
    "empty file": (lambda b: b.file("m.pt", b""), "the file is empty"),
    "truncated zip": (
        lambda b: b.file("m.pt", b.torch_bytes(b.state_dict())[:5000]),
        "a broken zip archive (no directory: truncated?)",
    ),
    "truncated legacy file": (
        lambda b: b.file(
            "m.pt", b.torch_bytes(b.state_dict(), _use_new_zipfile_serialization=False)[:5000]
        ),
        "not a readable checkpoint",
    ),
    "corrupt zip": (
        lambda b: b.file("m.pt", _corrupted(b.torch_bytes(b.state_dict()))),
        "corrupt zip archive (member 'archive/data/0')",
    ),
    "unimportable class": (_unimportable, "fractionz"),
}


@pytest.mark.parametrize("trust", [False, True], ids=["untrusted", "trusted"])
@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_checkpoints_are_refused_in_one_line(name, trust, digits_run, configs, tmp_path):
    build, phrase = BROKEN[name]
    argv = build(Bench(tmp_path, tmp_path / "canary", digits_run))
    if trust:
        argv.append("--trust-checkpoint")
    elif name == "unimportable class":
        phrase = "it names the global fractionz.Fraction, which a weights-only load does not allow"
    result = cli("run", "--config", configs["tiny"], *argv, "--out", tmp_path / "o", "--quiet")
    assert result.status == 4, result
    _one_line(result)
    assert phrase in result.err


def test_the_pickle_refusal_names_the_global_in_whole_sentences(digits_run, tmp_path):
    bench = Bench(tmp_path, tmp_path / "canary", digits_run)
    argv = bench.file("m.pt", bench.torch_bytes({"w": Reduce(os.system, bench.shell())}))
    result = cli("run", "--dataset", "digits", *argv, "--out", tmp_path / "o", "--quiet")
    assert result.status == 4
    _one_line(result)
    assert result.err == (
        f"auditclf: error: {tmp_path / 'm.pt'}: refused: it cannot be loaded weights-only: it "
        "names the global posix.system, which a weights-only load does not allow; pass "
        "--trust-checkpoint to load it anyway, only if you trust where it came from\n"
    )


# ---------------------------------------------------------------- a visible unsafe load


@pytest.fixture(scope="module")
def unsafe_checkpoint(tmp_path_factory, digits_run) -> Path:
    """The digits model as a state dict that needs unpickling (a Fraction beside it)."""
    folder = tmp_path_factory.mktemp("unsafe-checkpoint")
    state = load_file(str(digits_run / "model.safetensors"))
    path = folder / "model.pt"
    torch.save({"state_dict": state, "epoch": Fraction(2)}, path)
    shutil.copy(digits_run / "model.json", folder / "model.json")
    return path


@pytest.fixture(scope="module")
def unsafe_run(tmp_path_factory, unsafe_checkpoint, configs) -> Path:
    """A cheap audit of the trusted, unpickled checkpoint; its output folder."""
    out = tmp_path_factory.mktemp("unsafe-run")
    argv = ["--checkpoint", unsafe_checkpoint, "--trust-checkpoint", "--out", out, "--quiet"]
    result = cli("run", "--config", configs["tiny"], *argv)
    assert result.status == 0, result
    return out


def test_an_unpickled_checkpoint_is_named_in_every_output(unsafe_run, unsafe_checkpoint):
    digest = hashlib.sha256(unsafe_checkpoint.read_bytes()).hexdigest()
    raw = json.loads((unsafe_run / "report.json").read_text())
    validate_report(raw)
    assert raw["run"]["unsafe_load"] is True
    card = raw["models"]["baseline"]["card"]
    assert card["unsafe_load"] == {"file": str(unsafe_checkpoint), "sha256": digest}
    (finding,) = [f for f in raw["models"]["baseline"]["findings"] if digest in f["message"]]
    assert str(unsafe_checkpoint) in finding["message"] and finding["severity"] == "warning"

    page = (unsafe_run / "report.html").read_text()
    banner = page.index('<div class="banner unsafe"')
    assert banner < page.index("<h1>") and digest in page[banner : page.index("<h1>")]

    summary = (unsafe_run / "summary.md").read_text().splitlines()
    assert summary[2].startswith("**⛔ Unsafe load:**") and digest in summary[2]

    (suite,) = list(JUnitXml.fromfile(str(unsafe_run / "junit.xml")))
    (case,) = [c for c in suite if c.classname == "auditclf.security"]
    (skipped,) = case.result
    assert isinstance(skipped, Skipped) and digest in skipped.message


def test_a_weights_only_run_says_no_unsafe_load(digits_run):
    raw = json.loads((digits_run / "report.json").read_text())
    assert raw["run"]["unsafe_load"] is False
    assert raw["models"]["baseline"]["card"]["unsafe_load"] is None
    assert "banner unsafe" not in (digits_run / "report.html").read_text()
    assert "auditclf.security" not in (digits_run / "junit.xml").read_text()


def test_forbid_refuses_a_trusted_pickle_before_loading_it(unsafe_checkpoint, configs, tmp_path):
    argv = ["--checkpoint", unsafe_checkpoint, "--trust-checkpoint", "--out", tmp_path / "o"]
    result = cli("run", "--config", configs["forbid"], *argv, "--quiet")
    assert result.status == 4, result
    _one_line(result)
    assert "unsafe_load: forbid" in result.err and str(unsafe_checkpoint) in result.err


def test_gate_with_forbid_refuses_a_report_whose_run_unpickled(unsafe_run, configs, digits_run):
    result = cli(
        "gate", unsafe_run, "--config", configs["forbid"], "--gate", "performance.accuracy>=0"
    )
    assert result.status == 4, result
    _one_line(result)
    assert "run.unsafe_load" in result.err
    allowed = cli(
        "gate", digits_run, "--config", configs["forbid"], "--gate", "performance.accuracy>=0"
    )
    assert allowed.status == 0, allowed
