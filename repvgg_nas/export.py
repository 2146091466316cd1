"""Export of deploy models to TorchScript and ONNX, with an onnxruntime check."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .errors import RepVGGNasError
from .files import atomic_write
from .model import FUSION_TOLERANCE

__all__ = [
    "export_torchscript", "export_onnx", "onnx_max_error", "export_checked_onnx", "OnnxCheck", "ExportMismatchError",
]


class ExportMismatchError(RepVGGNasError):
    """An exported file does not compute what the torch model computes."""


class OnnxCheck(NamedTuple):
    """How closely an exported ONNX file reproduces the torch model on one input."""

    max_error: float  # max |onnxruntime - torch|
    relative_error: float  # max_error / max |torch|: what the tolerance bounds, as for fusion

    def describe(self) -> str:
        return f"max |onnxruntime - torch| = {self.max_error:.2e}, relative {self.relative_error:.2e}"


def _example(model: nn.Module, resolution: int, batch: int) -> torch.Tensor:
    spec = getattr(model, "spec", None)
    channels = spec.in_channels if spec is not None else 3
    p = next(model.parameters())
    return torch.randn(batch, channels, resolution, resolution, device=p.device, dtype=p.dtype)


def export_torchscript(model: nn.Module, path: str | os.PathLike, resolution: int = 224) -> Path:
    """Trace ``model`` (eval mode) to a TorchScript file loadable with ``torch.jit.load``."""
    model = model.eval()
    x = _example(model, resolution, 1)
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated upstream but still what many deploy stacks load.
        warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
        traced = torch.jit.trace(model, x)
        return atomic_write(path, lambda tmp: torch.jit.save(traced, tmp))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    resolution: int = 224,
    opset: int | None = None,
    dynamic_batch: bool = True,
    dynamo: bool = True,
) -> Path:
    """Export to a single ONNX file (input ``x``, output ``logits``, dynamic batch by default).

    ``dynamo=False`` uses torch's TorchScript-based exporter: deprecated
    upstream but about ten times faster on a plain conv stack (1 s instead of
    10 s for A0 on a 2-core CPU), which is what a search that exports every
    trial's net for onnxruntime needs; both give the same graph of Conv/Relu.
    """
    model = model.eval()
    x = _example(model, resolution, 2)
    if not dynamo:
        return atomic_write(Path(path), lambda tmp: _export_torchscript_onnx(model, x, tmp, opset, dynamic_batch))
    dynamic = {"x": {0: torch.export.Dim("batch")}} if dynamic_batch else None

    def write(tmp: str) -> None:
        torch.onnx.export(
            model,
            (x,),
            tmp,
            input_names=["x"],
            output_names=["logits"],
            dynamo=True,
            external_data=False,
            dynamic_shapes=dynamic,
            opset_version=opset,
            verbose=False,
        )

    return atomic_write(Path(path), write)


def _export_torchscript_onnx(
    model: nn.Module, x: torch.Tensor, tmp: str, opset: int | None, dynamic_batch: bool
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model, (x,), tmp, input_names=["x"], output_names=["logits"], dynamo=False,
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
            opset_version=opset or 17, verbose=False,
        )


def _onnx_logits(path: str | os.PathLike, x: torch.Tensor) -> torch.Tensor:
    """The ONNX file's output for ``x``, run by onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: x.detach().cpu().float().numpy()})
    return torch.from_numpy(out)


def _onnx_check(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> OnnxCheck:
    out = _onnx_logits(path, x)
    with torch.no_grad():
        ref = model.eval().float().cpu()(x.float().cpu())
    err = float((out - ref).abs().max())
    return OnnxCheck(err, err / max(float(ref.abs().max()), 1e-12))


def onnx_max_error(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> float:
    """Max |onnxruntime(x) - model(x)| on CPU: the exported file computes the same function."""
    return _onnx_check(path, model, x).max_error


def export_checked_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    resolution: int = 224,
    *,
    tolerance: float = FUSION_TOLERANCE,
    dynamo: bool = True,
) -> OnnxCheck:
    """:func:`export_onnx`, checked in onnxruntime before the file is moved into place.

    The file is written to a temp path beside ``path`` and checked on a seeded
    random batch; above ``tolerance`` (relative, as :func:`~repvgg_nas.model.check_fusion`)
    an :class:`ExportMismatchError` is raised and nothing is left at ``path``.
    """
    spec = getattr(model, "spec", None)
    channels = spec.in_channels if spec is not None else 3
    x = torch.randn(2, channels, resolution, resolution, generator=torch.Generator().manual_seed(0))
    checks: list[OnnxCheck] = []

    def write(tmp: str) -> None:
        export_onnx(model, tmp, resolution, dynamo=dynamo)
        check = _onnx_check(tmp, model, x)
        if not check.relative_error <= tolerance:  # NaN fails too
            raise ExportMismatchError(
                f"ONNX export to {str(path)!r} does not match the torch model in onnxruntime (relative error "
                f"{check.relative_error:.2e} > {tolerance:g}, max |onnxruntime - torch| = {check.max_error:.2e}); "
                f"nothing was written"
            )
        checks.append(check)

    atomic_write(path, write)
    return checks[0]
