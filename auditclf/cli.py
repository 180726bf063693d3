"""Command line: ``auditclf run | train | harden | report | gate | compare | list | metrics |
schema | init``.

The only place that maps errors to exit codes (see ``ExitStatus``). Streams
are injectable so tests drive the CLI in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from auditclf.threads import short_openmp_waits  # noqa: I001 - stdlib only, before torch

# Idle OpenMP threads spin briefly, then sleep, instead of spinning long against other
# processes on shared cores. The OpenMP runtime reads this once, when torch is imported:
# here, the first module `auditclf` and `python -m auditclf` run, is before that.
short_openmp_waits()

from auditclf import __version__  # noqa: E402 - after the environment is set
from auditclf.errors import AuditError, ExitStatus, UsageError  # noqa: E402

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


def _at_least_one(text: str) -> int:
    """``--threads N``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _add_data_model_flags(parser: argparse.ArgumentParser, *, hardening: bool = False) -> None:
    parser.add_argument("--config", type=Path, help="YAML config; flags override it")
    parser.add_argument("--dataset", help="built-in name, image folder, or CSV manifest")
    parser.add_argument("--model", help="zoo name, package.module:factory or file.py:factory")
    parser.add_argument(
        "--weights",
        type=Path,
        help="pretrained weights to fine-tune from: a local state dict file (.pth or "
        ".safetensors, e.g. torchvision's resnet50-0676ba61.pth); never downloaded",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="resize folder/manifest images to this side in pixels (data.image_size)",
    )
    parser.add_argument("--seed", type=int, help="run seed, 0 to 2**32 - 1 (default 0)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument(
        "--threads",
        type=_at_least_one,
        metavar="N",
        help="CPU compute threads (default: the CPUs this process may use)",
    )
    if hardening:  # `harden`'s --epochs and --lr set the hardening (see _overrides)
        parser.add_argument(
            "--epochs",
            type=int,
            help="hardening epochs (harden.epochs, default 3); a baseline trained here "
            "takes train.epochs from --config",
        )
        parser.add_argument(
            "--batch-size", type=int, help="batch size of training and hardening (train.batch_size)"
        )
        parser.add_argument("--lr", type=float, help="hardening Adam learning rate (harden.lr)")
    else:
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


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _add_fairness_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--groups",
        type=_comma_list,
        metavar="A,B",
        help="group attributes to audit (default: every attribute the data has)",
    )
    parser.add_argument(
        "--intersect",
        action="store_true",
        default=None,
        help="also audit the intersection of the audited attributes",
    )
    parser.add_argument(
        "--metadata",
        type=Path,
        metavar="CSV",
        help="per-image attributes, joined on a path or id column",
    )
    parser.add_argument(
        "--rebalance-groups",
        metavar="ATTR",
        help="retrain with group-balanced sampling over ATTR and audit it beside the baseline",
    )
    parser.add_argument(
        "--min-group-size",
        type=int,
        metavar="N",
        help="test images a group needs to be compared (default 30)",
    )


def _add_gate_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gate",
        action="append",
        default=None,
        metavar="'KEY OP VALUE'",
        help="e.g. 'performance.accuracy>=0.97' (repeatable; replaces the config's gates)",
    )


def _add_baseline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="OLD/report.json",
        help="fail when a headline metric got worse than in this earlier report",
    )
    parser.add_argument(
        "--max-drop",
        action="append",
        default=None,
        metavar="TOL|KEY=TOL",
        help="allowed worsening: a default (0.01) or per key/pattern (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="auditclf", description="Audit an image classifier before it ships.")
    parser.add_argument("--version", action="version", version=f"auditclf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="train or load a model, audit it, write the report",
        description="Train (or load) a classifier, audit it and write "
        "report.html, report.json, artifacts.npz, samples.csv, junit.xml, summary.md.",
    )
    _add_data_model_flags(run)
    _add_checkpoint_flags(run, ".safetensors or .pt/.pth state dict")
    run.add_argument("--out", type=Path, help="output folder (default ./audit-report)")
    _add_gate_flag(run)
    run.add_argument("--templates", type=Path, help="folder of jinja2 templates to use instead")
    _add_baseline_flags(run)
    run.add_argument(
        "--harden",
        choices=["none", "pgd", "fgsm-rs", "augmix"],
        help="retraining to audit beside the baseline: adversarial (pgd, fgsm-rs) or against "
        "corruptions (augmix); default pgd",
    )
    _add_fairness_flags(run)
    run.add_argument(
        "--shift-dataset",
        metavar="PATH",
        help="a second test set from another source (folder, CSV manifest or built-in name, "
        "the same classes), audited whole beside the test split",
    )
    run.add_argument(
        "--shift-name",
        metavar="NAME",
        help="its name in the keys shift.<name>.* (default: the folder's or file's name)",
    )

    run.add_argument(
        "--export",
        type=_comma_list,
        metavar="FORMATS",
        help="also export the audited model (onnx, torchscript, onnx-int8; comma-separated) "
        "to OUT/export/ and audit each file for parity, latency and size (export.formats)",
    )
    run.add_argument(
        "--nproc",
        type=_at_least_one,
        metavar="N",
        help="split the audit across N processes on this machine (torchrun's launcher): "
        "the same audit numbers as one process for a given model; a model trained here is "
        "trained data-parallel, equal within sampling error",
    )

    export = commands.add_parser(
        "export",
        help="write a finished run's model as ONNX, TorchScript or int8 ONNX",
        description="Export a model a finished run saved (DIR/model.safetensors, or "
        "hardened/rebalanced) with its normalisation inside, taking [0, 1] pixels: "
        "DIR/export/<which>.onnx, .pt (TorchScript), .int8.onnx.",
    )
    export.add_argument("folder", type=Path, help="the folder of a finished `auditclf run`")
    export.add_argument(
        "--format",
        type=_comma_list,
        required=True,
        metavar="FORMATS",
        help="onnx, torchscript, onnx-int8 (comma-separated)",
    )
    export.add_argument(
        "--which", choices=["baseline", "hardened", "rebalanced"], help="default baseline"
    )
    export.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help="training images calibrating int8 static quantization (default 200; 0: dynamic)",
    )
    export.add_argument("--debug", action="store_true", help="show tracebacks")

    harden = commands.add_parser(
        "harden",
        help="harden a model (adversarial or AugMix retraining); write hardened.safetensors "
        "+ .json",
        description="Train (or --checkpoint load) a model, retrain it adversarially or with "
        "AugMix (harden.method, default PGD-AT) and save the result; no audit.",
    )
    _add_data_model_flags(harden, hardening=True)
    _add_checkpoint_flags(harden, "the model to harden (default: train one)")
    harden.add_argument("--method", choices=["pgd", "fgsm-rs", "augmix"], help="default pgd")
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
    report.add_argument(
        "--pdf",
        action="store_true",
        help="also print report.pdf with headless Chromium (on PATH, or $AUDITCLF_CHROMIUM)",
    )
    report.add_argument("--debug", action="store_true", help="show tracebacks")

    listing = commands.add_parser("list", help="list datasets, models, probes and analyses")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")

    metrics = commands.add_parser("metrics", help="print every metric key of a report.json")
    metrics.add_argument(
        "report", type=Path, nargs="?", help="a report.json, or the folder holding it"
    )
    metrics.add_argument("--model", default=None, help="which audited model (default: baseline)")
    metrics.add_argument(
        "--list-keys",
        action="store_true",
        help="print every key family (which way is better, headline, interval keys, meaning); "
        "no report needed",
    )
    metrics.add_argument("--debug", action="store_true", help="show tracebacks")

    gate = commands.add_parser(
        "gate",
        help="re-evaluate gates on a finished run's report.json (no model)",
        description="Evaluate gates (--gate, the gates of --config, else the report's own) "
        "and --baseline regressions on an existing report.json; exit 0 pass, 1 a gate "
        "failed, 2 usage error, 5 a gate reads an unreliable robustness number.",
    )
    gate.add_argument("report", type=Path, help="a report.json, or the folder holding it")
    _add_gate_flag(gate)
    gate.add_argument("--config", type=Path, help="YAML config whose gates/regression to use")
    _add_baseline_flags(gate)
    gate.add_argument(
        "--out",
        type=Path,
        help="also write report.json/html, junit.xml, summary.md, model_card.md here",
    )
    gate.add_argument("--templates", type=Path, help="folder of jinja2 templates (with --out)")
    gate.add_argument("--debug", action="store_true", help="show tracebacks")

    compare = commands.add_parser(
        "compare",
        help="compare two report.json files; write compare.html and compare.json",
        description="B against A, metric by metric: writes OUT/compare.html (side by side, "
        "regressions first) and OUT/compare.json, prints the regressions; exit 1 when a "
        "headline metric got worse by more than its tolerance.",
    )
    compare.add_argument("a", type=Path, help="A (before): a report.json or its folder")
    compare.add_argument("b", type=Path, help="B (after): a report.json or its folder")
    compare.add_argument("--out", type=Path, help="output folder (default ./audit-compare)")
    compare.add_argument(
        "--max-drop",
        action="append",
        default=None,
        metavar="TOL|KEY=TOL",
        help="allowed worsening: a default (0.01) or per key/pattern (repeatable)",
    )
    compare.add_argument(
        "--model", default="baseline", help="which audited model of each report (default baseline)"
    )
    compare.add_argument("--model-b", help="B's model when it differs (e.g. hardened)")
    compare.add_argument("--templates", type=Path, help="folder of jinja2 templates")
    compare.add_argument("--debug", action="store_true", help="show tracebacks")

    schema = commands.add_parser("schema", help="print the JSON schema of report.json")
    schema.add_argument("--debug", action="store_true", help="show tracebacks")

    init = commands.add_parser(
        "init",
        help="write a commented audit.yaml with every option at its default",
        description="Write a commented config: every section and option with its "
        "description, units and default.",
    )
    init.add_argument("--out", type=Path, default=Path("audit.yaml"), help="default audit.yaml")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _flag_keys(args: argparse.Namespace) -> dict[str, tuple]:
    """Each flag (by argparse dest) and the config key it sets."""
    trains = "harden" if args.command == "harden" else "train"  # harden: --epochs, --lr
    return {
        "dataset": ("data", "dataset"),
        "model": ("model", "name"),
        "weights": ("model", "weights"),
        "image_size": ("data", "image_size"),
        "checkpoint": ("model", "checkpoint"),
        "trust_checkpoint": ("model", "trust_checkpoint"),
        "seed": ("seed",),
        "device": ("device",),
        "threads": ("threads",),
        "epochs": (trains, "epochs"),
        "batch_size": ("train", "batch_size"),
        "lr": (trains, "lr"),
        "out": ("out",),
        "gate": ("gates",),
        "templates": ("report", "templates"),
        "harden": ("harden", "method"),
        "method": ("harden", "method"),
        "groups": ("fairness", "groups"),
        "intersect": ("fairness", "intersect"),
        "metadata": ("fairness", "metadata"),
        "rebalance_groups": ("fairness", "rebalance"),
        "min_group_size": ("fairness", "min_group_size"),
        "baseline": ("regression", "baseline"),
        "shift_dataset": ("shift", "dataset"),
        "shift_name": ("shift", "name"),
        "export": ("export", "formats"),
    }


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys set on the command line (flags left out stay as the file says)."""
    pairs = {
        key: getattr(args, dest)
        for dest, key in _flag_keys(args).items()
        if getattr(args, dest, None) is not None  # run has --harden, harden has --method
    }
    return _nest({**pairs, **_max_drop_overrides(getattr(args, "max_drop", None))})


def _given_flags(args: argparse.Namespace) -> dict[str, str]:
    """{"train.epochs": "--epochs", ...}: the config keys the command line set, by flag."""
    given = {
        ".".join(key): "--" + dest.replace("_", "-")
        for dest, key in _flag_keys(args).items()
        if getattr(args, dest, None) is not None
    }
    if getattr(args, "max_drop", None):
        given["regression.max_drop"] = "--max-drop"
    return given


def _nest(pairs: dict[tuple, Any]) -> dict[str, Any]:
    """{("train", "epochs"): 3} → {"train": {"epochs": 3}}; None values are left out."""
    overrides: dict[str, Any] = {}
    for path, value in pairs.items():
        if value is None:
            continue
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = str(value) if isinstance(value, Path) else value
    return overrides


def _max_drop_overrides(values: list[str] | None) -> dict[tuple, Any]:
    """``--max-drop 0.01 --max-drop KEY=0.005`` → the regression config keys they set."""
    from auditclf.compare import parse_max_drops

    default, per_key = parse_max_drops(values)
    tolerances = {("regression", "tolerances", key): value for key, value in per_key.items()}
    return {("regression", "max_drop"): default, **tolerances}


def _write_gates(out: TextIO, result: Any) -> None:
    from auditclf.keys import checks_sentence
    from auditclf.report.verdict import gate_rows, verdict_banner

    rows = gate_rows(result)
    out.write(f"verdict: {verdict_banner(result, rows).line}\n")
    for row in rows:
        shown = "pass" if row.status == "pass" else row.status.upper()
        out.write(f"  gate {row.gate.expression}: {shown} ({row.reason})\n")
    for name, model in result.models.items():
        for section, what in (("robustness", "robustness"), ("corruption", "corruptions")):
            sentence = checks_sentence(model.metrics, section)
            if sentence:
                out.write(f"  {what} of the {name} model: {sentence}\n")


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import load_config
    from auditclf.preflight import preflight

    config = load_config(args.config, _overrides(args))
    preflight(config, command="run", out=config.out, flags=_given_flags(args))
    if args.nproc and args.nproc > 1:  # checked here once, then run by every process
        from auditclf.launch import launch, without_nproc

        return launch(args.nproc, without_nproc(args.argv), sys.stderr)
    from auditclf import distributed
    from auditclf.api import run as run_api
    from auditclf.progress import Progress
    from auditclf.runcontext import resolve_device

    # under torchrun only: join the other processes
    distributed.init(resolve_device(config.device).type, config.distributed.timeout)
    shown = not args.quiet and distributed.is_main()
    result = run_api(config, progress=shown, debug=args.debug)
    if not distributed.is_main():  # rank 0 alone writes and prints; main() shares its status
        return ExitStatus.OK
    with Progress.for_stream(shown).task(f"writing the report to {config.out}"):
        result.save(config.out)
    metrics = result.metrics
    _write_gates(out, result)
    out.write(
        f"accuracy {metrics.get('performance.accuracy', float('nan')):.4f}, "
        f"balanced accuracy {metrics.get('performance.balanced_accuracy', float('nan')):.4f}"
        f", ECE {metrics.get('performance.ece', float('nan')):.4f}\n"
    )
    out.write(f"report: {Path(config.out) / 'report.html'}\n")
    return VERDICT_STATUS[result.verdict]


def _model_command_config(args: argparse.Namespace, command: str) -> tuple[Any, Path]:
    """``train``/``harden``: the config (flags over ``--config``; ``--out`` is the model
    folder, not the report's) and that folder, checked by the preflight; under torchrun
    the process group started (data-parallel training; rank 0 alone writes and prints)."""
    from auditclf.config import load_config
    from auditclf.preflight import preflight

    overrides = _overrides(args)
    overrides.pop("out", None)
    config = load_config(args.config, overrides)
    folder = Path(args.out or "audit-model")
    preflight(config, command=command, out=folder, out_key="--out", flags=_given_flags(args))
    from auditclf import distributed  # after the preflight: it refuses before torch loads
    from auditclf.runcontext import resolve_device

    # under torchrun only: join the other processes
    distributed.init(resolve_device(config.device).type, config.distributed.timeout)
    return config, folder


def _cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    config, folder = _model_command_config(args, "train")
    from auditclf import distributed
    from auditclf.models import save_model
    from auditclf.pipeline import train_model

    data, prepared, history = train_model(config, progress=not args.quiet and distributed.is_main())
    if not distributed.is_main():  # rank 0 alone writes and prints; main() shares its status
        return ExitStatus.OK
    target = folder / "model.safetensors"
    save_model(prepared.adapter.net, prepared.spec, target)
    last = history.epochs[history.best_epoch - 1]
    out.write(
        f"trained {prepared.spec['architecture']} on {data.summary['dataset']}: "
        f"kept epoch {history.best_epoch}, val accuracy {last['val_accuracy']:.4f}\n"
    )
    out.write(f"saved {target} and {target.with_suffix('.json')}\n")
    return ExitStatus.OK


def _cmd_harden(args: argparse.Namespace, out: TextIO) -> int:
    config, folder = _model_command_config(args, "harden")
    from auditclf import distributed
    from auditclf.models import save_model
    from auditclf.pipeline import harden_model

    shown = not args.quiet and distributed.is_main()
    baseline, hardened, history = harden_model(config, progress=shown)
    if not distributed.is_main():  # rank 0 alone writes and prints; main() shares its status
        return ExitStatus.OK
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


def _cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.config import config_from_dict
    from auditclf.exporting import export_run_folder

    given = {
        "formats": args.format,
        "which": args.which,
        "calibration_images": args.calibration_images,
    }
    raw = {"export": {key: value for key, value in given.items() if value is not None}}
    export = config_from_dict(raw, source="command line").export
    for fmt, record in export_run_folder(args.folder, export).items():
        how = record.get("method") or (f"opset {record['opset']}" if "opset" in record else "")
        path = args.folder / "export" / record["file"]
        out.write(f"{fmt}: {path} ({record['size_mb']:.3f} MB; {how or record['exporter']})\n")
    return ExitStatus.OK


def _cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.io import StagedOutput
    from auditclf.pipeline import reanalyse
    from auditclf.report import write_reports
    from auditclf.report.artifacts import read_artifacts
    from auditclf.report.pdf import PDF_FILE, find_chromium, print_pdf

    chromium = find_chromium() if args.pdf else None  # before any work: none is exit 2
    result, config = reanalyse(args.folder, debug=args.debug)
    read_artifacts(args.folder, result)
    target = args.out or args.folder
    in_place = _same_folder(target, args.folder)
    # in place: keep samples and models, but not a PDF of the page this rewrites
    with StagedOutput(target, keep_others=in_place, stale=frozenset({PDF_FILE})) as staged:
        write_reports(
            staged,
            result,
            templates=args.templates,  # never the saved report's own: it is untrusted
            title=config.report.title,
        )
        if chromium is not None:
            page = staged.path("report.html").read_text(encoding="utf-8")
            staged.path(PDF_FILE).write_bytes(print_pdf(page, chromium))
    out.write(f"report: {Path(target) / 'report.html'}\n")
    if chromium is not None:
        out.write(f"pdf: {Path(target) / PDF_FILE}\n")
    return ExitStatus.OK


def _same_folder(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one folder (rewriting a report in its own folder)."""
    return os.path.realpath(a) == os.path.realpath(b)


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.catalog import CATALOG  # the registries' names, without importing torch

    for kind, title in (
        ("dataset", "datasets"),
        ("model", "models"),
        ("probe", "probes"),
        ("analysis", "analyses"),
        ("attack", "attacks"),
        ("corruption", "corruptions"),
        ("attribution", "attribution methods"),
    ):
        out.write(f"{title}:\n")
        for name, summary in CATALOG[kind].items():
            out.write(f"  {name:<26} {summary}\n")
    out.write(
        "datasets also: a folder in ImageFolder layout, or a CSV manifest "
        "path,label[,split][,attributes]\n"
    )
    out.write(
        "models also: package.module:factory or path/to/file.py:factory (with --checkpoint)\n"
    )
    return ExitStatus.OK


def _cmd_metrics(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.keys import family_lines, model_key
    from auditclf.results import AuditResult

    if args.list_keys:
        out.write("".join(line + "\n" for line in family_lines()))
        return ExitStatus.OK
    if args.report is None:
        raise UsageError("metrics: give a report.json (or the folder holding it), or --list-keys")
    path = args.report / "report.json" if args.report.is_dir() else args.report
    result = AuditResult.load(path)
    name = args.model or "baseline"
    if name not in result.models:
        raise UsageError(f"{args.report}: no model {name!r}; it has {', '.join(result.models)}")
    model = result.models[name]
    width = max((len(model_key(name, k)) for k in model.metrics), default=0)
    for key, value in model.metrics.items():  # spelt as gates spell them: hardened.<key>
        shown = "null" if value is None else f"{value:.6g}"
        reason = f"  # {model.notes[key]}" if value is None and key in model.notes else ""
        out.write(f"{model_key(name, key):<{width}}  {shown}{reason}\n")
    return ExitStatus.OK


def _cmd_gate(args: argparse.Namespace, out: TextIO) -> int:
    from dataclasses import replace

    from auditclf.compare import load_baseline, report_path
    from auditclf.config import config_from_dict, load_config
    from auditclf.gates import check_unsafe_load, gates_from_config, judge
    from auditclf.results import AuditResult

    path = report_path(args.report)
    result = AuditResult.load(path)
    config = load_config(args.config, _overrides_subset(args))
    check_unsafe_load(config.unsafe_load, result.run, source=str(path))
    entries = config.gates
    if args.config is None and args.gate is None:  # the gates the run itself was given
        entries = config_from_dict(result.run["config"], source=str(path)).gates
    regression = config.regression
    check = load_baseline(regression.baseline, regression.max_drop, regression.tolerances)
    if not entries and check is None:
        raise UsageError(
            f"{path}: no gates to evaluate: give --gate, --config with gates, or --baseline "
            "(the report's own run had none)"
        )
    outcomes, verdict = judge(result.models, gates_from_config(entries), check)
    result = replace(result, gates=outcomes, verdict=verdict)
    if check is not None:
        check.warn_on_settings(result)
    _write_gates(out, result)
    if args.out is not None:
        from auditclf.report import save_result
        from auditclf.report.artifacts import read_artifacts

        read_artifacts(path.parent, result)  # the galleries' images, to draw them again
        in_place = _same_folder(args.out, path.parent)
        save_result(
            result,
            args.out,
            templates=args.templates or config.report.templates,
            keep_others=in_place,
        )
        out.write(f"report: {Path(args.out) / 'report.html'}\n")
    return VERDICT_STATUS[result.verdict]


def _overrides_subset(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys ``auditclf gate`` takes from flags: gates and the baseline check."""
    return _nest(
        {
            ("gates",): args.gate,
            ("regression", "baseline"): args.baseline,
            **_max_drop_overrides(args.max_drop),
        }
    )


def _cmd_compare(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.compare import Tolerances, compare_reports, parse_max_drops, write_comparison
    from auditclf.config import RegressionConfig

    default, per_key = parse_max_drops(args.max_drop)
    comparison = compare_reports(
        args.a,
        args.b,
        Tolerances(RegressionConfig().max_drop if default is None else default, per_key),
        model_a=args.model,
        model_b=args.model_b or args.model,
    )
    target = args.out or Path("audit-compare")
    write_comparison(comparison, target, templates=args.templates)
    _write_comparison_summary(out, comparison)
    out.write(f"compare: {target / 'compare.html'}\n")
    return ExitStatus.GATE_FAILED if comparison["regressions"] else ExitStatus.OK


def _write_comparison_summary(out: TextIO, comparison: dict) -> None:
    """Which reports were compared, the settings they did not share, the rule, then the
    regressions, the changes within sampling error and the ten largest improvements."""
    import json

    a, b = comparison["a"], comparison["b"]
    out.write(f"A: {a['report']} ({a['model']}: {a['architecture']} on {a['dataset']})\n")
    out.write(f"B: {b['report']} ({b['model']}: {b['architecture']} on {b['dataset']})\n")
    settings = comparison["settings"]
    if settings:
        out.write(
            f"warning: A and B were audited with different settings ({len(settings)}); a "
            "change may come from them, not from the model:\n"
        )
        for row in settings:
            out.write(f"  {row['setting']}: {json.dumps(row['a'])} -> {json.dumps(row['b'])}\n")
    if not comparison["same_data"]:
        out.write("note: A and B audited different data or another split\n")
    out.write(f"rule: {comparison['rule']}\n")
    regressions, improvements = comparison["regressions"], comparison["improvements"]
    out.write(f"regressions beyond tolerance and sampling error ({len(regressions)}):\n")
    for row in regressions:
        out.write(f"  {_compare_line(row)}\n")
    noise = comparison["within_noise"]
    out.write(f"worse beyond tolerance but within sampling error ({len(noise)}):\n")
    for row in noise:
        out.write(f"  {_compare_line(row)}\n")
    lost = comparison.get("lost", [])
    if lost:
        out.write(f"not measured in B, whose settings differ ({len(lost)}):\n")
        for row in lost:
            out.write(f"  {row['why']}\n")
    out.write(f"improvements ({len(improvements)}), largest first:\n")
    for row in improvements[:10]:
        out.write(f"  {_compare_line(row)}\n")


def _compare_line(row: dict) -> str:
    def shown(value: float | None) -> str:
        return "null" if value is None else f"{value:.4f}"

    delta = "" if row["delta"] is None else f" ({row['delta']:+.4f}, {row['direction']} is better)"
    return f"{row['key']}: {shown(row['a'])} -> {shown(row['b'])}{delta}"


def _cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.schema import schema_text

    out.write(schema_text())
    return ExitStatus.OK


def _cmd_init(args: argparse.Namespace, out: TextIO) -> int:
    from auditclf.io import atomic_write_text
    from auditclf.starter_config import starter_yaml

    if args.out.exists() and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it")
    atomic_write_text(args.out, starter_yaml())
    out.write(
        f"wrote {args.out}: every option at its default; edit it, then "
        f"`auditclf run --config {args.out}`\n"
    )
    return ExitStatus.OK


# the commands whose work is split between torchrun's processes; any other, started
# under torchrun, runs on rank 0 alone (every process would write the same files)
SHARDED_COMMANDS = ("run", "train", "harden")


def _other_process() -> bool:
    """Whether this process is one of torchrun's other than rank 0."""
    from auditclf import distributed

    return not distributed.is_main()


COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "harden": _cmd_harden,
    "report": _cmd_report,
    "export": _cmd_export,
    "list": _cmd_list,
    "metrics": _cmd_metrics,
    "gate": _cmd_gate,
    "compare": _cmd_compare,
    "schema": _cmd_schema,
    "init": _cmd_init,
}


class _StdoutClosed(Exception):
    """stdout's reader has gone (``auditclf metrics DIR | head``): not an error of ours."""


class _Stdout:
    """The command's output stream, telling a closed pipe apart from any other failure."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            raise _StdoutClosed from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise _StdoutClosed from None

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)


def _drop_output(stream: TextIO) -> None:
    """Point the closed stream's descriptor at /dev/null, so that Python's own flush at
    exit does not fail on what is left in its buffer."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # a stream without fd
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def run(
    argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the CLI; return the exit status instead of exiting."""
    stream, err = stdout or sys.stdout, stderr or sys.stderr
    out = _Stdout(stream)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        # --help, --version and per-epoch lines (tqdm.write) print to our stream too
        with contextlib.redirect_stdout(out):
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help and --version: the only exits that are no error
                return int(exc.code or 0)
            args.argv = argv  # `run --nproc` hands the rest of the command line on
            if args.command not in SHARDED_COMMANDS and _other_process():
                return int(ExitStatus.OK)  # under torchrun rank 0 alone runs it, writes once
            status = int(COMMANDS[args.command](args, out))
            out.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except _StdoutClosed:  # the rest of the output is dropped quietly, as Unix tools do
        _drop_output(stream)
        return int(ExitStatus.BROKEN_PIPE)
    except AuditError as exc:
        _note_failure(exc)
        if getattr(exc, "told", False):  # a torchrun process printed it where it happened
            return int(exc.status)
        if debug:
            traceback.print_exc(file=err)
            err.write(getattr(exc, "detail", ""))  # a torchrun process's failure: its traceback
        for line in str(exc).splitlines():  # one line per mistake, each with the prefix
            err.write(f"auditclf: error: {line}\n")
        return int(exc.status)
    except KeyboardInterrupt:
        from auditclf.launch import LAUNCHED

        if not os.environ.get(LAUNCHED):  # else `run --nproc`'s launcher says it, once
            err.write("auditclf: interrupted; no report was written\n")
        return int(ExitStatus.INTERRUPTED)
    except BaseException as exc:  # noqa: BLE001 - internal errors become exit 6
        # (a SystemExit from anything but argparse too: sys.exit(0) deep inside is no success)
        _note_failure(exc)
        if debug:
            traceback.print_exc(file=err)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.write(
            f"auditclf: internal error: {type(exc).__name__}: {first} "
            "(rerun with --debug for the traceback)\n"
        )
        return int(ExitStatus.INTERNAL)


def _note_failure(exc: BaseException) -> None:
    """Tell auditclf.distributed how this process failed (who prints it under torchrun)."""
    from auditclf import distributed

    distributed.note_failure(exc)


def main() -> None:
    from auditclf import distributed

    # under torchrun rank 0 alone prints: a failure anywhere reaches it through the meetings
    # of the processes (auditclf.distributed), save one the others could not hear of
    silent, errors = (None, None) if distributed.is_main() else (io.StringIO(), io.StringIO())
    status = run(stdout=silent, stderr=errors)
    if errors is not None and distributed.unshared():
        sys.stderr.write(errors.getvalue())
    distributed.exit_all(status)  # every rank: rank 0's status
