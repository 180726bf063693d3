"""Command line: ``auditclf run | train | report | list | metrics``.

The only place that maps errors to exit codes (see ``ExitStatus``). Streams
are injectable so tests drive the CLI in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from auditclf import __version__
from auditclf.errors import AuditError, ExitStatus, UsageError

VERDICT_STATUS = {
    "pass": ExitStatus.OK,
    "fail": ExitStatus.GATE_FAILED,
    "unreliable": ExitStatus.UNRELIABLE,
    "error": ExitStatus.INTERNAL,
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-line usage error instead of printing usage and exiting."""

    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _add_data_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config; flags override it")
    parser.add_argument("--dataset", help="built-in name, image folder, or CSV manifest")
    parser.add_argument("--model", help="zoo name, package.module:factory or file.py:factory")
    parser.add_argument("--seed", type=int, help="run seed (default 0)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument("--epochs", type=int, help="training epochs (upper bound)")
    parser.add_argument("--batch-size", type=int, help="training batch size")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_checkpoint_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--checkpoint", type=Path, help=what)
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        default=None,
        help="allow pickled models/TorchScript (they run code when loaded)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auditclf", description="Audit an image classifier before it ships.")
    parser.add_argument("--version", action="version", version=f"auditclf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="train or load a model, audit it, write the report",
        description="Train (or load) a classifier, audit it and write "
        "report.html, report.json, samples.csv, junit.xml, summary.md.",
    )
    _add_data_model_flags(run)
    _add_checkpoint_flags(run, ".safetensors or .pt/.pth state dict")
    run.add_argument("--out", type=Path, help="output folder (default ./audit-report)")
    run.add_argument(
        "--gate",
        action="append",
        default=None,
        metavar="'KEY OP VALUE'",
        help="e.g. 'performance.accuracy>=0.97' (repeatable)",
    )
    run.add_argument("--templates", type=Path, help="folder of jinja2 templates to use instead")
    run.add_argument(
        "--harden",
        choices=["none", "pgd", "fgsm-rs"],
        help="adversarial retraining to audit beside the baseline (default pgd)",
    )

    harden = commands.add_parser(
        "harden",
        help="adversarially retrain a model; write hardened.safetensors + .json",
        description="Train (or --checkpoint load) a model, retrain it adversarially "
        "(harden.method, default PGD-AT) and save the result; no audit.",
    )
    _add_data_model_flags(harden)
    _add_checkpoint_flags(harden, "the model to harden (default: train one)")
    harden.add_argument("--method", choices=["pgd", "fgsm-rs"], help="default pgd")
    harden.add_argument("--out", type=Path, help="output folder (default ./audit-model)")

    train = commands.add_parser(
        "train",
        help="train a model and save model.safetensors + .json",
        description="Train the configured model and save it; "
        "`auditclf run --checkpoint OUT/model.safetensors` audits it.",
    )
    _add_data_model_flags(train)
    train.add_argument("--out", type=Path, help="output folder (default ./audit-model)")

    report = commands.add_parser(
        "report",
        help="re-render the report from a run's folder",
        description="Re-run the analyses from samples.csv and "
        "re-render report.html, summary.md and junit.xml; no model.",
    )
    report.add_argument("folder", type=Path, help="folder with report.json and samples.csv")
    report.add_argument("--out", type=Path, help="where to write (default: the same folder)")
    report.add_argument("--templates", type=Path, help="folder of jinja2 templates")
    report.add_argument("--debug", action="store_true", help="show tracebacks")

    listing = commands.add_parser("list", help="list datasets, models, probes and analyses")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")

    metrics = commands.add_parser("metrics", help="print every metric key of a report.json")
    metrics.add_argument("report", type=Path, help="a report.json, or the folder holding it")
    metrics.add_argument("--model", default=None, help="which audited model (default: baseline)")
    metrics.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys set on the command line (flags left out stay as the file says)."""
    pairs = {
        ("data", "dataset"): args.dataset,
        ("model", "name"): args.model,
        ("model", "checkpoint"): getattr(args, "checkpoint", None),
        ("model", "trust_checkpoint"): getattr(args, "trust_checkpoint", None),
        ("seed",): args.seed,
        ("device",): args.device,
        ("train", "epochs"): args.epochs,
        ("train", "batch_size"): args.batch_size,
        ("train", "lr"): args.lr,
        ("out",): getattr(args, "out", None),
        ("gates",): getattr(args, "gate", None),
        ("report", "templates"): getattr(args, "templates", None),
        ("harden", "method"): getattr(args, "harden", None) or getattr(args, "method", None),
    }
    overrides: dict[str, Any] = {}
    for path, value in pairs.items():
        if value is None:
            continue
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = str(value) if isinstance(value, Path) else value
    return overrides


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import load_config
    from auditclf.gates import parse_gate

    config = load_config(args.config, _overrides(args))
    for text in config.gates:  # syntax errors before the heavy imports
        parse_gate(text)
    from auditclf.pipeline import run_audit
    from auditclf.report import write_outputs

    outcome = run_audit(config, progress=not args.quiet, debug=args.debug)
    result = outcome.result
    write_outputs(
        result,
        outcome.samples,
        outcome.models,
        config.out,
        templates=config.report.templates,
        title=config.report.title,
    )
    metrics = result.metrics
    out.write(f"verdict: {result.verdict}\n")
    for gate in result.gates:
        status = "pass" if gate["passed"] else "FAIL"
        out.write(f"  gate {gate['expression']}: {status} ({gate['reason']})\n")
    out.write(
        f"accuracy {metrics.get('performance.accuracy', float('nan')):.4f}, "
        f"balanced accuracy {metrics.get('performance.balanced_accuracy', float('nan')):.4f}"
        f", ECE {metrics.get('performance.ece', float('nan')):.4f}\n"
    )
    out.write(f"report: {Path(config.out) / 'report.html'}\n")
    return VERDICT_STATUS[result.verdict]


def _cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import load_config
    from auditclf.data import prepare_data
    from auditclf.models import save_model
    from auditclf.pipeline import PhaseTimer, build_model, resolve_device
    from auditclf.seeding import seed_everything

    overrides = _overrides(args)
    overrides.pop("out", None)
    config = load_config(args.config, overrides)
    if config.model.checkpoint is not None:
        raise UsageError(
            "auditclf train builds a new model; remove model.checkpoint from the config"
        )
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = prepare_data(config.data, seed=config.seed)
    prepared, history = build_model(
        config, data, device, progress=not args.quiet, timer=PhaseTimer()
    )
    target = Path(args.out or "audit-model") / "model.safetensors"
    save_model(prepared.adapter.net, prepared.spec, target)
    last = history.epochs[history.best_epoch - 1]
    out.write(
        f"trained {prepared.spec['architecture']} on {data.summary['dataset']}: "
        f"kept epoch {history.best_epoch}, val accuracy {last['val_accuracy']:.4f}\n"
    )
    out.write(f"saved {target} and {target.with_suffix('.json')}\n")
    return ExitStatus.OK


def _cmd_harden(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import load_config
    from auditclf.data import prepare_data
    from auditclf.models import save_model
    from auditclf.pipeline import PhaseTimer, build_model, harden, resolve_device
    from auditclf.seeding import seed_everything

    overrides = _overrides(args)
    overrides.pop("out", None)
    config = load_config(args.config, overrides)
    if config.harden.method == "none":
        raise UsageError("harden.method is none; choose --method pgd or fgsm-rs")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = prepare_data(config.data, seed=config.seed)
    baseline, _ = build_model(config, data, device, progress=not args.quiet, timer=PhaseTimer())
    hardened, history = harden(config, data, baseline, device, progress=not args.quiet)
    folder = Path(args.out or "audit-model")
    if baseline.needs_training:
        save_model(baseline.adapter.net, baseline.spec, folder / "model.safetensors")
    target = folder / "hardened.safetensors"
    save_model(hardened.adapter.net, hardened.spec, target)
    last = history.epochs[-1]
    out.write(
        f"hardened {hardened.spec['architecture']}: {hardened.spec['source']}; clean val "
        f"accuracy {last['val_accuracy']:.4f}\n"
    )
    out.write(f"saved {target} and {target.with_suffix('.json')}\n")
    return ExitStatus.OK


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import config_from_dict
    from auditclf.evidence import load_samples, split_by_model
    from auditclf.io import StagedOutput
    from auditclf.pipeline import analyse
    from auditclf.report import write_reports
    from auditclf.results import AuditResult

    result = AuditResult.load(args.folder / "report.json")
    samples = load_samples(args.folder / "samples.csv")
    config = config_from_dict(result.run["config"], source=str(args.folder / "report.json"))
    for name, rows in split_by_model(samples).items():
        if name in result.models:
            sections, metrics, notes, findings = analyse(
                rows, config, result.data, result.models[name].artifacts, debug=args.debug
            )
            model = result.models[name]
            model.sections, model.metrics, model.notes, model.findings = (
                sections,
                metrics,
                notes,
                findings,
            )
    target = args.out or args.folder
    with StagedOutput(target) as staged:
        write_reports(
            staged,
            result,
            templates=args.templates or config.report.templates,
            title=config.report.title,
        )
    out.write(f"report: {Path(target) / 'report.html'}\n")
    return ExitStatus.OK


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.analyses import ANALYSES
    from auditclf.data import DATASETS
    from auditclf.models import MODELS
    from auditclf.probes import PROBES

    for title, registry in (
        ("datasets", DATASETS),
        ("models", MODELS),
        ("probes", PROBES),
        ("analyses", ANALYSES),
    ):
        out.write(f"{title}:\n")
        for entry in registry:
            out.write(f"  {entry.name:<26} {entry.summary}\n")
    out.write(
        "datasets also: a folder in ImageFolder layout, or a CSV manifest "
        "path,label[,split][,attributes]\n"
    )
    out.write(
        "models also: package.module:factory or path/to/file.py:factory (with --checkpoint)\n"
    )
    return ExitStatus.OK


def _cmd_metrics(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.results import AuditResult

    path = args.report / "report.json" if args.report.is_dir() else args.report
    result = AuditResult.load(path)
    name = args.model or "baseline"
    if name not in result.models:
        raise UsageError(f"{args.report}: no model {name!r}; it has {', '.join(result.models)}")
    model = result.models[name]
    width = max((len(k) for k in model.metrics), default=0)
    for key, value in model.metrics.items():
        shown = "null" if value is None else f"{value:.6g}"
        reason = f"  # {model.notes[key]}" if value is None and key in model.notes else ""
        out.write(f"{key:<{width}}  {shown}{reason}\n")
    return ExitStatus.OK


COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "harden": _cmd_harden,
    "report": _cmd_report,
    "list": _cmd_list,
    "metrics": _cmd_metrics,
}


def run(
    argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the CLI; return the exit status instead of exiting."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with contextlib.redirect_stdout(out):  # --help and --version print to our stream
            args = build_parser().parse_args(argv)
        return int(COMMANDS[args.command](args, out))
    except AuditError as exc:
        if debug:
            traceback.print_exc(file=err)
        err.write(f"auditclf: error: {exc}\n")
        return int(exc.status)
    except KeyboardInterrupt:
        err.write("auditclf: interrupted; no report was written\n")
        return int(ExitStatus.INTERRUPTED)
    except SystemExit as exc:  # --help and --version exit through argparse
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - the one place internal errors become exit 6
        if debug:
            traceback.print_exc(file=err)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.write(
            f"auditclf: internal error: {type(exc).__name__}: {first} "
            "(rerun with --debug for the traceback)\n"
        )
        return int(ExitStatus.INTERNAL)


def main() -> None:
    sys.exit(run())
