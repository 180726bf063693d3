"""Real-size torchvision models, pretrained weights from a local file, and head-only training.

Weights are torchvision's own format, randomly initialised (``torchvision.models.X(
weights=None).state_dict()`` saved with ``torch.save``): nothing is downloaded.
EfficientNet-B0 carries the end-to-end tests (a 21 MB state dict; VGG-16's and ViT's
are 500 and 330 MB), at 32 px to stay fast on a CPU.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerGradCam
from PIL import Image
from safetensors.torch import load_file

from auditclf.config import ExplainConfig, ModelConfig
from auditclf.data import SplitView
from auditclf.errors import ModelRefused, UsageError
from auditclf.evidence import new_table
from auditclf.keys import explain_column
from auditclf.models import ModelAdapter, prepare_model
from auditclf.models.loading import build_architecture
from auditclf.models.pretrained import classification_head
from auditclf.models.sidecar import read_sidecar
from auditclf.models.zoo import REAL_SIZE, PatchGridNorm, vision_transformer
from auditclf.probes import PROBES, ProbeContext
from tests.conftest import MINIMAL_CONFIG, cli

HEADS = {
    "resnet50": "fc",
    "efficientnet_b0": "classifier.1",
    "vgg16": "classifier.6",
    "vit_b_16": "heads.head",
}


def _arguments(channels: int = 3, side: int = 32, classes: int = 3) -> dict:
    return {"in_channels": channels, "num_classes": classes, "input_size": [side, side]}


@pytest.fixture(scope="module")
def effnet_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "efficientnet_b0-random.pth"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), path)
    return path


@functools.cache
def _gray_net(name: str) -> torch.nn.Module:
    """``name`` built once for 32-px gray images and 3 classes (building costs seconds)."""
    torch.manual_seed(0)
    return build_architecture(name, _arguments(channels=1))


@pytest.fixture(scope="module")
def vit() -> ModelAdapter:
    """The ViT-B/16 for 32-px gray images (a 2 × 2 patch grid), with a random head
    (torchvision initialises it to zeros, which would make every gradient vanish)."""
    net = copy.deepcopy(_gray_net("vit_b_16"))
    torch.nn.init.normal_(net.heads.head.weight, std=0.5)
    return ModelAdapter(net, [0.5], [0.25])


@pytest.mark.parametrize("name", REAL_SIZE)
def test_real_size_models_give_logits_with_a_head_for_the_classes(name):
    net = _gray_net(name)
    adapter = ModelAdapter(net, [0.5], [0.25])
    with torch.no_grad():
        assert adapter(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert classification_head(net) == HEADS[name]
    assert net.get_submodule(HEADS[name]).out_features == 3
    assert adapter.target_layer_name is not None


@pytest.mark.parametrize(
    ("name", "side", "needs"), [("vit_b_16", 40, "multiple of 16"), ("vgg16", 16, "32×32")]
)
def test_sizes_an_architecture_cannot_take_are_usage_errors(name, side, needs):
    with pytest.raises(UsageError, match=needs):
        build_architecture(name, _arguments(side=side))


def test_weights_load_with_the_head_replaced_and_the_first_conv_summed_for_gray(effnet_weights):
    published = torch.load(effnet_weights, weights_only=True)
    cfg = ModelConfig(name="efficientnet_b0", weights=effnet_weights)
    prepared = prepare_model(
        cfg,
        classes=["a", "b", "c"],
        input_shape=(1, 16, 16),
        train_images=np.zeros((2, 1, 16, 16), np.uint8),
        data_hash="0" * 64,
        seed=0,
    )
    loaded = prepared.adapter.net.state_dict()
    torch.testing.assert_close(
        loaded["features.0.0.weight"], published["features.0.0.weight"].sum(1, keepdim=True)
    )
    assert torch.equal(loaded["features.8.1.running_var"], published["features.8.1.running_var"])
    assert loaded["classifier.1.weight"].shape == (3, 1280)  # the file's is (1000, 1280)
    card = prepared.card()
    digest = hashlib.sha256(effnet_weights.read_bytes()).hexdigest()
    expected = {"file": effnet_weights.name, "sha256": digest, "head": "classifier.1"}
    assert card["pretrained"] == expected
    assert card["normalization"] == {"mean": [0.449], "std": [0.226]}  # ImageNet's, gray
    assert "classifier.1" in card["source"] and "freshly initialised" in card["source"]


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["corrupt", "mismatched", "pickle"])
def test_a_bad_weights_file_exits_4_with_one_line(tmp_path, kind):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pth"
    if kind == "corrupt":
        bad.write_bytes(b"PK\x03\x04 not a state dict")
    elif kind == "mismatched":
        torch.save({"features.0.0.weight": torch.zeros(32, 3, 5, 5)}, bad)
    else:
        torch.save({"features.0.0.weight": torch.zeros(1), "payload": _Payload(marker)}, bad)
    result = cli(
        "train", "--dataset", "digits", "--model", "efficientnet_b0", "--weights", bad,
        "--out", tmp_path / "out", "--quiet",
    )  # fmt: skip
    assert result.status == 4, result
    assert "bad.pth" in result.err and "Traceback" not in result.err
    assert result.err.strip().count("\n") == 0
    if kind == "mismatched":
        assert "features.0.0.weight (32, 3, 5, 5)" in result.err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def _folder(root: Path) -> Path:
    """Three colour classes of 12 RGB images, 36 px (resized to 32 by --image-size)."""
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(12):
            noise = rng.integers(0, 60, (36, 36, 3))
            pixels = (noise + np.array(colour) // 2).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


def test_fine_tune_only_the_head_then_reaudit_the_checkpoint(tmp_path, effnet_weights):
    config = tmp_path / "audit.yaml"
    config.write_text(MINIMAL_CONFIG + "model: {name: efficientnet_b0}\n")
    config.write_text(config.read_text().replace("epochs: 1", "epochs: 1\n  freeze_backbone: true"))
    data = _folder(tmp_path / "images")
    out = tmp_path / "out"
    result = cli(
        "run", "--config", config, "--dataset", data, "--weights", effnet_weights,
        "--image-size", "32", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.status == 0, result
    card = json.loads((out / "report.json").read_text())["models"]["baseline"]["card"]
    assert card["pretrained"]["file"] == effnet_weights.name
    assert card["normalization"]["mean"] == [0.485, 0.456, 0.406]
    published = torch.load(effnet_weights, weights_only=True)
    trained = load_file(out / "model.safetensors")
    backbone = [k for k in published if not k.startswith("classifier.")]
    assert all(torch.equal(trained[k], published[k]) for k in backbone)  # BN statistics too
    assert not torch.equal(trained["classifier.1.bias"], torch.zeros(3))
    again = cli(
        "run", "--config", config, "--dataset", data, "--image-size", "32",
        "--checkpoint", out / "model.safetensors", "--out", tmp_path / "again", "--quiet",
    )  # fmt: skip
    assert again.status == 0, again
    recheck = json.loads((tmp_path / "again" / "report.json").read_text())
    assert recheck["models"]["baseline"]["card"]["pretrained"] == card["pretrained"]


def test_a_hostile_pretrained_field_in_a_sidecar_is_refused(tmp_path):
    sidecar = {
        "format": "auditclf-model/1",
        "architecture": "basic-cnn",
        "arguments": _arguments(channels=1, side=8),
        "classes": ["a", "b", "c"],
        "normalization": {"mean": [0.5], "std": [0.25]},
        "pretrained": {"file": "<script>x</script>", "sha256": "0" * 64, "head": "fc"},
    }
    (tmp_path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelRefused, match="pretrained.file"):
        read_sidecar(
            tmp_path / "model.safetensors",
            model_name="basic-cnn",
            expected=_arguments(channels=1, side=8),
            classes=["a", "b", "c"],
        )


def test_the_vit_patch_grid_leaves_the_tokens_as_they_are_and_grad_cam_sees_patches(vit):
    norm = vit.target_layer_name.removesuffix(".patch_grid")
    layer = vit.net.get_submodule(norm)
    assert isinstance(layer, PatchGridNorm) and norm.startswith("encoder.layers.encoder_layer_11")
    tokens = torch.randn(2, 5, 768)
    expected = F.layer_norm(tokens, (768,), layer.weight, layer.bias, layer.eps)
    torch.testing.assert_close(layer(tokens), expected)
    x = torch.rand(2, 1, 32, 32)
    cam = LayerGradCam(vit, vit.target_layer).attribute(x, target=torch.tensor([0, 1]))
    assert cam.shape == (2, 1, 2, 2) and bool(cam.abs().sum() > 0)


def test_a_vit_audit_explains_with_all_three_methods():
    """The attribution probe on a ViT of ViT-B/16's make but 2 layers of width 32 (ViT-B/16
    reads its 344 MB of weights on each of the probe's ~40 passes: a minute on 2 cores)."""
    torch.manual_seed(0)
    net = vision_transformer(
        1, 3, (32, 32), num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    torch.nn.init.normal_(net.heads.head.weight, std=0.5)
    vit = ModelAdapter(net, [0.5], [0.25])
    assert vit.target_layer_name == "encoder.layers.encoder_layer_1.ln_1.patch_grid"
    images = (np.random.default_rng(0).random((3, 1, 32, 32)) * 255).astype(np.uint8)
    test = SplitView(images, np.arange(3), np.array(["a", "b", "c"]), pd.DataFrame(), None)
    ctx = ProbeContext(
        model=vit,
        test=test,
        classes=["0", "1", "2"],
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        explain=ExplainConfig(lime_samples=10, ig_steps=4, curve_steps=4, correct_per_class=1),
    )
    table = new_table("baseline", test.ids, test.labels, ctx.classes, test.attributes)
    table = PROBES.get("clean")(ctx, table)
    PROBES.get("attributions")(ctx, table)
    run = ctx.artifacts["explanations"]
    assert run["methods"] == ["gradcam", "integrated_gradients", "lime"] and not run["skipped"]
    for method in run["methods"]:
        maps = ctx.arrays[explain_column("map", method)]
        assert maps.shape == (run["explained"], 32, 32) and run["explained"] > 0


def test_image_size_on_a_built_in_set_and_weights_with_a_checkpoint_are_usage_errors(tmp_path):
    idle = cli("run", "--dataset", "digits", "--image-size", "32", "--out", tmp_path / "a")
    assert idle.status == 2 and "--image-size does nothing here" in idle.err, idle
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    both = cli("run", "--weights", weights, "--checkpoint", weights, "--out", tmp_path / "b")
    assert both.status == 2 and "not both" in both.err, both
    assert both.err.strip().count("\n") == 0
