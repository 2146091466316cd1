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
    "input_channels", "check_sizes",
]


class ExportMismatchError(RepVGGNasError):
    """An exported file does not compute what the torch model computes."""


class OnnxCheck(NamedTuple):
    """How closely an exported ONNX file reproduces the torch model on one input."""

    max_error: float  # max |onnxruntime - torch|
    relative_error: float  # max_error / max |torch|: what the tolerance bounds, as for fusion

    def describe(self) -> str:
        return f"max |onnxruntime - torch| = {self.max_error:.2e}, relative {self.relative_error:.2e}"


def input_channels(model: nn.Module) -> int:
    """Channels of ``model``'s input: its spec's, else its first conv's (or linear's), else 3.

    Any module, not only a whole RepVGG: one deploy block or the head alone is
    exported and timed too (the per-layer latency table).
    """
    spec = getattr(model, "spec", None)
    if spec is not None and isinstance(getattr(spec, "in_channels", None), int):
        return spec.in_channels
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.Linear):  # a head: global pool, then linear
            return m.in_features
    return 3


def _example(model: nn.Module, resolution: int, batch: int) -> torch.Tensor:
    channels = input_channels(model)
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
    dynamic_size: bool = True,
) -> Path:
    """Export to a single ONNX file (input ``x``, output ``logits``).

    Batch, height and width are dynamic axes by default, so one file serves
    any batch and input size (a conv stack with a global pool accepts any);
    ``dynamic_batch=False`` / ``dynamic_size=False`` fix them to the example's
    (batch 2, ``resolution``), which a timed session of one shape may prefer.

    ``dynamo=False`` uses torch's TorchScript-based exporter: deprecated
    upstream but about ten times faster on a plain conv stack (1 s instead of
    10 s for A0 on a 2-core CPU), which is what a search that exports every
    trial's net for onnxruntime needs; both give the same graph of Conv/Relu.
    """
    model = model.eval()
    x = _example(model, resolution, 2)
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_size:
        axes.update({2: "height", 3: "width"})
    if not dynamo:
        return atomic_write(Path(path), lambda tmp: _export_torchscript_onnx(model, x, tmp, opset, axes))
    dynamic = {"x": {i: torch.export.Dim(n) for i, n in axes.items()}} if axes else None

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
    model: nn.Module, x: torch.Tensor, tmp: str, opset: int | None, axes: dict[int, str]
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model, (x,), tmp, input_names=["x"], output_names=["logits"], dynamo=False,
            dynamic_axes=_dynamic_axes(axes),
            opset_version=opset or 17, verbose=False,
        )


def _dynamic_axes(axes: dict[int, str]) -> dict[str, dict[int, str]] | None:
    """The TorchScript exporter's ``dynamic_axes``: the input's, and the batch of the logits."""
    if not axes:
        return None
    out: dict[str, dict[int, str]] = {"x": dict(axes)}
    if 0 in axes:
        out["logits"] = {0: axes[0]}
    return out


def _onnx_logits(path: str | os.PathLike, x: torch.Tensor) -> torch.Tensor:
    """The ONNX file's output for ``x``, run by onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: x.detach().cpu().float().numpy()})
    return torch.from_numpy(out)


def _onnx_check(
    path: str | os.PathLike, model: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None
) -> OnnxCheck:
    """How closely the file's output (``out``, else run now) matches ``model(x)``."""
    out = _onnx_logits(path, x) if out is None else out
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

    The file (dynamic batch, height and width) is written to a temp path beside
    ``path`` and checked on two seeded random batches: batch 2 at ``resolution``
    and batch 1 at :func:`check_sizes`'s second size, so the dynamic axes are
    exercised too. Above ``tolerance`` (relative, as
    :func:`~repvgg_nas.model.check_fusion`) on either an
    :class:`ExportMismatchError` is raised and nothing is left at ``path``;
    the worse of the two checks is returned.
    """
    channels = input_channels(model)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(b, channels, r, r, generator=g) for b, r in check_sizes(resolution)]
    checks: list[OnnxCheck] = []

    def write(tmp: str) -> None:
        export_onnx(model, tmp, resolution, dynamo=dynamo)
        for x in inputs:
            try:
                out = _onnx_logits(tmp, x)
            except Exception as e:  # onnxruntime's own error types, e.g. a size fixed in the graph
                raise ExportMismatchError(
                    f"ONNX export to {str(path)!r} cannot run in onnxruntime at batch {x.shape[0]}, "
                    f"{x.shape[2]}x{x.shape[3]} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                    f"nothing was written"
                ) from None
            check = _onnx_check(tmp, model, x, out)
            if not check.relative_error <= tolerance:  # NaN fails too
                raise ExportMismatchError(
                    f"ONNX export to {str(path)!r} does not match the torch model in onnxruntime at batch "
                    f"{x.shape[0]}, {x.shape[2]}x{x.shape[3]} (relative error {check.relative_error:.2e} > "
                    f"{tolerance:g}, max |onnxruntime - torch| = {check.max_error:.2e}); nothing was written"
                )
            checks.append(check)

    atomic_write(path, write)
    return max(checks, key=lambda c: c.relative_error)


def check_sizes(resolution: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(batch, size) of the two inputs an exported file is checked on: the given size and another.

    The second is batch 1 at ``resolution + 8``, a size whose halvings differ
    from the first's, so a height/width fixed in the graph would show.
    """
    return (2, resolution), (1, resolution + 8)
