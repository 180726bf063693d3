"""What ships: the audited model exported (ONNX, TorchScript, int8 ONNX) and each file
audited through its own runtime against the PyTorch model; an ONNX file audited directly."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

import auditclf.pipeline as pipeline
from auditclf.errors import ModelRefused
from auditclf.models.runtime import check_onnx
from tests.conftest import MINIMAL_CONFIG, cli

# the attack probe at one eps on a few images (the transfer of its adversarial images, and
# Square on each file), and one corruption on a few images
DEPLOY_CONFIG = (
    MINIMAL_CONFIG.replace(
        "robustness:\n  enabled: false\n",
        "robustness:\n  attacks: [pgd_linf, square]\n  eps_linf: [0.1]\n  samples: 30\n"
        "  square_samples: 20\n  square_queries: 30\n"
        "  min_eps_samples: 0\n  gallery_per_class: 0\n",
    ).replace(
        "corruptions:\n  enabled: false\n",
        "corruptions:\n  samples: 30\n  names: [contrast]\n  gallery: false\n",
    )
    + """\
data:
  dataset: digits
export:
  formats: [onnx, torchscript, onnx-int8]
  calibration_images: 100
  latency_repeats: 5
"""
)
PARITY_GATES = (
    "deploy.onnx.agreement>=0.999",
    "deploy.torchscript.agreement>=0.999",
    "deploy.onnx.max_logit_diff<=0.0001",
    "deploy.torchscript.max_logit_diff<=0.0001",
)
# int8 rounds the logits: on digits it costs no accuracy (so `accuracy.drop<=0.0` passes
# there), but its logits are never within 1e-4 of the float model's
INT8_GATE = "deploy.onnx-int8.max_logit_diff<=0.0001"


def _gates(*gates: str) -> list[str]:
    return [part for gate in gates for part in ("--gate", gate)]


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())["models"]["baseline"]["metrics"]


def _statuses(folder: Path) -> dict[str, str]:
    gates = json.loads((folder / "report.json").read_text())["gates"]
    return {gate["expression"].replace(" ", ""): gate["status"] for gate in gates}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> tuple[Path, object]:
    """One digits run (one epoch, every optional section off) exported in the three formats,
    with the parity gates and the int8 gate; → (its folder, the CLI result)."""
    folder = tmp_path_factory.mktemp("deploy")
    config = folder / "deploy.yaml"
    config.write_text(DEPLOY_CONFIG)
    out = folder / "out"
    gates = _gates(*PARITY_GATES, INT8_GATE)
    result = cli("run", "--config", config, "--out", out, "--quiet", *gates)
    return out, result


def test_onnx_and_torchscript_agree_with_pytorch_and_int8_is_reported(deployed):
    out, result = deployed
    assert result.status == 1, result  # the int8 gate, and it alone
    assert result.err == "" and "Failed to set device" not in result.out  # Square's print
    statuses = _statuses(out)
    assert statuses == {**dict.fromkeys(PARITY_GATES, "pass"), INT8_GATE: "fail"}
    metrics = _metrics(out)
    for fmt in ("onnx", "torchscript"):
        assert metrics[f"deploy.{fmt}.agreement"] == 1.0
        assert metrics[f"deploy.{fmt}.max_logit_diff"] < 1e-4
        assert metrics[f"deploy.{fmt}.accuracy"] == metrics["performance.accuracy"]
        assert metrics[f"deploy.{fmt}.accuracy.drop"] == 0.0
    for key in ("deploy.onnx-int8.agreement", "deploy.onnx-int8.accuracy.drop"):
        assert metrics[f"{key}.ci_low"] <= metrics[key] <= metrics[f"{key}.ci_high"]
        assert metrics[f"{key}.ci_low"] < metrics[f"{key}.ci_high"]
    # the PyTorch model's own adversarial images (30): they fool the float export alike
    transferred = metrics["deploy.onnx.transfer@0.1.accuracy"]
    assert abs(transferred - metrics["robustness.pgd_linf@0.1.accuracy"]) <= 1 / 30
    # Square querying each file, on the attack probe's Square images; the float export is
    # the same function, so the same queries find the same images (one of rounding allowed)
    own = metrics["robustness.square@0.1.accuracy"]
    assert abs(metrics["deploy.onnx.square@0.1.accuracy"] - own) <= 1 / 20
    # the corruption probe's images through the file: the float export answers as PyTorch
    assert metrics["deploy.onnx.corruption.agreement"] >= 0.99
    corrupted = metrics["deploy.onnx.corruption.accuracy"]
    assert abs(corrupted - metrics["corruption.mean.accuracy"]) <= 0.01
    low, high = (metrics[f"deploy.onnx.corruption.accuracy.ci_{b}"] for b in ("low", "high"))
    assert low <= corrupted <= high
    assert metrics["deploy.onnx-int8.size_mb"] < metrics["deploy.onnx.size_mb"] / 2
    assert metrics["deploy.onnx.latency_p95_ms"] >= metrics["deploy.onnx.latency_p50_ms"] > 0
    assert sorted(p.name for p in (out / "export").iterdir()) == [
        "baseline.int8.onnx",
        "baseline.onnx",
        "baseline.pt",
    ]
    samples = pd.read_csv(out / "samples.csv")
    assert (samples["deploy.onnx.pred"] == samples["pred"]).all()
    assert "Deployment of the baseline model" in (out / "summary.md").read_text()
    assert "what shipping the baseline model cost" in (out / "report.html").read_text()


def _alter_one_weight(path: Path) -> None:
    """Add 1 to the first weight of the graph's last weight matrix (the classifier's)."""
    model = onnx.load(str(path))
    weights = [t for t in model.graph.initializer if len(t.dims) == 2]
    tensor = weights[-1]
    values = numpy_helper.to_array(tensor).copy()
    values.flat[0] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(path))


def test_an_altered_weight_in_the_exported_graph_is_caught(deployed, tmp_path, monkeypatch):
    out, _ = deployed
    export = pipeline.export_prepared

    def altered(prepared, data, config, folder):
        records = export(prepared, data, config, folder)
        _alter_one_weight(Path(folder) / records["onnx"]["file"])
        return records

    monkeypatch.setattr(pipeline, "export_prepared", altered)
    config = tmp_path / "onnx.yaml"
    config.write_text(
        MINIMAL_CONFIG + "data:\n  dataset: digits\nexport:\n  formats: [onnx]\n"
        "  latency_repeats: 5\n"
    )
    again = tmp_path / "out"
    checkpoint = out / "model.safetensors"
    result = cli(
        "run", "--config", config, "--checkpoint", checkpoint, "--out", again, "--quiet",
        *_gates("deploy.onnx.max_logit_diff<=0.0001"),
    )  # fmt: skip
    assert result.status == 1, result
    metrics = _metrics(again)
    assert metrics["deploy.onnx.max_logit_diff"] > 1e-2
    assert metrics["deploy.onnx.agreement"] < 1.0 or metrics["deploy.onnx.max_logit_diff"] > 0.1


def test_export_command_writes_int8_beside_the_run_files(deployed, tmp_path):
    out, _ = deployed
    result = cli("export", out, "--format", "onnx-int8", "--calibration-images", "0")
    assert result.status == 0, result
    assert "dynamic" in result.out  # no calibration images: weights-only quantization
    assert (out / "export" / "baseline.pt").is_file()  # the run's other exports stay
    refused = cli("export", out, "--format", "onnx", "--which", "hardened")
    assert refused.status == 2
    assert refused.err.count("\n") == 1 and "hardened.safetensors" in refused.err


def test_an_onnx_file_is_audited_directly_with_the_pytorch_clean_metrics(deployed, tmp_path):
    out, _ = deployed
    config = tmp_path / "clean.yaml"
    config.write_text(MINIMAL_CONFIG + "data:\n  dataset: digits\n")
    model = f"onnx:{out / 'export' / 'baseline.onnx'}"
    result = cli("run", "--config", config, "--model", model, "--out", tmp_path / "o", "--quiet")
    assert result.status == 0, result
    direct, audited = _metrics(tmp_path / "o"), _metrics(out)
    for key in ("performance.accuracy", "performance.balanced_accuracy"):
        assert direct[key] == audited[key]
    card = json.loads((tmp_path / "o" / "report.json").read_text())["models"]["baseline"]["card"]
    assert card["architecture"] == "onnx"
    assert card["weights_sha256"][:12] in card["source"]  # the file's SHA-256 and opset
    assert "opset 18" in card["source"]


def _custom_domain_model(path: Path) -> None:
    pixels = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 1, 8, 8])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])
    node = helper.make_node("Backdoor", ["pixels"], ["logits"], domain="evil.ops", name="b")
    graph = helper.make_graph([node], "g", [pixels], [logits])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("evil.ops", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def test_a_custom_operator_domain_is_refused(tmp_path):
    path = tmp_path / "custom.onnx"
    _custom_domain_model(path)
    with pytest.raises(ModelRefused, match="custom domain 'evil.ops'"):
        check_onnx(path)
    config = tmp_path / "clean.yaml"
    config.write_text(MINIMAL_CONFIG + "data:\n  dataset: digits\n")
    result = cli("run", "--config", config, "--model", f"onnx:{path}", "--out", tmp_path / "o")
    assert result.status == 4, result
    assert result.err.count("\n") == 1 and str(path) in result.err
    assert "Traceback" not in result.err


def test_check_onnx_refuses_an_unreadable_file_and_a_non_image_input(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(ModelRefused, match="not a readable ONNX model"):
        check_onnx(junk)
    flat = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [flat], [out])
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ModelRefused, match="not a rank-4 float32 tensor"):
        check_onnx(path)
