"""Exported models as torch modules: an ONNX file through onnxruntime, and our own TorchScript.

An ONNX file is data, not code: onnxruntime runs its graph with the kernels compiled into
it. :func:`check_onnx` keeps it that way before a session is opened: it refuses a file that
is unreadable, that keeps its weights in external files (paths read from the file), whose
nodes need operators from a domain onnxruntime does not ship (a custom-op library would
have to be loaded, which would run native code; auditclf never loads one), or whose input
is not one rank-4 float tensor (the audit's (N, C, H, W) [0, 1] pixels).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from auditclf.errors import ModelRefused
from auditclf.models.loading import describe

# the ONNX standard domains, run by onnxruntime's built-in kernels
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
# Microsoft's contrib operators that onnxruntime's own quantizer (onnxruntime.quantization)
# writes: QDQ with contrib ops, the QOperator format and dynamic quantization. They are
# compiled into onnxruntime's CPU provider (no library to load, no Python to run), so an
# int8 file of ours, or of the user's made the same way, is accepted; any other op of the
# com.microsoft domain (the optimizer's fused kernels, attention, ...) is refused with the
# rest, as the audit has no use for it and cannot vouch for it.
QUANTIZER_CONTRIB_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QLinearLeakyRelu",
        "QLinearSigmoid",
        "QLinearSoftmax",
        "QLinearWhere",
        "QLinearReduceMean",
    }
)
CONTRIB_DOMAIN = "com.microsoft"
ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT
EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def _nodes(graph):
    """Every node of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _nodes(sub)


def _read(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise ModelRefused(f"{path}: not a readable ONNX model ({describe(exc)})") from exc


def _check_domains(model, path: Path) -> None:
    local = {function.domain for function in model.functions}  # defined in the file itself
    bodies = [node for function in model.functions for node in function.node]
    for node in [*_nodes(model.graph), *bodies]:
        domain = node.domain
        if domain in STANDARD_DOMAINS or domain in local:
            continue
        if domain == CONTRIB_DOMAIN and node.op_type in QUANTIZER_CONTRIB_OPS:
            continue
        raise ModelRefused(
            f"{path}: node {node.name or node.op_type!r} uses operator {node.op_type!r} of the "
            f"custom domain {domain!r}; auditclf runs only the standard ONNX operators (and "
            "onnxruntime's quantization operators) and never loads custom-op libraries"
        )


def _check_external(model, path: Path) -> None:
    for tensor in model.graph.initializer:
        if tensor.data_location == EXTERNAL:
            raise ModelRefused(
                f"{path}: tensor {tensor.name!r} is stored in an external file; auditclf reads "
                "only self-contained ONNX files (paths in the file are not followed)"
            )


def _check_input(model, path: Path) -> None:
    weights = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    if len(inputs) != 1:
        raise ModelRefused(
            f"{path}: the graph has {len(inputs)} inputs; expected one (N, C, H, W) image batch"
        )
    tensor = inputs[0].type.tensor_type
    rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
    if tensor.elem_type != ONNX_FLOAT or rank != 4:
        raise ModelRefused(
            f"{path}: input {inputs[0].name!r} is not a rank-4 float32 tensor (element type "
            f"{tensor.elem_type}, rank {rank}); expected (N, C, H, W) [0, 1] pixels"
        )


def check_onnx(path: Path):
    """The ONNX model in ``path``, checked (see the module's docstring) → its ModelProto;
    ``ModelRefused`` naming the file otherwise."""
    path = Path(path)
    model = _read(path)
    _check_external(model, path)
    _check_domains(model, path)
    _check_input(model, path)
    return model


def opset(model) -> int | None:
    """The model's version of the standard ONNX operator set."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


class OnnxModule(nn.Module):
    """An ONNX file run by onnxruntime's CPU provider, as a torch module: ``forward(x)`` with
    x (N, C, H, W) float32 in [0, 1] → logits (N, K) float32 on x's device.

    The batch makes a numpy round trip through the host (onnxruntime's CPU provider reads
    host memory); nothing is differentiable (``has_gradients`` is False, the output does not
    require grad), so gradient-based probes cannot run on it. The file is checked by
    :func:`check_onnx` before the session opens, and no custom-op library is registered.
    """

    has_gradients = False

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        proto = check_onnx(self.path)
        self.opset = opset(proto)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not the user's concern
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own refusal of the graph
            raise ModelRefused(f"{self.path}: onnxruntime cannot run it ({describe(exc)})") from exc
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            (logits,) = self.session.run(None, {self.input_name: pixels})[:1]
        except Exception as exc:  # noqa: BLE001 - the graph failed on this batch
            raise ModelRefused(
                f"{self.path}: onnxruntime failed on a batch of shape {list(x.shape)} "
                f"({describe(exc)})"
            ) from exc
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)).to(x.device)


def load_own_torchscript(path: Path) -> torch.jit.ScriptModule:
    """The TorchScript file that this run itself just exported (``export/<which>.pt``), loaded
    on the CPU in eval mode.

    ``torch.jit.load`` of an untrusted file is refused everywhere else in auditclf (a
    TorchScript archive is code for the TorchScript interpreter, and can carry pickled
    objects). Loading this one is within the security model because the file is ours: it
    was written moments ago by :func:`auditclf.models.export.export_torchscript` from the
    network the run audited, into the run's own output folder, and is read back only to
    measure that what ships behaves like what was audited. It is never called on a file
    the user names (their checkpoint stays a safetensors/state-dict load).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x: "jit.load is deprecated"
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()
