"""Where a deploy net runs: the runtime registry (``[measure] runtime``).

Users ship RepVGG through onnxruntime (often in INT8), not through PyTorch
eager fp32, and a front measured in eager fp32 can be the wrong front for
them. A :class:`Runtime` names what a figure is measured in:

- ``torch``: the model itself, eager (or ``torch.compile``), in ``measure.dtype``;
- ``onnxruntime``: the net exported to ONNX (:func:`repvgg_nas.export.export_onnx`),
  run by onnxruntime's CPU execution provider (CUDA's on a ``cuda`` device);
- ``onnxruntime-int8``: the same ONNX file after static post-training
  quantization (QDQ, per-tensor, through
  ``onnxruntime.quantization.quantize_static``), calibrated on proxy training
  images for an accuracy and on random images when only speed is wanted
  (a conv stack's speed does not depend on its weights or activations' range).

The registry is small on purpose: a TensorRT runtime is one more entry.
:func:`check_runtime` validates a name and that its packages are installed,
so a study fails before its first trial; :func:`onnx_step` is what the
timing loop (:mod:`.timing`) times; :func:`runtime_accuracy` is the quantized
deploy net's validation accuracy (the search's accuracy objective for a
quantized runtime).
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:  # only for hints: runtimes never needs the data or settings modules at import
    from ..data import DataBundle
    from .settings import MeasureSettings

__all__ = [
    "Runtime",
    "RUNTIMES",
    "DEFAULT_RUNTIME",
    "check_runtime",
    "check_runtime_device",
    "runtime_versions",
    "onnx_providers",
    "onnx_session",
    "quantize_onnx",
    "onnx_step",
    "runtime_accuracy",
    "CALIBRATION_IMAGES",
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

# Proxy training images that calibrate an INT8 net's activation ranges.
CALIBRATION_IMAGES = 256
_CALIBRATION_BATCH = 32


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_runtime(name: Any, key: str = "measure.runtime") -> Runtime:
    """The runtime called ``name``; a one-line ConfigError for an unknown one or a missing package."""
    if not isinstance(name, str) or name not in RUNTIMES:
        raise ConfigError(f"{key} = {name!r} is invalid; allowed: {', '.join(RUNTIMES.list())}")
    runtime = RUNTIMES.get(name)
    for module, pip in runtime.packages:
        if not _installed(module):
            raise ConfigError(
                f"{key} = {runtime.name!r} needs the Python package {module!r}, which is not "
                f"installed here (pip install {pip})"
            )
    return runtime


def runtime_versions(runtime: Runtime) -> dict[str, str]:
    """Versions of the packages a figure in ``runtime`` depends on besides torch."""
    out: dict[str, str] = {}
    if runtime.onnx:
        import onnxruntime as ort

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
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"{key} = {runtime.name!r} on device {device!r} needs onnxruntime's CUDAExecutionProvider, "
            f"which this onnxruntime build lacks (pip install onnxruntime-gpu, or measure.device = 'cpu'); "
            f"available: {', '.join(available)}"
        )


def onnx_providers(device: str) -> list[Any]:
    """onnxruntime execution providers for a resolved device (``cpu``, ``cuda:N``)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    check_runtime_device("onnxruntime", device)
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def onnx_session(path: str | Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``device`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or 0  # 0: onnxruntime's own default
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: no warnings on stderr from library code
    return ort.InferenceSession(str(path), opts, providers=onnx_providers(device))


def quantize_onnx(src: str | Path, dst: str | Path, calibration: Iterable[np.ndarray]) -> Path:
    """Static INT8 PTQ of ``src`` into ``dst``: QDQ format, per-tensor, min-max calibrated.

    Per-tensor weights are what most INT8 deploy stacks use and where
    RepVGG's fused kernels lose accuracy (the QARepVGG block is the fix);
    ``calibration`` yields float32 NCHW batches.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Shape inference + graph cleanup first, as onnxruntime's quantization guide asks.
    pre = Path(dst).with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    name = onnx.load(str(pre), load_external_data=False).graph.input[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: np.ascontiguousarray(x, dtype=np.float32)}

    quantize_static(
        str(pre), str(dst), _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=False,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return Path(dst)


def _export(model: nn.Module, folder: Path, resolution: int, runtime: Runtime,
            calibration: Callable[[], Iterable[np.ndarray]]) -> Path:
    """Export ``model`` to ``folder`` and, for a quantized runtime, quantize it; the file to run."""
    from ..export import export_onnx

    model = model.float().cpu().eval()
    with torch.inference_mode(False):  # the exporter traces; the timing loop runs in inference mode
        # The TorchScript exporter: ten times faster than dynamo on a plain conv stack.
        path = export_onnx(model, folder / "model.onnx", resolution=resolution, dynamo=False)
    if runtime.quantized:
        path = quantize_onnx(path, folder / "model.int8.onnx", calibration())
    return path


def _random_batches(channels: int, resolution: int, n: int = 4, batch: int = 8, seed: int = 0) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [g.standard_normal((batch, channels, resolution, resolution), dtype=np.float32) for _ in range(n)]


def onnx_step(model: nn.Module, settings: MeasureSettings, channels: int) -> Callable[[], Any]:
    """One timed forward of ``model`` in ``settings.runtime``: export, (quantize,) open a session.

    Random input and, for INT8, random calibration images: a plain conv
    stack's speed depends on neither its weights nor its value ranges.
    """
    runtime = check_runtime(settings.runtime)
    with tempfile.TemporaryDirectory(prefix="repvgg-nas-onnx-") as tmp:
        path = _export(
            model, Path(tmp), settings.resolution, runtime,
            lambda: _random_batches(channels, settings.resolution),
        )
        session = onnx_session(path, settings.device, settings.threads)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(
        (settings.batch_size, channels, settings.resolution, settings.resolution), dtype=np.float32
    )
    feed = {name: x}
    return lambda: session.run(None, feed)


def runtime_accuracy(
    model: nn.Module,
    data: DataBundle,
    runtime: str,
    device: str = "cpu",
    *,
    threads: int | None = None,
    calibration_images: int = CALIBRATION_IMAGES,
    batch_size: int = 256,
) -> float:
    """Top-1 validation accuracy of deploy net ``model`` run in ``runtime``.

    For a quantized runtime the net is calibrated on ``calibration_images``
    proxy training images (normalized, not augmented; a seeded random subset,
    :meth:`~repvgg_nas.data.DataBundle.sample_images`, so a class-sorted
    ImageFolder set calibrates on every class): this is the accuracy of what ships. ``model`` is not changed (a CPU copy
    is exported).
    """
    import copy

    rt = check_runtime(runtime)
    if not rt.onnx:
        raise ConfigError(f"runtime_accuracy needs an onnxruntime runtime, got {runtime!r}")
    cpu = data.to("cpu")

    def calibration() -> Iterator[np.ndarray]:
        images = cpu.sample_images(calibration_images)
        for i in range(0, images.shape[0], _CALIBRATION_BATCH):
            yield images[i : i + _CALIBRATION_BATCH].numpy()

    net = copy.deepcopy(model).float().cpu().eval()
    with tempfile.TemporaryDirectory(prefix="repvgg-nas-onnx-") as tmp:
        path = _export(net, Path(tmp), cpu.resolution, rt, calibration)
        session = onnx_session(path, device, threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in cpu.batches("val", batch_size):
        (logits,) = session.run(None, {name: x.float().numpy()})
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += int(y.numel())
    return correct / max(total, 1)
