"""Export the audited model as what ships: ONNX, TorchScript and int8 ONNX.

Every format holds the adapter's normalisation, so the exported file takes the audit's
[0, 1] pixels (N, C, H, W) and returns logits, with a dynamic batch. The exports run on
the CPU on a copy of the network (the audited model is left as it is).
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from auditclf.errors import AuditError, ModelRefused
from auditclf.models.adapter import ModelAdapter
from auditclf.models.loading import describe

FORMATS = ("onnx", "torchscript", "onnx-int8")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "onnx-int8": ".int8.onnx"}
OPSET = 18  # the ONNX operator set the files are written with (stated in the export record)


class Normalized(nn.Module):
    """The network behind its normalisation, without the adapter's error handling (which the
    exporters cannot trace): [0, 1] pixels in, logits out."""

    def __init__(self, adapter: ModelAdapter) -> None:
        super().__init__()
        self.net = copy.deepcopy(adapter.net).to("cpu", memory_format=torch.contiguous_format)
        self.net.eval()
        self.register_buffer("mean", adapter.mean.detach().to("cpu").clone())
        self.register_buffer("std", adapter.std.detach().to("cpu").clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def export_path(folder: Path, which: str, fmt: str) -> Path:
    """``<folder>/<which><suffix>``: where format ``fmt`` of model ``which`` is written."""
    return Path(folder) / f"{which}{SUFFIXES[fmt]}"


def export_onnx(module: Normalized, sample: torch.Tensor, path: Path) -> dict:
    """``module`` as ONNX (torch.onnx's dynamo exporter, opset :data:`OPSET`, batch dynamic)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and progress notes
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            dynamo=True,
            opset_version=OPSET,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            external_data=False,
            verbose=False,
        )
    exporter = f"torch.onnx (dynamo), torch {torch.__version__}"
    return {"format": "onnx", "opset": OPSET, "exporter": exporter}


@contextmanager
def _quiet_exporter():
    """The exporter's progress lines (stdout) and log records (below ERROR) dropped."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def export_torchscript(module: Normalized, sample: torch.Tensor, path: Path) -> dict:
    """``module`` traced (``torch.jit.trace``) and saved as TorchScript."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's notes on Python values it froze
        traced = torch.jit.trace(module, sample, check_trace=False)
    traced.save(str(path))
    return {"format": "torchscript", "exporter": f"torch.jit.trace, torch {torch.__version__}"}


class _Calibration:
    """onnxruntime's CalibrationDataReader (any object with ``get_next``) over [0, 1]
    float32 images, in batches of 32, read once (MinMax calibration makes one pass)."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self.batches = iter(
            [{name: images[start : start + 32]} for start in range(0, len(images), 32)]
        )

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def export_onnx_int8(onnx_path: Path, path: Path, calibration: np.ndarray) -> dict:
    """The ONNX file in ``onnx_path`` quantized to int8 by onnxruntime.quantization.

    Static QDQ quantization (int8 weights per channel and activations, MinMax ranges
    calibrated on ``calibration``, [0, 1] float32 training images) after
    ``quant_pre_process`` (shape inference and graph optimisation). When no calibration
    images are given (``export.calibration_images: 0``) static quantization does not apply
    and the weights alone are quantized (dynamic quantization: activations quantized at run
    time). The record says which ran."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        with warnings.catch_warnings(), _quiet_quantizer():
            warnings.simplefilter("ignore")
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
            if len(calibration) == 0:
                quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)
                return {
                    "format": "onnx-int8",
                    "method": "dynamic (int8 weights; activations quantized at run time)",
                }
            quantize_static(
                str(prepared),
                str(path),
                _Calibration("pixels", calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    return {
        "format": "onnx-int8",
        "method": f"static QDQ (int8, per-channel weights), MinMax calibrated on "
        f"{len(calibration)} training images",
        "calibration_images": int(len(calibration)),
    }


@contextmanager
def _quiet_quantizer():
    """The quantizer logs each step at INFO on the root logger: errors only for the call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def export_model(
    adapter: ModelAdapter,
    formats: list[str],
    folder: Path,
    which: str,
    *,
    sample: np.ndarray,
    calibration: np.ndarray,
) -> dict[str, dict]:
    """Write ``adapter``'s network in each of ``formats`` to ``folder`` → {format: record
    (file, format, how it was made)}. ``sample``: two or more [0, 1] float32 images to trace
    with; ``calibration``: the int8 quantizer's (may be empty: dynamic quantization)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    module = Normalized(adapter)
    example = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32))
    records: dict[str, dict] = {}
    for fmt in formats:
        path = export_path(folder, which, fmt)
        try:
            record = _export_one(fmt, module, example, path, records, calibration)
        except AuditError:
            raise
        except Exception as exc:  # noqa: BLE001 - the exporter's or quantizer's refusal
            raise ModelRefused(
                f"the {which} model cannot be exported as {fmt} ({describe(exc)})"
            ) from exc
        records[fmt] = {**record, "file": path.name, "size_mb": path.stat().st_size / 1e6}
    return records


def _export_one(
    fmt: str,
    module: Normalized,
    example: torch.Tensor,
    path: Path,
    records: dict[str, dict],
    calibration: np.ndarray,
) -> dict:
    """One format of :func:`export_model`; int8 quantizes the float ONNX file written
    before it, or one written (and removed) for it alone."""
    if fmt == "onnx":
        return export_onnx(module, example, path)
    if fmt == "torchscript":
        return export_torchscript(module, example, path)
    if "onnx" in records:
        return export_onnx_int8(path.with_name(records["onnx"]["file"]), path, calibration)
    float_file = path.with_name(f".{path.name}.float.onnx")
    try:
        export_onnx(module, example, float_file)
        return export_onnx_int8(float_file, path, calibration)
    finally:
        float_file.unlink(missing_ok=True)
