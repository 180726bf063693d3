"""run_audit(config) -> AuditResult: config → data → model → probes → table → analyses.

Nothing else lives here: each step is a call into its package.
"""

from __future__ import annotations

import copy
import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import pandas as pd
import torch

from auditclf import __version__
from auditclf.analyses import AnalysisContext, run_analyses
from auditclf.compare import load_baseline
from auditclf.config import AuditConfig, eps_label, parse_eps
from auditclf.data import PreparedData, prepare_data
from auditclf.data.attributes import audited_attributes, check_attributes
from auditclf.device_defaults import describe_defaults, for_device, forward_chunk
from auditclf.errors import UsageError
from auditclf.evidence import ATTR_PREFIX, PROBA_PREFIX, new_table
from auditclf.gates import check_gate_keys, gates_from_config, judge
from auditclf.keys import model_key
from auditclf.models import (
    ModelAdapter,
    PreparedModel,
    initial_network,
    prepare_model,
    wrap_module,
)
from auditclf.probes import PROBES, ProbeContext
from auditclf.probes.attacks import REFERENCE_EPS, stand_in_columns, training_attack
from auditclf.probes.attributions import stand_in_artifacts as explain_stand_in
from auditclf.results import AuditResult, ModelResult
from auditclf.seeding import derive_seed, seed_everything
from auditclf.train import TrainHistory, train_classifier
from auditclf.train.standard import group_balanced_weights

ENGINES = (
    "torch",
    "torchvision",
    "torchattacks",
    "captum",
    "fairlearn",
    "scikit-learn",
    "numpy",
    "pandas",
    "jinja2",
    "matplotlib",
    "pillow",
)


@dataclass
class PhaseTimer:
    """Wall-clock seconds per named phase of the run."""

    durations: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.durations[name] = self.durations.get(name, 0.0) + time.perf_counter() - started


@dataclass
class AuditOutcome:
    """The result plus what the writers need beside it: the table and trained models."""

    result: AuditResult
    samples: pd.DataFrame
    models: dict[str, PreparedModel]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use auto or cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _versions() -> dict[str, str]:
    found = {"auditclf": __version__, "python": platform.python_version()}
    for name in ENGINES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _device_info(device: torch.device) -> dict:
    info = {
        "type": device.type,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    return info


def hflip_allowed(config: AuditConfig, data: PreparedData) -> bool:
    return data.imageset.hflip_ok if config.train.hflip is None else config.train.hflip


def _train(adapter, train, data, config, device, progress, sample_weights=None):
    """The run's standard training of ``adapter`` on ``train`` (validation on the val split)."""
    return train_classifier(
        adapter,
        train,
        data.view("val"),
        config.train,
        num_classes=len(data.classes),
        seed=config.seed,
        device=device,
        hflip_ok=hflip_allowed(config, data),
        progress=progress,
        sample_weights=sample_weights,
    )


def build_model(
    config: AuditConfig,
    data: PreparedData,
    device: torch.device,
    *,
    progress: bool,
    timer: PhaseTimer,
    module: torch.nn.Module | None = None,
) -> tuple[PreparedModel, TrainHistory | None]:
    """Load the configured checkpoint, or build and train the configured architecture
    (or wrap ``module``, a network passed in memory)."""
    with timer.phase("model"):
        train = data.view("train")
        if module is not None:
            prepared = wrap_module(
                module, config.model, classes=data.classes, input_shape=data.input_shape
            )
        else:
            prepared = prepare_model(
                config.model,
                classes=data.classes,
                input_shape=data.input_shape,
                train_images=train.images,
                data_hash=data.summary["hash"],
                seed=config.seed,
                forbid_unsafe=config.unsafe_load == "forbid",
            )
    history = None
    if prepared.needs_training:
        with timer.phase("train"):
            history = _train(prepared.adapter, train, data, config, device, progress)
        prepared.spec["training"] = {
            **config.train.model_dump(mode="json"),
            "best_epoch": history.best_epoch,
            "epochs_run": len(history.epochs),
        }
    prepared.adapter.to(device).eval()
    return prepared, history


def probe(
    prepared: PreparedModel,
    data: PreparedData,
    config: AuditConfig,
    device: torch.device,
    name: str,
) -> tuple[pd.DataFrame, dict]:
    """Run every registered probe over the test split → (the model's sample table, artifacts)."""
    test = data.view("test")
    table = new_table(name, test.ids, test.labels, data.classes, test.attributes)
    ctx = ProbeContext(
        model=prepared.adapter,
        test=test,
        classes=data.classes,
        device=device,
        seed=config.seed,
        batch_size=config.analyses.batch_size,
        chunk=forward_chunk(device.type),
        robustness=config.robustness,
        explain=config.explain if name == "baseline" or config.explain.all_models else None,
    )
    for entry in PROBES:
        table = entry.obj(ctx, table)
    return table, ctx.artifacts


def analyse(
    table: pd.DataFrame,
    config: AuditConfig,
    data_summary: dict,
    artifacts: dict,
    *,
    debug: bool = False,
) -> tuple[list, dict, dict, list]:
    """Analyses over one model's rows → (sections, metrics, notes, findings)."""
    ctx = AnalysisContext(
        classes=data_summary["classes"],
        config=config.analyses,
        seed=config.seed,
        data_summary=data_summary,
        artifacts=artifacts,
        robustness=config.robustness.model_dump(mode="json"),
        fairness=config.fairness.model_dump(mode="json"),
    )
    sections = run_analyses(table, ctx, debug=debug)
    metrics, notes, findings = {}, {}, []
    for section in sections:
        metrics.update(section.metrics)
        notes.update(section.notes)
        findings.extend(f.__dict__ for f in section.findings)
    return [s.to_dict() for s in sections], metrics, notes, findings


def training_findings(history: TrainHistory, max_epochs: int) -> list[dict]:
    """Plain-words notes on how training ended (still improving at the epoch limit)."""
    # Early stopping did not fire: the validation loss improved within the last `patience`
    # epochs, so training ended while the model was still getting better.
    has_val = any(math.isfinite(e["val_loss"]) for e in history.epochs)
    if history.stopped_early or len(history.epochs) < max_epochs or not has_val:
        return []
    message = (
        f"training ended at the epoch limit ({max_epochs}) while the validation loss was "
        f"still improving (best at epoch {history.best_epoch}): the model may be "
        "under-trained; raise train.epochs"
    )
    return [{"severity": "info", "section": "training", "metric": None, "message": message}]


def expected_metric_keys(config: AuditConfig, data_summary: dict) -> set[str]:
    """The metric keys a run will produce, from a dry run of the analyses.

    The key families (:mod:`auditclf.keys`) say how keys are spelt, not which
    classes, groups, attacks and eps a run has. The analyses are pure functions of
    the sample table, so running them on a stand-in table (every prediction right,
    uniform confidence; attack columns spelt by the keys module) yields exactly the
    keys of this run without the model.
    """
    classes = data_summary["classes"]
    attribute_values = data_summary.get("attribute_counts", {}).get("test", {})
    rows = max([2 * len(classes), 10, *map(len, attribute_values.values())])
    labels = np.arange(rows) % len(classes)
    stand_in = pd.DataFrame(
        {
            "model": "dry-run",
            "sample_id": labels.astype(str),
            "label": labels,
            "label_name": np.asarray(classes)[labels],
            "pred": labels,
            "pred_name": np.asarray(classes)[labels],
            "correct": 1,
            "confidence": 1.0 / len(classes),
            "margin": 0.0,
        }
    )
    for k in range(len(classes)):
        stand_in[f"{PROBA_PREFIX}{k}"] = 1.0 / len(classes)
    for name, counts in attribute_values.items():  # every test group, so every group's keys
        values = list(counts)
        stand_in[f"{ATTR_PREFIX}{name}"] = [values[i % len(values)] for i in range(rows)]
    artifacts = {}
    if config.robustness.enabled:
        columns, artifacts["robustness"] = stand_in_columns(
            config.robustness, data_summary["input_shape"][0], len(classes), labels
        )
        stand_in = stand_in.assign(**columns)
    if config.explain.enabled:
        artifacts["explanations"] = explain_stand_in(
            config.explain,
            len(classes),
            has_masks=bool(data_summary.get("has_masks")),
            adversarial=config.robustness.enabled,
        )
    dry = config.model_copy(
        update={
            "analyses": config.analyses.model_copy(
                update={"bootstrap": min(config.analyses.bootstrap, 10)}
            ),
            "fairness": config.fairness.model_copy(
                update={"n_boot": min(config.fairness.n_boot, 10)}
            ),
        }
    )
    _, metrics, _, _ = analyse(stand_in, dry, data_summary, artifacts)
    keys = set(metrics)
    # explanations run on the baseline only unless explain.all_models
    retrained = [k for k in metrics if config.explain.all_models or not k.startswith("explain.")]
    if config.harden.method != "none":
        keys |= {model_key("hardened", key) for key in retrained}
    if config.fairness.rebalance:
        keys |= {model_key("rebalanced", key) for key in retrained}
    return keys


def limitations(data: dict, config: AuditConfig, artifacts: dict) -> list[dict]:
    """What this run did not check, and why; sample-size caveats."""
    items: list[dict] = []
    explained = artifacts.get("explanations")
    if not config.explain.enabled:
        items.insert(
            0,
            {
                "section": "Explanations",
                "reason": "explain.enabled is false in this run's configuration: no "
                "attribution maps, faithfulness, stability or shortcut checks",
            },
        )
    elif explained:
        scope = "every model" if config.explain.all_models else "the baseline model only"
        reason = (
            f"{len(explained['images'])} test images explained ({scope}): the per-class "
            "scores and shortcut verdicts rest on a few images per class"
        )
        if not explained.get("has_masks"):
            reason += (
                "; the data has no object masks, so localisation was not measured and the "
                "shortcut check looks at the image border only"
            )
        items.append({"section": "Explanations", "reason": reason})
    if not config.robustness.enabled:
        items.insert(
            0,
            {
                "section": "Robustness",
                "reason": "robustness.enabled is false in "
                "this run's configuration; no robustness claim is made",
            },
        )
    else:
        run = artifacts.get("robustness", {})
        items.append(
            {
                "section": "Attack strength",
                "reason": "robust accuracy is an upper "
                "bound: it holds against the attacks run here (steps, restarts, "
                f"{run.get('square_samples', 0)} images for Square), not against every "
                "attacker; L0, patch and physical attacks and common corruptions are not "
                "tested",
            }
        )
    items += fairness_limitations(data, config)
    test_count = data["split_counts"]["test"]
    per_class = min(data["class_distribution"]["test"].values())
    items.append(
        {
            "section": "Sample size",
            "reason": f"the test split has {test_count} images "
            f"(the smallest class {per_class}); per-class figures carry wide intervals",
        }
    )
    items.append({"section": "Test images", "reason": data["audited"]})
    if data["split_counts"]["train"] == 0:
        items.append(
            {
                "section": "Training data",
                "reason": "this run did not see the model's training data: had any of these "
                "images been training images, the test metrics would be optimistic",
            }
        )
    elif not data["split_given"]:
        items.append(
            {
                "section": "Distribution shift",
                "reason": "train and test come from one "
                "pool split at random; performance on data from elsewhere is not measured",
            }
        )
    return items


def device_limitations(device_counts: dict[str, int], device_type: str) -> list[dict]:
    """The counts the device chose (how many images were attacked and explained), so that a
    reviewer knows the coverage was a default and how to widen it."""
    text = describe_defaults(device_counts, device_type)
    return (
        [{"section": "Coverage", "reason": f"{text}; set them in the config to change"}]
        if (text)
        else []
    )


def trains(config: AuditConfig, module: torch.nn.Module | None = None) -> bool:
    """Whether the run trains anything: a model (no checkpoint, no module given), or a
    hardened or rebalanced copy; a run that trains nothing needs no train split."""
    given = config.model.checkpoint is not None or module is not None
    return not given or config.harden.method != "none" or bool(config.fairness.rebalance)


def fairness_limitations(data: dict, config: AuditConfig) -> list[dict]:
    """Why fairness was not checked, or which of its groups are too small to judge."""
    cfg = config.fairness
    if not cfg.enabled:
        return [{"section": "Fairness", "reason": "fairness.enabled is false: no subgroup audit"}]
    if not data.get("attributes"):
        return [
            {
                "section": "Fairness",
                "reason": "the data carries no group attributes (give a CSV manifest with "
                "attribute columns, or --metadata CSV for a folder); no subgroup was audited",
            }
        ]
    counts = data["attribute_counts"]["test"]
    audited = audited_attributes(cfg, data["attributes"])
    items = [
        {
            "section": "Groups audited",
            "reason": f"only the attributes the data records ({', '.join(audited)}); "
            "groups it does not record are not checked",
        }
    ]
    small = [
        f"{name} = {value} ({n})"
        for name in audited
        for value, n in counts[name].items()
        if n < cfg.min_group_size
    ]
    if small:
        items.append(
            {
                "section": "Small groups",
                "reason": f"{', '.join(small)} have fewer than {cfg.min_group_size} test "
                "images: their metrics are insufficient data, left out of every gap",
            }
        )
    return items


def rebalance(
    config: AuditConfig,
    data: PreparedData,
    baseline: PreparedModel,
    device: torch.device,
    *,
    progress: bool,
) -> tuple[PreparedModel, TrainHistory]:
    """Retrain the baseline's architecture with group-balanced sampling (``--rebalance-groups``).

    Same architecture, initialisation seed and training settings as the
    baseline; only the sampling differs: each epoch draws the training images
    with replacement, each with weight 1 / (images of its group), so every
    group of ``fairness.rebalance`` is drawn equally often.
    """
    attribute = config.fairness.rebalance
    if baseline.adapter.net.__class__.__name__ == baseline.spec["architecture"]:
        raise UsageError(
            "--rebalance-groups retrains from scratch and needs a rebuildable architecture; "
            "a whole pickled model cannot be rebuilt"
        )
    train = data.view("train")
    groups = train.attributes[attribute].to_numpy(dtype=str)
    torch.manual_seed(config.seed)  # the baseline's initialisation, when it was trained here
    net, pretrained = initial_network(
        config.model, baseline.spec["architecture"], baseline.spec["arguments"]
    )
    adapter = ModelAdapter(
        net, **baseline.spec["normalization"], target_layer=config.model.target_layer
    )
    counts = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    start = "random initialisation" if pretrained is None else pretrained["file"]
    spec = {
        **baseline.spec,
        "source": f"retrained from {start} with group-balanced sampling over "
        f"{attribute!r} ({len(counts)} groups, {config.train.epochs} epochs at most)",
        "rebalance": {
            "attribute": attribute,
            "train_counts": {k: int(n) for k, n in counts.items()},
        },
    }
    weights = group_balanced_weights(groups)
    history = _train(adapter, train, data, config, device, progress, sample_weights=weights)
    adapter.to(device).eval()
    return PreparedModel(adapter, spec, needs_training=True), history


def harden(
    config: AuditConfig,
    data: PreparedData,
    baseline: PreparedModel,
    device: torch.device,
    *,
    progress: bool,
) -> tuple[PreparedModel, TrainHistory]:
    """Adversarially retrain a copy of the baseline (or a fresh model) per ``config.harden``."""
    cfg = config.harden
    channels = data.input_shape[0]
    eps_text = (
        eps_label(cfg.eps) if cfg.eps is not None else REFERENCE_EPS[1 if channels == 1 else 3]
    )
    if cfg.from_scratch:
        if baseline.adapter.net.__class__.__name__ == baseline.spec["architecture"]:
            raise UsageError(
                "harden.from_scratch needs a rebuildable architecture; a whole "
                "pickled model can only be fine-tuned"
            )
        net, pretrained = initial_network(
            config.model, baseline.spec["architecture"], baseline.spec["arguments"]
        )
        adapter = ModelAdapter(
            net, **baseline.spec["normalization"], target_layer=config.model.target_layer
        )
        start = "random initialisation" if pretrained is None else pretrained["file"]
    else:
        adapter = copy.deepcopy(baseline.adapter)
        start = "the baseline's weights"
    spec = {
        **baseline.spec,
        "source": f"adversarially retrained ({cfg.method}, L∞ eps "
        f"{eps_text}, {cfg.epochs} epochs) from {start}",
        "hardening": {**cfg.model_dump(mode="json"), "eps": eps_text},
    }
    hardened = PreparedModel(adapter, spec, needs_training=True)
    adapter.to(device)
    perturb = training_attack(
        cfg.method,
        adapter,
        parse_eps(eps_text),
        steps=cfg.steps,
        step_size=cfg.step_size,
        seed=config.seed,
        device=device,
    )
    train_cfg = config.train.model_copy(update={"epochs": cfg.epochs, "lr": cfg.lr})
    history = train_classifier(
        adapter,
        data.view("train"),
        data.view("val"),
        train_cfg,
        num_classes=len(data.classes),
        seed=derive_seed(config.seed, "harden"),
        device=device,
        hflip_ok=hflip_allowed(config, data),
        progress=progress,
        perturb=perturb,
        keep_last=True,
    )
    adapter.to(device).eval()
    return hardened, history


def audit_model(
    name: str,
    prepared: PreparedModel,
    history: TrainHistory | None,
    data: PreparedData,
    config: AuditConfig,
    device: torch.device,
    timer: PhaseTimer,
    *,
    debug: bool,
) -> tuple[ModelResult, pd.DataFrame]:
    """Probes then analyses for one model → its result and its rows of the sample table."""
    config = for_device(config, device.type)[0]  # a no-op for run_audit's, resolved already
    with timer.phase("probes"):
        table, artifacts = probe(prepared, data, config, device, name)
    with timer.phase("analyses"):
        sections, metrics, notes, findings = analyse(
            table, config, data.summary, artifacts, debug=debug
        )
    findings = prepared.findings + findings
    if history is not None and name == "baseline":
        findings.extend(training_findings(history, config.train.epochs))
    result = ModelResult(
        card=prepared.card(),
        metrics=metrics,
        notes=notes,
        findings=findings,
        sections=sections,
        artifacts=artifacts,
        training=history.to_dict() if history else None,
    )
    return result, table


def run_audit(
    config: AuditConfig,
    *,
    progress: bool = True,
    debug: bool = False,
    module: torch.nn.Module | None = None,
) -> AuditOutcome:
    """Run the whole audit described by ``config`` (of ``module`` when given, a network
    in memory, instead of the configured model); nothing is written here."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    timer = PhaseTimer()
    gates = gates_from_config(config.gates)
    regression = config.regression
    baseline_check = load_baseline(regression.baseline, regression.max_drop, regression.tolerances)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    config, device_counts = for_device(config, device.type)
    with timer.phase("data"):
        data = prepare_data(
            config.data,
            seed=config.seed,
            metadata=config.fairness.metadata,
            trains=trains(config, module),
        )
    if config.fairness.enabled or config.fairness.rebalance:
        check_attributes(config.fairness, data.summary)
    tolerances = baseline_check.tolerances.per_key if baseline_check else {}
    if gates or tolerances:  # before training, so a typo costs seconds, not a training run
        expected = expected_metric_keys(config, data.summary)
        check_gate_keys(gates, expected)
        if baseline_check is not None:
            baseline_check.tolerances.check(set(baseline_check.metrics) & expected)
    prepared, history = build_model(
        config, data, device, progress=progress, timer=timer, module=module
    )
    baseline, table = audit_model(
        "baseline", prepared, history, data, config, device, timer, debug=debug
    )
    models, tables, prepared_models = {"baseline": baseline}, [table], {"baseline": prepared}
    if config.harden.method != "none":
        with timer.phase("harden"):
            hardened, harden_history = harden(config, data, prepared, device, progress=progress)
        models["hardened"], table = audit_model(
            "hardened", hardened, harden_history, data, config, device, timer, debug=debug
        )
        tables.append(table)
        prepared_models["hardened"] = hardened
    if config.fairness.rebalance:
        with timer.phase("rebalance"):
            rebalanced, rebalance_history = rebalance(
                config, data, prepared, device, progress=progress
            )
        models["rebalanced"], table = audit_model(
            "rebalanced", rebalanced, rebalance_history, data, config, device, timer, debug=debug
        )
        tables.append(table)
        prepared_models["rebalanced"] = rebalanced
    gate_outcomes, verdict = judge(models, gates, baseline_check)
    run = {
        "started_at": started_at,
        "seed": config.seed,
        "device": _device_info(device),
        "versions": _versions(),
        "durations": timer.durations,
        "config": config.model_dump(mode="json"),
        "device_defaults": device_counts,
        "data_hash": data.summary["hash"],
        "model_hash": baseline.card["weights_sha256"],
        "unsafe_load": prepared.unsafe_load is not None,
    }
    result = AuditResult(
        verdict=verdict,
        run=run,
        data=data.summary,
        models=models,
        gates=gate_outcomes,
        limitations=limitations(data.summary, config, baseline.artifacts)
        + device_limitations(device_counts, device.type),
    )
    samples = pd.concat(tables, ignore_index=True)
    return AuditOutcome(result, samples, prepared_models)
