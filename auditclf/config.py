"""One typed configuration for a run.

Read from YAML (``--config audit.yaml``) and overridden by command-line flags.
Unknown keys and wrong types are usage errors that name the key. Units are in
the field descriptions: pixel values are in [0, 1], fractions in [0, 1].
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from auditclf.catalog import names
from auditclf.errors import UsageError

# model.name "onnx:<file>": an ONNX file audited as it is (no training, no gradients)
ONNX_MODEL_PREFIX = "onnx:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Strict):
    """Fractions of the data per split (stratified by class); they sum to 1."""

    train: float = Field(0.7, gt=0, lt=1, description="fraction of the images used for training")
    val: float = Field(
        0.2, gt=0, lt=1, description="fraction for validation (early stopping, hardening)"
    )
    test: float = Field(0.1, gt=0, lt=1, description="fraction audited (never trained on)")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ShapesConfig(_Strict):
    """The generated ``shapes`` set: RGB images of four shapes on coloured backgrounds."""

    n_per_class: int = Field(300, ge=3, description="images per class, all splits together")
    size: int = Field(64, ge=16, description="image side in pixels")
    background_correlation: float = Field(
        0.0, ge=0, le=1, description="P(background is the class's own colour) in train/val"
    )
    test_background_correlation: float = Field(0.0, ge=0, le=1, description="the same, in test")
    background_probs: list[float] | None = Field(
        None, description="P(blue, green, red, gray) when not correlated; default uniform"
    )


class DataConfig(_Strict):
    """What to audit on: a built-in set, an image folder or a CSV manifest, and its split."""

    dataset: str = Field(
        "mnist5k",
        description="a built-in name (`auditclf list`), a folder in ImageFolder layout, "
        "or a CSV manifest path,label[,split][,attributes...]",
    )
    root: Path | None = Field(
        None, description="local root of torchvision-* sets (never downloaded)"
    )
    classes: list[str] | None = Field(
        None, description="the class list; a label outside it is a data error"
    )
    split: SplitConfig = SplitConfig()
    image_size: int | None = Field(
        None,
        ge=4,
        description="resize user images to this side, in pixels; default: the most common size",
    )
    channels: Literal[1, 3] | None = Field(None, description="1 or 3; default from the images")
    max_samples: int | None = Field(
        None, ge=10, description="stratified subsample of the whole set before splitting"
    )
    max_pixels: int = Field(40_000_000, ge=1, description="larger images are refused (bombs)")
    allow_outside_root: bool = Field(
        False,
        description="let manifest paths and folder links reach files outside the dataset "
        "folder (../, absolute paths, symlinks); refused by default (exit 3)",
    )
    shapes: ShapesConfig = ShapesConfig()


class ModelConfig(_Strict):
    """The model: a zoo architecture to train, or your own with a checkpoint to load."""

    name: str = Field(
        "basic-cnn",
        description="a zoo name (`auditclf list`), or package.module:factory, "
        "or path/to/file.py:factory",
    )
    checkpoint: Path | None = Field(
        None, description=".safetensors or a .pt/.pth state dict; none = train one"
    )
    trust_checkpoint: bool = Field(
        False, description="allow pickled models and TorchScript, which run code when loaded"
    )
    weights: Path | None = Field(
        None,
        description="a local file of pretrained weights (torchvision's published state dict, "
        ".pth or .safetensors; never downloaded) to fine-tune from; the classification head is "
        "replaced for the data's classes",
    )
    target_layer: str | None = Field(
        None, description="conv layer (or ViT patch grid) for Grad-CAM; default the last"
    )
    mean: list[float] | None = Field(None, description="input normalisation, in [0, 1] units")
    std: list[float] | None = Field(
        None, description="input normalisation std per channel, in [0, 1] units (with mean)"
    )

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(s <= 0 for s in value):
            raise ValueError("every std must be > 0")
        return value

    @model_validator(mode="after")
    def _weights_or_checkpoint(self) -> ModelConfig:
        if self.weights is not None and self.checkpoint is not None:
            raise ValueError(
                "give model.weights (pretrained weights to fine-tune) or model.checkpoint "
                "(a model to audit as it is), not both"
            )
        return self


class TrainConfig(_Strict):
    """Training of the model when no checkpoint is given (Adam, early stopping on val loss)."""

    epochs: int = Field(12, ge=1, description="passes over the training split (upper bound)")
    batch_size: int = Field(64, ge=1, description="images per training step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty of Adam (weight_decay)")
    augment: bool = Field(True, description="small rotation, scale, translation (+flip if valid)")
    hflip: bool | None = Field(
        None,
        description="mirror half the training images; default: only for sets where a "
        "mirrored image keeps its class (shapes, FashionMNIST, CIFAR-10), never for digits",
    )
    class_weighted: bool = Field(False, description="weight the loss by inverse class frequency")
    oversample: bool = Field(False, description="sample training images class-balanced")
    patience: int = Field(3, ge=1, description="epochs without val-loss improvement before stop")
    freeze_backbone: bool = Field(
        False,
        description="train the classification head (the last linear layer) alone; the rest "
        "keeps its weights, and its BatchNorm layers their running statistics (eval mode)",
    )


class AnalysisConfig(_Strict):
    """Settings of the analyses over the sample table (intervals, calibration, top-k)."""

    ece_bins: int = Field(15, ge=2, description="equal-width confidence bins for ECE and MCE")
    bootstrap: int = Field(
        1000, ge=0, description="draws for the balanced-accuracy, worst-class and ECE intervals"
    )
    confidence_level: float = Field(
        0.95, gt=0.5, lt=1, description="coverage of every confidence interval (0.95 = 95%)"
    )
    top_k: list[int] = Field([2, 3], description="k values for top-k accuracy")
    imbalance_threshold: float = Field(
        3.0, ge=1, description="largest/smallest class count ratio that raises a finding"
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="test images moved to the device at a time by the clean probe; null = the "
        "device's default (256 on CPU, 2048 on CUDA); no number depends on it (the model sees "
        "passes of a fixed size)",
    )


def parse_eps(value: object) -> float:
    """An eps in [0, 1] pixel units, written as a number (0.1) or a fraction (8/255)."""
    if isinstance(value, bool):
        raise ValueError("must be a number such as 0.1 or a fraction such as 8/255")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9.eE+-]+\s*(/\s*[0-9.eE+-]+\s*)?", value):
        top, _, bottom = value.partition("/")
        try:
            number = float(top) / float(bottom) if bottom else float(top)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a number or a fraction") from None
    else:
        raise ValueError(f"{value!r} is not a number such as 0.1 or a fraction such as 8/255")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{value!r} must be a positive number")
    return number


def parse_linf_eps(value: object) -> float:
    """An L∞ eps: in (0, 1], since pixels are in [0, 1] and a larger radius allows any image.

    An eps above 1 is most often one meant on the 0-255 scale (8 for 8/255), so the
    message says what it would be there.
    """
    number = parse_eps(value)
    if number > 1:
        hint = f"; {number:g}/255 (= {number / 255:.4g}) was probably meant"
        if isinstance(value, str) and "/" in value:  # already a fraction: no scale to suggest
            hint = ""
        raise ValueError(f"{value!r} is above 1, but pixels are in [0, 1]{hint}")
    return number


def eps_label(value: object) -> str:
    """How an eps is written in metric keys: a fraction as given ("8/255"), else "%g"."""
    if isinstance(value, str) and "/" in value:
        top, _, bottom = value.partition("/")
        return f"{top.strip()}/{bottom.strip()}"
    return f"{parse_eps(value):g}"


EpsValue = float | str


def _check_radii(
    values: list[EpsValue] | None, parse: Callable[[object], float]
) -> list[EpsValue] | None:
    if values is not None:
        if not values:
            raise ValueError("give at least one radius")
        for value in values:
            parse(value)
    return values


ATTACK_NAMES = names("attack")  # the registered attacks, in catalogue order
ATTRIBUTION_NAMES = names("attribution")
CORRUPTION_NAMES = names("corruption")

# What each ``robustness.preset`` sets, for the keys a config leaves out or sets to null.
# "default": a cheap grid of six attacks, not comparable with published numbers.
# "autoattack": AutoAttack's standard version as RobustBench reports it (Croce & Hein 2020,
# fra31/auto-attack's ``version='standard'``): APGD-CE, APGD-T and FAB-T with 100 iterations
# each, Square with 5,000 queries, one restart. torchattacks' own ``AutoAttack`` class leaves
# the iterations at its classes' default of 10 and always targets 9 classes; the reference
# implementation's 100 iterations are what published numbers used.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "attacks": ("fgsm", "pgd_linf", "pgd_l2", "apgd_ce", "apgd_dlr", "square"),
        "steps": 10,
        "square_queries": 300,
    },
    "autoattack": {
        "attacks": ("apgd_ce", "apgd_t", "fab_t", "square"),
        "steps": 100,
        "square_queries": 5000,
    },
}
AUTOATTACK_TARGETS = 9  # target classes of APGD-T and FAB-T (fewer when the model has fewer)


def preset_note(robustness: dict[str, Any]) -> str:
    """The report's sentence on the preset a run used (``robustness`` is the run's
    ``robustness`` config as a dict), naming the values the config set against it."""
    preset = robustness.get("preset", "default")
    expected = {**PRESETS[preset], **({"restarts": 1} if preset == "autoattack" else {})}
    changed = [
        f"{key} {_shown(robustness[key])} (preset: {_shown(value)})"
        for key, value in expected.items()
        if key in robustness and _shown(robustness[key]) != _shown(value)
    ]
    if preset == "default":
        text = (
            "Preset default: cheaper than AutoAttack's standard version (fewer iterations and "
            "queries, no targeted attacks); these numbers are not comparable with RobustBench."
        )
    else:
        text = (
            "Preset autoattack: AutoAttack's standard version as RobustBench reports it "
            "(Croce & Hein 2020): APGD-CE, APGD-T and FAB-T (up to "
            f"{AUTOATTACK_TARGETS} target classes) with 100 iterations, Square with 5,000 "
            "queries, 1 restart, each attack run on its own; RobustBench reports one radius: "
            "compare the number at that radius."
        )
    return text + (f" Set by this config: {'; '.join(changed)}." if changed else "")


def _shown(value: Any) -> str:
    return f"[{', '.join(value)}]" if isinstance(value, list | tuple) else f"{value:,}"


class RobustnessConfig(_Strict):
    """Adversarial attacks (torchattacks). eps is in [0, 1] pixel units: 0.1 or 8/255."""

    enabled: bool = Field(True, description="run the attacks and their sanity checks")
    preset: Literal["default", "autoattack"] = Field(
        "default",
        description="what attacks, steps and square_queries are when left null: default (6 "
        "attacks, 10 steps, 300 queries; cheaper than AutoAttack, numbers not comparable "
        "with RobustBench) or autoattack (AutoAttack standard: apgd_ce, apgd_t, fab_t, "
        "square; 100 steps; 5,000 queries); a value set here wins over the preset",
    )
    attacks: list[Literal[ATTACK_NAMES]] | None = Field(  # type: ignore[valid-type]
        None, description="attacks to run (torchattacks); null = the preset's"
    )
    eps_linf: list[EpsValue] | None = Field(
        None,
        description="L∞ radii, each in (0, 1]; default 0.05, 0.1, 0.2, 0.3 (grayscale) or "
        "2/255, 4/255, 8/255, 16/255 (RGB)",
    )
    eps_l2: list[EpsValue] | None = Field(
        None, description="L2 radii (> 0); default 0.5, 1, 2, 3 (grayscale) or 0.25, 0.5, 1 (RGB)"
    )
    steps: int | None = Field(
        None,
        ge=1,
        description="iterations of PGD, APGD, APGD-T and FAB-T; null = the preset's (10, or "
        "100 with autoattack)",
    )
    step_size: float | None = Field(
        None, gt=0, description="PGD step as a multiple of eps; default 2.5 / steps (Madry)"
    )
    restarts: int = Field(1, ge=1, description="random restarts of PGD and APGD")
    random_start: bool = Field(True, description="PGD starts at a random point in the eps ball")
    samples: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None,
        description="test images attacked (stratified subset); 'all' = every test image; null = "
        "the device's default (300 on CPU, every test image up to 10,000 on CUDA)",
    )
    square_samples: int | None = Field(
        None,
        ge=1,
        description="images for the black-box Square check; null = the device's default "
        "(100 on CPU, 1,000 on CUDA)",
    )
    square_queries: int | None = Field(
        None,
        ge=1,
        description="queries per image for Square; null = the preset's (300, or 5,000 with "
        "autoattack)",
    )
    large_eps: EpsValue = Field(
        0.5, description="L∞ radius in (0, 1] at which accuracy must reach chance"
    )
    min_eps_samples: int | None = Field(
        None,
        ge=0,
        description="images whose minimal L∞ perturbation is bisected; 0 disables; null = the "
        "device's default (100 on CPU, 1,000 on CUDA)",
    )
    min_eps_iterations: int = Field(10, ge=1, description="bisection steps (tolerance halves)")
    gallery_per_class: int = Field(
        2, ge=0, description="adversarial examples shown per class in the report"
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="images attacked together (memory; halved on a GPU out-of-memory error); "
        "null = the device's default (128 on CPU, 512 on CUDA); no number depends on it: "
        "randomness is drawn per image and the model sees passes of a fixed size",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """The preset's attacks, steps and square_queries where the config left them null."""
        if not isinstance(data, dict) or data.get("preset", "default") not in PRESETS:
            return data  # not a mapping, or an unknown preset: the field checks say so
        preset = PRESETS[data.get("preset", "default")]
        return data | {key: value for key, value in preset.items() if data.get(key) is None}

    @field_validator("eps_linf")
    @classmethod
    def _valid_linf_radii(cls, values: list[EpsValue] | None) -> list[EpsValue] | None:
        return _check_radii(values, parse_linf_eps)

    @field_validator("eps_l2")
    @classmethod
    def _valid_l2_radii(cls, values: list[EpsValue] | None) -> list[EpsValue] | None:
        # An L2 radius may exceed 1: a whole image's L2 norm reaches sqrt(pixels).
        return _check_radii(values, parse_eps)

    @field_validator("large_eps")
    @classmethod
    def _valid_large(cls, value: EpsValue) -> EpsValue:
        parse_linf_eps(value)
        return value


class CorruptionConfig(_Strict):
    """Common corruptions (natural variability) at five severities; the table of what each
    severity means, in [0, 1] pixel units, is in the README and the report."""

    enabled: bool = Field(True, description="run the corruption probe and its sanity checks")
    names: list[Literal[CORRUPTION_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CORRUPTION_NAMES),
        min_length=1,
        description="corruptions to apply (default: all 15)",
    )
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5],
        min_length=1,
        description="severities to apply, each 1 (mild) to 5 (severe)",
    )
    samples: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None,
        description="test images corrupted (stratified subset); 'all' = every test image; "
        "null = the device's default (500 on CPU, 10,000 on CUDA)",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="images corrupted together (memory; halved on a GPU out-of-memory error); "
        "null = the device's default (128 on CPU, 512 on CUDA); no number depends on it",
    )
    gallery: bool = Field(True, description="show one image per corruption at severities 1, 3, 5")

    @field_validator("names", "severities")
    @classmethod
    def _distinct(cls, values: list) -> list:
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"listed twice: {', '.join(repeated)}")
        return values

    @field_validator("severities")
    @classmethod
    def _ascending(cls, values: list[int]) -> list[int]:
        return sorted(values)


class HardenConfig(_Strict):
    """Retraining the audit puts beside the baseline: adversarial, PGD-AT (Madry et al. 2018)
    or FGSM-RS (Wong et al. 2020), or against corruptions, AugMix (Hendrycks et al. 2020).

    ``eps``, ``steps`` and ``step_size`` act on pgd and fgsm-rs, the ``augmix_*``
    fields on augmix; ``epochs``, ``lr`` and ``from_scratch`` on all.
    """

    method: Literal["none", "pgd", "fgsm-rs", "augmix"] = Field(
        "pgd",
        description="pgd (PGD-AT), fgsm-rs (FGSM with random start), augmix (AugMix with its "
        "Jensen-Shannon consistency loss), or none",
    )
    eps: EpsValue | None = Field(
        None, description="L∞ training radius in (0, 1]; default 0.1 / 8/255"
    )
    steps: int = Field(7, ge=1, description="PGD steps per training batch (pgd only)")
    step_size: float | None = Field(
        None, gt=0, description="as a multiple of eps; default 2.5/steps (pgd), 1.25 (fgsm-rs)"
    )
    epochs: int = Field(3, ge=1, description="passes over the training split while hardening")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
    from_scratch: bool = Field(False, description="train from random init, not the baseline")
    augmix_severity: int = Field(
        3,
        ge=1,
        le=10,
        description="AugMix op strength, 1-10: each op's magnitude is drawn from the first "
        "`severity` of 10 levels (3: rotation up to 6.7 degrees, shear up to 0.067)",
    )
    augmix_width: int = Field(3, ge=1, description="AugMix chains mixed into each image")
    augmix_depth: int = Field(
        -1, ge=-1, description="ops per AugMix chain; -1 draws 1 to 3 per chain"
    )
    augmix_alpha: float = Field(
        1.0, gt=0, description="Dirichlet/Beta concentration of AugMix's mixing weights"
    )
    augmix_jsd: float = Field(
        12.0,
        ge=0,
        description="weight of the Jensen-Shannon consistency term (clean and two AugMix "
        "views); 0 trains on one AugMix view with plain cross-entropy",
    )
    augmix_all_ops: bool = Field(
        False,
        description="also brightness, contrast, colour and sharpness ops; off as in the paper, "
        "since they overlap the corruptions the audit measures",
    )
    augmix_group: int = Field(
        8, ge=1, description="images sharing one AugMix op chain (their mixing weights differ)"
    )

    @field_validator("augmix_depth")
    @classmethod
    def _valid_depth(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (1 to 3 per chain, drawn) or at least 1")
        return value

    @field_validator("eps")
    @classmethod
    def _valid_eps(cls, value: EpsValue | None) -> EpsValue | None:
        if value is not None:
            parse_linf_eps(value)
        return value


class ExplainConfig(_Strict):
    """Attributions (captum: Grad-CAM, Integrated Gradients, LIME) with faithfulness,
    sanity, stability, localisation and shortcut scores."""

    enabled: bool = Field(True, description="compute attribution maps and their scores")
    methods: list[Literal[ATTRIBUTION_NAMES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(ATTRIBUTION_NAMES),
        description="attribution methods (captum)",
    )
    lime_samples: int = Field(500, ge=10, description="perturbed images per LIME explanation")
    correct_per_class: int | None = Field(
        None,
        ge=0,
        description="most confident correct predictions per class; null = the device's default "
        "(2 on CPU, 10 on CUDA)",
    )
    errors_per_class: int | None = Field(
        None,
        ge=0,
        description="most confident errors per class; null = the device's default (1 on CPU, 5 "
        "on CUDA)",
    )
    ig_steps: int = Field(32, ge=2, description="Integrated Gradients path steps")
    curve_steps: int = Field(20, ge=2, description="points of the deletion/insertion curves")
    randomized_layers: int = Field(
        2, ge=1, description="top parametrised layers re-initialised for the sanity check"
    )
    noise_std: float = Field(
        0.02, gt=0, le=0.5, description="std of the stability check's Gaussian noise, [0,1] units"
    )
    top_fraction: float = Field(
        0.1, gt=0, le=1, description="share of pixels compared by the top-k overlap"
    )
    all_models: bool = Field(
        False, description="explain the hardened/rebalanced models too, not only the baseline"
    )


class FairnessConfig(_Strict):
    """Subgroup audit over the data's group attributes (fairlearn MetricFrame).

    Attributes come from a CSV manifest's extra columns, a ``metadata`` CSV, or
    the built-in ones (``stroke`` and ``slant`` for digit sets, ``background``
    for shapes).
    """

    enabled: bool = Field(True, description="audit every group of the audited attributes")
    groups: list[str] | None = Field(
        None, description="attributes to audit; null = every attribute the data has"
    )
    intersect: bool = Field(
        False, description="also audit the intersection of the audited attributes"
    )
    min_group_size: int = Field(
        30,
        ge=1,
        description="test images a group needs; smaller groups are 'insufficient data' "
        "and left out of min, max, difference and ratio",
    )
    n_boot: int = Field(
        200, ge=0, description="bootstrap draws for the intervals of the group differences"
    )
    metadata: Path | None = Field(
        None,
        description="CSV of per-image attributes, joined to the images on a `path` "
        "(relative path) or `id` column",
    )
    rebalance: str | None = Field(
        None,
        description="retrain with group-balanced sampling over this attribute and audit "
        "the result beside the baseline",
    )

    @field_validator("groups")
    @classmethod
    def _some_groups(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value or any(not name.strip() for name in value):
                raise ValueError("name at least one attribute, without empty names")
            if len(set(value)) != len(value):
                raise ValueError("an attribute is named twice")
        return value

    @model_validator(mode="after")
    def _intersect_needs_two(self) -> FairnessConfig:
        if self.intersect and self.groups is not None and len(self.groups) < 2:
            raise ValueError("intersect needs at least two attributes in groups")
        return self


class ShiftConfig(_Strict):
    """A second test set from another source (another scanner, site or camera), audited
    whole beside the test split: its accuracy, calibration, per-class and per-group numbers,
    and the gap to the test accuracy (keys ``shift.<name>.*``)."""

    dataset: str | None = Field(
        None,
        description="a built-in name, a folder or a CSV manifest with exactly the audited "
        "data's classes (never trained on); null = no shift set",
    )
    name: str | None = Field(
        None,
        description="its name in the keys (shift.<name>.accuracy); default: the folder's or "
        "file's name (a built-in set's own), as a key part",
    )
    metadata: Path | None = Field(
        None,
        description="CSV of the shift set's per-image attributes, as fairness.metadata "
        "(a `path` or `id` column)",
    )

    @field_validator("name")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("give a non-empty name, or null for the dataset's own")
        return value

    @model_validator(mode="after")
    def _metadata_needs_dataset(self) -> ShiftConfig:
        if self.dataset is None and (self.metadata is not None or self.name is not None):
            raise ValueError("shift.name and shift.metadata need shift.dataset")
        return self


class ExportConfig(_Strict):
    """What ships: the audited model exported (ONNX, TorchScript, int8 ONNX) to
    ``<out>/export/``, each file audited through its own runtime for parity with the PyTorch
    model, accuracy, calibration, latency and size (keys ``deploy.<format>.*``)."""

    formats: list[Literal["onnx", "torchscript", "onnx-int8"]] = Field(
        default_factory=list, description="formats to export and audit; [] = none"
    )
    which: Literal["baseline", "hardened", "rebalanced"] = Field(
        "baseline", description="the audited model that is exported"
    )
    calibration_images: int = Field(
        200,
        ge=0,
        description="training images calibrating int8 static quantization; 0 = dynamic "
        "quantization (weights only)",
    )
    latency_repeats: int = Field(
        50, ge=1, description="timed batch-1 passes (after warm-up) for the latency percentiles"
    )


class ReportConfig(_Strict):
    """The report's look: templates and title."""

    templates: Path | None = Field(None, description="a folder of jinja2 templates to use instead")
    title: str | None = Field(None, description="page title; default: architecture on dataset")


class CardConfig(_Strict):
    """What the model card says that no audit can measure: what the model is for and who
    answers for it. Each is shown as written (escaped) in model_card.md and report.html;
    one left out reads "not stated"."""

    intended_use: str | None = Field(
        None, description="the uses the model is meant for (users, setting, inputs)"
    )
    out_of_scope: str | None = Field(
        None, description="uses the model is not meant for, or was not audited for"
    )
    owners: list[str] = Field(
        default_factory=list, description="people or teams who answer for the model"
    )
    license: str | None = Field(None, description="the model's licence")
    contact: str | None = Field(None, description="where to send questions or problems")


class DistributedConfig(_Strict):
    """Runs under torchrun (``torchrun --nproc-per-node N -m auditclf run``): how long a
    process waits for the others where they meet."""

    timeout: float = Field(
        1800,
        gt=0,
        description="seconds a process waits for the others where they meet (a gather of "
        "the probes' rows, rank 0's analyses); past it, every process still there exits 6",
    )


class GateSpec(_Strict):
    """A gate in mapping form: `metric`, then `min` and/or `max` (both: a range), and options."""

    metric: str = Field(description="metric key, e.g. performance.accuracy (README: key table)")
    min: float | None = Field(None, description="pass when the metric is >= min")
    max: float | None = Field(None, description="pass when the metric is <= max")
    severity: Literal["fail", "warn"] = Field(
        "fail", description="warn: a failure is reported but does not fail the run"
    )
    on: Literal["value", "lower_ci", "upper_ci"] = Field(
        "value", description="compare the point estimate or a bound of its confidence interval"
    )
    missing: Literal["fail", "pass"] = Field(
        "fail", description="what a null (undefined) metric does to the gate"
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, raw: Any) -> Any:
        # YAML 1.1 (PyYAML) reads a bare `on:` key as the boolean true.
        if isinstance(raw, dict) and True in raw:
            raw = {("on" if key is True else key): value for key, value in raw.items()}
        return raw

    @model_validator(mode="after")
    def _has_a_bound(self) -> GateSpec:
        if self.min is None and self.max is None:
            raise ValueError("give min or max (or both)")
        return self


def _gate_form(raw: Any) -> str:
    return "mapping" if isinstance(raw, (dict, GateSpec)) else "expression"


GateEntry = Annotated[
    Annotated[str, Tag("expression")] | Annotated[GateSpec, Tag("mapping")],
    Discriminator(_gate_form),
]


class RegressionConfig(_Strict):
    """Baseline regression: fail when a metric got worse than in an earlier report.json."""

    baseline: Path | None = Field(
        None, description="an earlier run's report.json to compare with (--baseline)"
    )
    max_drop: float = Field(
        0.01,
        ge=0,
        description="largest allowed worsening, in the metric's own units (0.01 = one "
        "accuracy point), for the headline metrics (README: baseline regression)",
    )
    tolerances: dict[str, float] = Field(
        default_factory=dict,
        description="per-key (or fnmatch pattern) tolerances, e.g. {performance.accuracy: "
        "0.005}; a key named here is compared even outside the headline metrics",
    )

    @field_validator("tolerances")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for key, tolerance in value.items():
            if tolerance < 0:
                raise ValueError(f"tolerance of {key!r} must be >= 0")
        return value


MAX_SEED = 2**32 - 1


class AuditConfig(_Strict):
    """One audit run: every section below, with flags overriding the file."""

    seed: int = Field(
        0, description=f"every random choice derives from it; 0 to {MAX_SEED} (2**32 - 1)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when available, else cpu"
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU compute threads; null = the CPUs this process may use (its CPU "
        "affinity, capped by its cgroup CPU quota)",
    )
    out: Path = Field(Path("audit-report"), description="folder the report files are written to")
    unsafe_load: Literal["allow", "forbid"] = Field(
        "allow",
        description="forbid: refuse (exit 4) a checkpoint that would have to be unpickled "
        "(whole model, TorchScript), even with --trust-checkpoint; auditclf gate refuses a "
        "report whose run did",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    analyses: AnalysisConfig = AnalysisConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    corruptions: CorruptionConfig = CorruptionConfig()
    harden: HardenConfig = HardenConfig()
    explain: ExplainConfig = ExplainConfig()
    fairness: FairnessConfig = FairnessConfig()
    shift: ShiftConfig = ShiftConfig()
    export: ExportConfig = ExportConfig()
    report: ReportConfig = ReportConfig()
    card: CardConfig = CardConfig()
    regression: RegressionConfig = RegressionConfig()
    distributed: DistributedConfig = DistributedConfig()
    gates: list[GateEntry] = Field(
        default_factory=list,
        description="thresholds that decide the exit code: strings 'KEY OP VALUE' (OP one of "
        ">= > <= < ==) or mappings (fields below)",
    )

    @field_validator("seed")
    @classmethod
    def _seed_in_range(cls, value: int) -> int:
        if not 0 <= value <= MAX_SEED:
            raise ValueError(
                f"{value} is outside 0 to {MAX_SEED} (2**32 - 1), the seeds NumPy and "
                "scikit-learn accept"
            )
        return value

    @model_validator(mode="after")
    def _exported_model_is_audited(self) -> AuditConfig:
        audited = {
            "baseline": True,
            "hardened": self.harden.method != "none",
            "rebalanced": bool(self.fairness.rebalance),
        }
        if self.export.formats and not audited[self.export.which]:
            needs = "harden.method" if self.export.which == "hardened" else "fairness.rebalance"
            raise ValueError(
                f"export.which is {self.export.which!r}, a model this run does not audit "
                f"(set {needs}, or export the baseline)"
            )
        return self


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _closest_key(loc: tuple) -> str:
    """'; did you mean X?' for a misspelt key, from the fields of the model at ``loc``."""
    model: type[BaseModel] = AuditConfig
    parts = loc[:-1]
    if parts[:1] == ("gates",):  # gates.N.<field>: a gate in mapping form
        model, parts = GateSpec, ()
    for part in parts:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# Parts of a pydantic error location that name a union member, not a config key.
_UNION_TAGS = {"expression", "mapping", "float", "str", "int", "bool"}


def _describe(error: ValidationError, source: str) -> str:
    """One line per wrong key ("source: key: message"), every mistake of the config at once.

    A value that fits no member of a union (eps: float | str) fails once per member; the
    first member's message stands for the key.
    """
    lines: dict[str, str] = {}
    for problem in error.errors():
        loc = tuple(p for p in problem["loc"] if p not in _UNION_TAGS and "[" not in str(p))
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")  # our validators' own words
        if problem["type"] == "extra_forbidden":
            message = "unknown key" + _closest_key(loc)
        lines.setdefault(key, f"{source}: {key}: {message}")
    return "\n".join(lines.values())


def _utf8_error(path: Path, data: bytes, exc: UnicodeDecodeError) -> UsageError:
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return UsageError(
        f"{path}: line {line}, byte {column}: not UTF-8 (byte 0x{data[exc.start]:02x}); "
        "save the config as UTF-8"
    )


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> UsageError:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problem = f"character #x{code:04x}: {exc.reason}"
    else:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" line {line}:" if line else ""
    return UsageError(f"{path}:{where} not valid YAML ({problem})")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, non-UTF-8 or bad YAML file is a usage
    error naming it (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such config file")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
        loaded = yaml.safe_load(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise _utf8_error(path, data, exc) from None
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(
            f"{path}: the config must be a mapping of keys, not {type(loaded).__name__}"
        )
    return loaded


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> AuditConfig:
    """Build the run's config: defaults < YAML file < flags."""
    raw = read_yaml(path) if path is not None else {}
    raw = _merge(raw, overrides or {})
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as exc:
        source = str(path) if path is not None else "config"
        raise UsageError(_describe(exc, source)) from None


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> AuditConfig:
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(_describe(exc, source)) from None
