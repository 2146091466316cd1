"""Running a deploy net in an ONNX runtime: export, INT8 quantization, sessions, the timed step.

The runtime registry (:mod:`.runtimes`) says what a runtime is; this module
runs a net in one. :func:`onnx_step` is what the timing loop (:mod:`.timing`)
times; :func:`export_for_runtime` and :func:`onnx_session` are what an
accuracy in a runtime (:func:`repvgg_nas.evaluation.runtime_accuracy`) runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .runtimes import Runtime, check_runtime, check_runtime_device
from .settings import MeasureSettings

__all__ = [
    "onnx_providers",
    "onnx_session",
    "quantize_onnx",
    "export_for_runtime",
    "onnx_step",
    "CALIBRATION_IMAGES",
    "CALIBRATION_BATCH",
]

# Proxy training images that calibrate an INT8 net's activation ranges.
CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 32


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
    # Idle worker threads sleep instead of spinning: several sessions are timed in turn (lockstep), and a
    # spinning pool of one steals the cores of the next (layers of a latency table ran 2x slow).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def export_for_runtime(model: nn.Module, folder: Path, resolution: int, runtime: Runtime,
                       calibration: Callable[[], Iterable[np.ndarray]]) -> Path:
    """Export ``model`` to ``folder`` and, for a quantized runtime, quantize it; the file to run.

    ``calibration`` is called only for a quantized runtime and yields float32
    NCHW batches.
    """
    from ..export import export_onnx

    model = model.float().cpu().eval()
    with torch.inference_mode(False):  # the exporter traces; the timing loop runs in inference mode
        # The TorchScript exporter: ten times faster than dynamo on a plain conv stack.
        # Height and width fixed: the timed session runs one shape, as a deployed one would.
        path = export_onnx(model, folder / "model.onnx", resolution=resolution, dynamo=False, dynamic_size=False)
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
        path = export_for_runtime(
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
