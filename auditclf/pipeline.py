"""run_audit(config) -> AuditResult: config → data → model → probes → table → analyses.

Nothing else lives here: each step is a call into its package. ``auditclf train`` and
``harden`` open a run as it does (:func:`train_model`, :func:`harden_model`);
``auditclf report`` is :func:`reanalyse` (samples.csv → analyses → a new result)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditclf import distributed
from auditclf.analyses import analyse
from auditclf.analyses.corruption import add_reference_errors
from auditclf.compare import BaselineCheck, load_baseline
from auditclf.config import AuditConfig, config_from_dict
from auditclf.data import PreparedData
from auditclf.device_defaults import for_device, forward_chunk
from auditclf.dryrun import expected_metric_keys
from auditclf.errors import UsageError
from auditclf.evidence import load_samples, new_table, split_by_model
from auditclf.exporting import ExportFolder, export_prepared
from auditclf.gates import Gate, check_gate_keys, gates_from_config, judge
from auditclf.gradients import (
    NO_GRADIENTS,
    refuse_gradient_keys,
    refuse_retraining,
    skipped_sections,
)
from auditclf.keys import shift_set
from auditclf.models import PreparedModel, prepare_model, wrap_module
from auditclf.models.adapter import channels_last
from auditclf.models.export import Normalized
from auditclf.probes import PROBES, ProbeContext
from auditclf.probes.deploy import deploy_probe
from auditclf.probes.shift import shift_probe
from auditclf.progress import Progress
from auditclf.report.limitations import device_limitations, limitations
from auditclf.results import AuditResult, ModelResult
from auditclf.runcontext import PhaseTimer, RunContext, open_run, run_card, trains
from auditclf.train import TrainHistory
from auditclf.train.recipes import harden, rebalance, train_baseline, training_findings
from auditclf.train.standard import to_unit_float

# probes timed as a phase of their own (the others are "probes"): {probe: phase}
PROBE_PHASES = {"attributions": "explanations", "corruptions": "corruptions"}

# the retrained copies a run may audit beside the baseline: {name: (timer phase, recipe)}
RETRAINED = {"hardened": ("harden", harden), "rebalanced": ("rebalance", rebalance)}


@dataclass
class AuditOutcome:
    """The result plus what the writers need beside it: the table and trained models."""

    result: AuditResult | None  # None on the ranks other than 0 under torchrun
    samples: pd.DataFrame
    models: dict[str, PreparedModel]
    exports: ExportFolder | None = None  # run --export's files, until the report is saved


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
    if prepared.needs_training and not prepared.gradients:
        raise UsageError(
            f"model {config.model.name}: training needs the model's gradients, and "
            f"{NO_GRADIENTS}; give a trained model (model.checkpoint) to audit it"
        )
    if prepared.needs_training:
        with timer.phase("train"):
            history = train_baseline(prepared, train, config, data, device, progress=progress)
    prepared.adapter.to(device).eval()
    return prepared, history


def probe(
    prepared: PreparedModel,
    data: PreparedData,
    config: AuditConfig,
    device: torch.device,
    name: str,
    reporter: Progress,
    timer: PhaseTimer,
    exports: ExportFolder | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Run every registered probe over the test split, and the clean one over the shift set
    → (the model's sample table, what the probes noted, their arrays for the artifact file);
    ``reporter`` shows their long phases, ``timer`` gets their time (the corruption probe's
    as a phase of its own). With ``exports``, the model is exported there and the files
    audited (:func:`deploy`)."""
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
        corruptions=config.corruptions,
        progress=reporter,
        label=name,
    )
    first = to_unit_float(torch.from_numpy(np.asarray(test.images[:1])), device)
    with channels_last(prepared.adapter, first) as fast:  # the fast kernels (pass_layout)
        for entry in PROBES:
            with timer.phase(PROBE_PHASES.get(entry.name, "probes")):
                table = entry.obj(ctx, table)
        if exports is not None:  # rank 0 alone: latency and size are one machine's
            with timer.phase("deploy"):
                shipped = distributed.main_only(
                    lambda: deploy(ctx, prepared, data, config, table, exports)
                )
                table = table if shipped is None else shipped
        if data.shift is not None:  # the clean probe over the shift set, rows of their own
            with timer.phase("probes"):
                view = data.shift.view
                rows = new_table(
                    name,
                    view.ids,
                    view.labels,
                    data.classes,
                    view.attributes,
                    images=shift_set(data.shift.name),
                )
                rows = shift_probe(ctx, data.shift, rows)
            table = pd.concat([table, rows], ignore_index=True)
    ctx.artifacts["layout"] = "channels-last" if fast else "contiguous"  # what the passes ran
    if not prepared.gradients:  # what was skipped and why, for the report's Limitations
        ctx.artifacts["skipped"] = skipped_sections(config)
    return table, ctx.artifacts, ctx.arrays


def deploy(
    ctx: ProbeContext,
    prepared: PreparedModel,
    data: PreparedData,
    config: AuditConfig,
    table: pd.DataFrame,
    exports: ExportFolder,
) -> pd.DataFrame:
    """``run --export``: the model written in every format of ``export.formats`` to
    ``exports``, then each file audited through its own runtime (the deploy probe)."""
    with ctx.progress.task(f"export of {ctx.label} ({', '.join(config.export.formats)})"):
        files = export_prepared(prepared, data, config.export, exports.path)
    return deploy_probe(
        ctx,
        table,
        files,
        folder=exports.path,
        repeats=config.export.latency_repeats,
        reference=Normalized(prepared.adapter),
    )


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
    reporter: Progress | None = None,
    exports: ExportFolder | None = None,
) -> tuple[ModelResult | None, pd.DataFrame]:
    """Probes then analyses for one model → its result and its rows of the sample table
    (``reporter``: the run's progress, off when None; ``exports``: where this model is
    exported and audited as what ships, None when it is not). Under torchrun every rank
    probes and rank 0 alone analyses: the other ranks get no result (None)."""
    config = for_device(config, device.type)[0]  # a no-op for run_audit's, resolved already
    reporter = reporter or Progress()
    table, artifacts, arrays = probe(prepared, data, config, device, name, reporter, timer, exports)
    with timer.phase("analyses"), reporter.task(f"analyses of {name}"):
        analysed = distributed.main_only(
            lambda: analyse(table, config, data.summary, artifacts, debug=debug)
        )
    if analysed is None:  # a rank other than 0
        return None, table
    sections, metrics, notes, findings = analysed
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
        arrays=arrays,
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
    # under torchrun each step every process takes alike ends in a meeting, so that a
    # failure (the config, the data, the model refused) is one failure of the run, printed
    # once (not once per process)
    gates, baseline_check, run = distributed.together(lambda: _open(config, module))
    config, device, data, timer = run.config, run.device, run.data, run.timer
    reporter = Progress.for_stream(progress)

    def model() -> tuple[PreparedModel, TrainHistory | None]:
        prepared, history = build_model(
            config, data, device, progress=progress, timer=timer, module=module
        )
        if not prepared.gradients:  # known once loaded (loading is cheap; no probe has run)
            refuse_retraining(config)
            if _asks_keys(gates, baseline_check):
                check_keys(config, data.summary, gates, baseline_check, gradients=False)
        return prepared, history

    prepared, history = distributed.together(model)
    exports = ExportFolder() if config.export.formats else None
    baseline, table = audit_model(
        "baseline",
        prepared,
        history,
        data,
        config,
        device,
        timer,
        debug=debug,
        reporter=reporter,
        exports=exports if config.export.which == "baseline" else None,
    )
    models, tables, prepared_models = {"baseline": baseline}, [table], {"baseline": prepared}
    wanted = {"hardened": config.harden.method != "none", "rebalanced": config.fairness.rebalance}
    for name, (phase, recipe) in RETRAINED.items():
        if not wanted[name]:
            continue
        with timer.phase(phase), reporter.task(f"{phase} (retraining the baseline)"):
            retrained, retrained_history = distributed.together(
                partial(recipe, config, data, prepared, device, progress=progress)
            )
        models[name], table = audit_model(
            name,
            retrained,
            retrained_history,
            data,
            config,
            device,
            timer,
            debug=debug,
            reporter=reporter,
            exports=exports if config.export.which == name else None,
        )
        tables.append(table)
        prepared_models[name] = retrained
    samples = pd.concat(tables, ignore_index=True)
    if not distributed.is_main():  # rank 0 alone judges and writes
        return AuditOutcome(None, samples, prepared_models)
    add_reference_errors(models)
    gate_outcomes, verdict = judge(models, gates, baseline_check)
    result = AuditResult(
        verdict=verdict,
        run=run_card(
            run,
            model_hash=baseline.card["weights_sha256"],
            unsafe_load=prepared.unsafe_load is not None,
        ),
        data=data.summary,
        models=models,
        gates=gate_outcomes,
        limitations=limitations(data.summary, config, baseline.artifacts)
        + device_limitations(run.device_counts, device.type),
    )
    if baseline_check is not None:
        baseline_check.warn_on_settings(result)
    return AuditOutcome(result, samples, prepared_models, exports)


def _open(
    config: AuditConfig, module: torch.nn.Module | None
) -> tuple[list[Gate], BaselineCheck | None, RunContext]:
    """The run's gates and ``--baseline``, then its opening (:func:`open_run`), the gates'
    and tolerances' keys checked before any training, so a typo costs seconds, not a
    training run."""
    gates = gates_from_config(config.gates)
    regression = config.regression
    baseline_check = load_baseline(regression.baseline, regression.max_drop, regression.tolerances)
    run = open_run(config, trains=trains(config, module), audits=True)
    if _asks_keys(gates, baseline_check):
        check_keys(run.config, run.data.summary, gates, baseline_check)
    return gates, baseline_check, run


def _asks_keys(gates: list[Gate], baseline_check: BaselineCheck | None) -> bool:
    """Whether the run names metric keys to check: gates, or ``--max-drop`` tolerances."""
    return bool(gates) or bool(baseline_check and baseline_check.tolerances.per_key)


def check_keys(
    config: AuditConfig,
    summary: dict,
    gates: list[Gate],
    baseline_check: BaselineCheck | None,
    *,
    gradients: bool = True,
) -> None:
    """Refuse a gate or a ``--max-drop`` tolerance on a key this run will not produce (the
    dry run's keys for a model with ``gradients`` or without; without, a key only the
    gradients would give is refused saying so)."""
    expected = expected_metric_keys(config, summary, gradients=gradients)
    tolerances = set(baseline_check.tolerances.per_key) if baseline_check else set()
    if not gradients:
        lost = expected_metric_keys(config, summary) - expected
        asked = [(gate.metric, f"gate {gate.expression!r}") for gate in gates]
        refuse_gradient_keys(asked + [(k, f"--max-drop {k}=…") for k in sorted(tolerances)], lost)
    check_gate_keys(gates, expected)
    if baseline_check is not None:
        baseline_check.tolerances.check(set(baseline_check.metrics) & expected)


def train_model(
    config: AuditConfig, *, progress: bool
) -> tuple[PreparedData, PreparedModel, TrainHistory]:
    """``auditclf train``: the run's opening, then the configured model built and trained
    (under torchrun each step ends in a meeting, as :func:`run_audit`'s)."""
    run = distributed.together(lambda: open_run(config))
    prepared, history = distributed.together(
        lambda: build_model(run.config, run.data, run.device, progress=progress, timer=run.timer)
    )
    return run.data, prepared, history


def harden_model(
    config: AuditConfig, *, progress: bool
) -> tuple[PreparedModel, PreparedModel, TrainHistory]:
    """``auditclf harden``: the run's opening, the baseline (trained or loaded), then its
    hardened copy (adversarial or AugMix retraining) → (baseline, hardened, the hardening's
    history; under torchrun each step ends in a meeting, as :func:`run_audit`'s)."""
    run = distributed.together(lambda: open_run(config))

    def baseline_model() -> PreparedModel:
        built, _ = build_model(run.config, run.data, run.device, progress=progress, timer=run.timer)
        if not built.gradients:
            refuse_retraining(run.config)
        return built

    baseline = distributed.together(baseline_model)
    with Progress.for_stream(progress).task("harden (retraining the baseline)"):
        hardened, history = distributed.together(
            lambda: harden(run.config, run.data, baseline, run.device, progress=progress)
        )
    return baseline, hardened, history


def reanalyse(folder: Path, *, debug: bool) -> tuple[AuditResult, AuditConfig]:
    """``auditclf report``: the saved run in ``folder`` with every model's analyses redone
    from its rows of samples.csv, as a new result; → (that result, the run's config)."""
    saved = AuditResult.load(folder / "report.json")
    samples = load_samples(folder / "samples.csv")
    config = config_from_dict(saved.run["config"], source=str(folder / "report.json"))
    models = dict(saved.models)
    for name, rows in split_by_model(samples).items():
        if name in models:
            sections, metrics, notes, findings = analyse(
                rows, config, saved.data, models[name].artifacts, debug=debug
            )
            kept = models[name].findings
            findings = _run_findings(kept, "model") + findings + _run_findings(kept, "training")
            models[name] = replace(
                models[name], sections=sections, metrics=metrics, notes=notes, findings=findings
            )
    add_reference_errors(models)
    return replace(saved, models=models), config


def _run_findings(saved: list[dict], section: str) -> list[dict]:
    """The saved findings the run made itself in ``section`` (``model``, ``training``; no
    analysis remakes them), kept where :func:`audit_model` puts them."""
    return [finding for finding in saved if finding["section"] == section]
