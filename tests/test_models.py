"""Model zoo, adapter and safe checkpoint loading."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from auditclf.config import ModelConfig
from auditclf.errors import ModelRefused, UsageError
from auditclf.models import MODELS, ModelAdapter, prepare_model, save_model
from auditclf.models.loading import build_architecture, read_checkpoint
from auditclf.models.zoo import REAL_SIZE
from tests.conftest import cli

ARGS = {"in_channels": 1, "num_classes": 10, "input_size": [8, 8]}


# The real-size models (REAL_SIZE) take some sizes only and are slower: test_pretrained.py.
@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in REAL_SIZE])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 28, 28), (3, 64, 64)])
def test_every_zoo_model_maps_any_input_to_logits(name, shape):
    net = build_architecture(
        name, {"in_channels": shape[0], "num_classes": 4, "input_size": list(shape[1:])}
    )
    adapter = ModelAdapter(net, [0.5] * shape[0], [0.25] * shape[0])
    with torch.no_grad():
        logits = adapter(torch.rand(2, *shape))
    assert logits.shape == (2, 4)
    assert adapter.target_layer_name is not None
    assert isinstance(adapter.target_layer, nn.Conv2d)


def test_basic_cnn_is_the_tutorial_architecture():
    net = build_architecture(
        "basic-cnn", {"in_channels": 1, "num_classes": 10, "input_size": [28, 28]}
    )
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 64, (3, 3)),
    ]
    assert [(d.in_features, d.out_features) for d in dense] == [(64 * 7 * 7, 128), (128, 10)]
    assert not any(isinstance(m, nn.Softmax) for m in net.modules())  # logits out


def test_adapter_normalises_inside_and_stays_in_eval_mode():
    net = nn.Sequential(nn.Flatten(), nn.Identity())
    adapter = ModelAdapter(net, mean=[0.5], std=[0.25])
    out = adapter(torch.full((1, 1, 2, 2), 1.0))
    assert torch.allclose(out, torch.full((1, 4), 2.0))  # (1 - 0.5) / 0.25
    assert not adapter.training


def test_unknown_target_layer_lists_conv_layers():
    net = build_architecture("basic-cnn", ARGS)
    with pytest.raises(UsageError, match=r"conv layers found: features\.0, features\.3"):
        ModelAdapter(net, [0.0], [1.0], target_layer="features.9")


def _trained_like(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    net = build_architecture("basic-cnn", ARGS)
    spec = {
        "format": "auditclf-model/1",
        "architecture": "basic-cnn",
        "arguments": ARGS,
        "classes": [str(d) for d in range(10)],
        "normalization": {"mean": [0.3], "std": [0.4]},
    }
    path = tmp_path / "model.safetensors"
    save_model(net, spec, path)
    return net, path


def _prepare(checkpoint: Path, **kwargs):
    cfg = ModelConfig(checkpoint=checkpoint, **kwargs)
    return prepare_model(
        cfg,
        classes=[str(d) for d in range(10)],
        input_shape=(1, 8, 8),
        train_images=None,
        data_hash="x",
        seed=0,
    )


def test_safetensors_with_sidecar_rebuilds_the_same_model(tmp_path):
    net, path = _trained_like(tmp_path)
    prepared = _prepare(path)
    x = torch.rand(3, 1, 8, 8)
    expected = net((x - 0.3) / 0.4)
    assert torch.equal(prepared.adapter(x), expected)
    assert prepared.spec["normalization"] == {"mean": [0.3], "std": [0.4]}
    assert not prepared.needs_training


def test_pt_state_dict_loads_weights_only(tmp_path):
    net = build_architecture("basic-cnn", ARGS)
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    prepared = _prepare(path)
    assert any("no normalisation" in note for note in prepared.notes)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(prepared.adapter(x), net(x))


class _Payload:
    """Pickling this runs ``touch`` when loaded: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(ModelRefused, match="--trust-checkpoint"):
        read_checkpoint(path, trust=False)
    assert not marker.exists()
    result = cli(
        "run", "--dataset", "digits", "--checkpoint", path, "--out", tmp_path / "out", "--quiet"
    )
    assert result.status == 4, result
    assert "evil.pt" in result.err and "--trust-checkpoint" in result.err
    assert result.err.strip().count("\n") == 0
    assert not marker.exists()
    assert not (tmp_path / "out" / "report.json").exists()


def test_whole_pickled_model_loads_only_when_trusted(tmp_path):
    net = build_architecture("basic-cnn", ARGS)
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(ModelRefused, match="weights-only"):
        read_checkpoint(path, trust=False)
    loaded = read_checkpoint(path, trust=True)
    assert isinstance(loaded.module, nn.Module)


# TorchScript is deprecated upstream, but users still ship such files: we must refuse them.
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_needs_trust(tmp_path):
    net = build_architecture("basic-cnn", ARGS).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 1, 8, 8)), str(path))
    with pytest.raises(ModelRefused, match="TorchScript"):
        read_checkpoint(path, trust=False)
    assert read_checkpoint(path, trust=True).module is not None


def test_shape_mismatch_names_the_keys(tmp_path):
    other = build_architecture("basic-cnn", {**ARGS, "num_classes": 4})
    path = tmp_path / "four.pt"
    torch.save(other.state_dict(), path)
    result = cli(
        "run", "--dataset", "digits", "--checkpoint", path, "--out", tmp_path / "o", "--quiet"
    )
    assert result.status == 4, result
    assert "classifier.3.weight (4, 128) vs (10, 128)" in result.err
    assert "classifier.3.bias" in result.err


def test_corrupt_safetensors_is_refused(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(ModelRefused, match="broken.safetensors"):
        read_checkpoint(path, trust=False)


def test_missing_checkpoint_is_a_usage_error(tmp_path):
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--checkpoint",
        tmp_path / "nope.pt",
        "--quiet",
        "--out",
        tmp_path / "o",
    )
    assert result.status == 2 and "nope.pt" in result.err


FACTORY = textwrap.dedent("""
    import torch.nn as nn

    def make(num_classes, in_channels=1):
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    class NanNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.linear = nn.Linear(1, num_classes)

        def forward(self, x):
            return self.linear(x.mean((1, 2, 3))[:, None]) * float("nan")

    def nan_net(num_classes):
        return NanNet(num_classes)
""")


def test_user_factory_from_a_file_and_from_a_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORY)
    by_file = f"{tmp_path / 'user_models.py'}:make"
    from_file = build_architecture(by_file, ARGS, model_name=by_file)
    monkeypatch.syspath_prepend(str(tmp_path))
    from_module = build_architecture("user_models:make", ARGS, model_name="user_models:make")
    assert from_file(torch.rand(1, 1, 8, 8)).shape == (1, 10)
    assert from_module(torch.rand(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(UsageError, match="no callable 'missing'"):
        build_architecture("user_models:missing", ARGS, model_name="user_models:missing")


def test_a_factory_is_imported_only_when_the_config_names_it(tmp_path, monkeypatch):
    canary = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(canary)!r}, 'w').close()\ndef make(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for reference in ("planted:make", f"{tmp_path / 'planted.py'}:make", "os:system"):
        with pytest.raises(ModelRefused, match="names code"):
            build_architecture(reference, ARGS, model_name="basic-cnn")
        with pytest.raises(ModelRefused, match="names code"):
            build_architecture(reference, ARGS)
    assert not canary.exists()


def test_nan_logits_exit_5(tmp_path):
    factory = tmp_path / "user_models.py"
    factory.write_text(FACTORY)
    path = tmp_path / "nan.pt"
    torch.save({"linear." + k: v for k, v in nn.Linear(1, 10).state_dict().items()}, path)
    result = cli(
        "run",
        "--dataset",
        "digits",
        "--model",
        f"{factory}:nan_net",
        "--checkpoint",
        path,
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert result.status == 5, result
    assert "NaN or infinite logits" in result.err


def test_a_network_that_cannot_run_channels_last_stays_contiguous():
    """The probes and training run a network channels-last (the fast kernels) only when a
    trial pass works: an old-style `.view` flatten needs contiguous activations."""
    import torch.nn as nn

    from auditclf.models.adapter import ModelAdapter, channels_last, pass_layout

    class ViewFlatten(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.head = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            out = self.conv(x)
            return self.head(out.view(out.size(0), -1))

    x = torch.rand(2, 1, 8, 8)
    for net, expected in (
        (ViewFlatten(), False),
        (nn.Sequential(ViewFlatten().conv, nn.Flatten()), True),
    ):
        adapter = ModelAdapter(net, [0.5], [0.5])
        with channels_last(adapter, x) as fast:
            assert fast is expected
            assert pass_layout(x, adapter) == (
                torch.channels_last if fast else torch.contiguous_format
            )
            adapter(x.contiguous(memory_format=pass_layout(x, adapter)))  # runs either way
        assert all(p.is_contiguous() for p in adapter.parameters())
        assert pass_layout(x, adapter) == torch.contiguous_format
