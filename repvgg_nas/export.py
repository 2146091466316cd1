"""Export of deploy models to TorchScript and ONNX, with an onnxruntime check."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .files import atomic_write

__all__ = ["export_torchscript", "export_onnx", "onnx_max_error"]


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
) -> Path:
    """Export to a single ONNX file (input ``x``, output ``logits``, dynamic batch by default)."""
    model = model.eval()
    x = _example(model, resolution, 2)
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


def onnx_max_error(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> float:
    """Max |onnxruntime(x) - model(x)| on CPU: the exported file computes the same function."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (out,) = session.run(None, {name: x.detach().cpu().float().numpy()})
    with torch.no_grad():
        ref = model.eval().float().cpu()(x.float().cpu())
    return float((torch.from_numpy(out) - ref).abs().max())
