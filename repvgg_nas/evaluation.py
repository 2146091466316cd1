"""Accuracy of a deploy net in the runtime it ships in (onnxruntime, INT8).

Above both :mod:`repvgg_nas.data` and :mod:`repvgg_nas.measure`: the
measurement package runs nets and never needs images with labels, the data
package never needs a runtime. :func:`repvgg_nas.train.evaluate` is the same
figure in torch.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import nn

from .data import DataBundle
from .errors import ConfigError
from .measure.onnxrun import CALIBRATION_BATCH, CALIBRATION_IMAGES, export_for_runtime, onnx_session
from .measure.runtimes import check_runtime

__all__ = ["runtime_accuracy"]


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
    ImageFolder set calibrates on every class): this is the accuracy of what
    ships. ``model`` is not changed (a CPU copy is exported).
    """
    rt = check_runtime(runtime)
    if not rt.onnx:
        raise ConfigError(f"runtime_accuracy needs an onnxruntime runtime, got {runtime!r}")
    cpu = data.to("cpu")

    def calibration() -> Iterator[np.ndarray]:
        images = cpu.sample_images(calibration_images)
        for i in range(0, images.shape[0], CALIBRATION_BATCH):
            yield images[i : i + CALIBRATION_BATCH].numpy()

    net = copy.deepcopy(model).float().cpu().eval()
    with tempfile.TemporaryDirectory(prefix="repvgg-nas-onnx-") as tmp:
        path = export_for_runtime(net, Path(tmp), cpu.resolution, rt, calibration)
        session = onnx_session(path, device, threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in cpu.batches("val", batch_size):
        (logits,) = session.run(None, {name: x.float().numpy()})
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += int(y.numel())
    return correct / max(total, 1)
