"""Where a deploy net runs: the runtime registry (``[measure] runtime``).

Users ship RepVGG through onnxruntime (often in INT8), not through PyTorch
eager fp32, and a front measured in eager fp32 can be the wrong front for
them. A :class:`Runtime` names what a figure is measured in:

- ``torch``: the model itself, eager (or ``torch.compile``), in ``measure.dtype``;
- ``onnxruntime``: the net exported to ONNX (:func:`repvgg_nas.export.export_onnx`),
  run by onnxruntime's CPU execution provider (CUDA's on a ``cuda`` device);
- ``onnxruntime-int8``: the same ONNX file after static post-training
  quantization (QDQ, per-tensor, through
  ``onnxruntime.quantization.quantize_static``).

This module is the registry only: settings validate against it, so it
imports neither torch nor onnxruntime at import time (nor the settings).
Running a net in a runtime is :mod:`.onnxrun`'s job. The registry is small on
purpose: a TensorRT runtime is one more entry. :func:`check_runtime`
validates a name and that its packages are installed, so a study fails
before its first trial.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "Runtime",
    "RUNTIMES",
    "DEFAULT_RUNTIME",
    "check_runtime",
    "check_runtime_device",
    "runtime_versions",
]


@dataclass(frozen=True)
class Runtime:
    """One way to run a deploy net.

    ``precision`` is the arithmetic the runtime imposes (``None``: the
    settings' ``dtype`` decides, as in torch); ``packages`` are the Python
    modules it needs, each with the pip name that provides it.
    """

    name: str
    precision: str | None
    packages: tuple[tuple[str, str], ...]
    onnx: bool
    quantized: bool
    description: str


RUNTIMES: Registry[Runtime] = Registry("runtime")
DEFAULT_RUNTIME = "torch"
_ONNX_PACKAGES = (("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("onnxscript", "onnxscript"))
RUNTIMES.register("torch", Runtime("torch", None, (), False, False, "PyTorch eager (or torch.compile)"))
RUNTIMES.register(
    "onnxruntime",
    Runtime("onnxruntime", "fp32", _ONNX_PACKAGES, True, False, "ONNX in onnxruntime, fp32"),
)
RUNTIMES.register(
    "onnxruntime-int8",
    Runtime(
        "onnxruntime-int8", "int8", _ONNX_PACKAGES, True, True,
        "ONNX in onnxruntime after static INT8 PTQ (QDQ, per-tensor)",
    ),
)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_runtime(name: Any, key: str = "measure.runtime") -> Runtime:
    """The runtime called ``name``; a one-line ConfigError for an unknown one or a missing package."""
    if not isinstance(name, str) or name not in RUNTIMES:
        raise ConfigError(f"{key}: {name!r} is not allowed; choose from {RUNTIMES.list()}")  # the house wording
    runtime = RUNTIMES.get(name)
    for module, pip in runtime.packages:
        if not _installed(module):
            raise ConfigError(
                f"{key}: {runtime.name!r} needs the Python package {module!r}, which is not "
                f"installed here (pip install {pip})"
            )
    return runtime


def runtime_versions(runtime: Runtime) -> dict[str, str]:
    """Versions of the packages a figure in ``runtime`` depends on besides torch."""
    out: dict[str, str] = {}
    if runtime.onnx:
        import onnxruntime as ort  # only once a figure in it is wanted

        out["onnxruntime"] = ort.__version__
    return out


def check_runtime_device(name: str, device: str, key: str = "measure.runtime") -> None:
    """A one-line ConfigError when runtime ``name`` cannot run on resolved ``device`` here.

    Called once the device is known (:meth:`MeasureSettings.resolve_device`), so
    an onnxruntime build without CUDA fails at load, not inside every trial.
    """
    runtime = RUNTIMES.get(name)
    if not runtime.onnx or device == "cpu":
        return
    import onnxruntime as ort  # only for an ONNX runtime on CUDA

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"{key}: {runtime.name!r} on device {device!r} needs onnxruntime's CUDAExecutionProvider, "
            f"which this onnxruntime build lacks (pip install onnxruntime-gpu, or measure.device = 'cpu'); "
            f"available: {', '.join(available)}"
        )
