"""Measured throughput and latency of a network on the device the user has.

The search optimizes measured speed, not FLOPs (RepVGG's point is that FLOPs
mislead), so a measurement must be trustworthy, quick and comparable across
runs:

- :class:`MeasureSettings` (``settings``) holds every knob that changes the
  figure (device, batch size, resolution, dtype, memory format,
  ``torch.compile``, CUDA graphs, CPU threads) plus how long to measure. It is
  validated when it is built, so a bad study config fails before the first trial.
- :func:`measure_model` (``timing``) warms up, then times repeats until their
  spread is small (or a repeat/time budget is spent) and reports the median,
  the IQR and the coefficient of variation, with the environment (``host``:
  device name, torch, CUDA and cuDNN versions, threads, settings) recorded beside it.
- :func:`measure_spec` (``specs``) measures a freshly built deploy-form net:
  throughput of a plain conv stack does not depend on its weights, so a
  trial's trained weights are not needed. A :class:`ThroughputCache`
  (``cache``) keyed by (spec hash, device, settings) makes sure a study never
  measures one architecture twice, in memory or persisted to a JSON file for
  resumed studies.
- ``runtimes``: what a net is measured in (``torch``, ``onnxruntime``,
  ``onnxruntime-int8``), a pure registry the settings validate against;
  ``onnxrun`` exports, quantizes and runs a net in an ONNX runtime. (The
  validation accuracy of a deploy net in a runtime needs data, so it lives
  above this package: :func:`repvgg_nas.evaluation.runtime_accuracy`.)
- ``memory``: the deploy net's layer walk (``deploy_layers``) and its peak
  activation memory (``peak_memory_mb``).
- ``latency``: the per-layer latency table (:class:`LatencyTable`): every
  distinct deploy layer of a space measured once per device and settings,
  predicting a plain chain's latency as the sum of its layers'.
- ``bench`` compares train form, deploy form and ResNet baselines (the
  library of ``python -m repvgg_nas.bench``).
"""

from __future__ import annotations

from .bench import (
    BASELINES,
    DENSE_FP16_PEAK_TFLOPS,
    baseline_complexity,
    baseline_model,
    dense_fp16_peak,
    repeatability,
    run_benchmark,
    wait_for_idle,
    write_csv,
)
from .cache import ThroughputCache
from .host import OtherLoad, cpu_busy_fraction, cpu_isa, device_name, environment
from .latency import (
    LATENCY_FORMAT_VERSION,
    LatencyKey,
    LatencyProgress,
    LatencyTable,
    LayerLatency,
    LayerShape,
    MissingLayersError,
    build_latency_table,
    default_latency_table_path,
    distinct_layers,
    load_latency_table,
    space_specs,
)
from .memory import (
    BYTES_PER_ELEMENT,
    deployed_peak_memory_mb,
    DeployLayer,
    LayerActivations,
    deploy_layers,
    layer_activations,
    peak_activation_elements,
    peak_memory_mb,
)
from ..devices import resolve_device
from .onnxrun import quantize_onnx
from .runtimes import RUNTIMES, Runtime, check_runtime
from .settings import COMPILE_MODES, DTYPES, DtypeInfo, MeasureSettings
from .specs import MeasureMany, measure_spec, measure_specs
from .timing import Measurement, measure_model, measure_models

__all__ = [
    "DTYPES",
    "DtypeInfo",
    "COMPILE_MODES",
    "MeasureSettings",
    "Measurement",
    "ThroughputCache",
    "measure_model",
    "measure_models",
    "MeasureMany",
    "measure_spec",
    "measure_specs",
    "resolve_device",
    "device_name",
    "environment",
    "OtherLoad",
    "cpu_busy_fraction",
    "cpu_isa",
    "RUNTIMES",
    "Runtime",
    "check_runtime",
    "quantize_onnx",
    "peak_memory_mb",
    "BYTES_PER_ELEMENT",
    "deployed_peak_memory_mb",
    "peak_activation_elements",
    "layer_activations",
    "LayerActivations",
    "deploy_layers",
    "DeployLayer",
    # the per-layer latency table
    "LATENCY_FORMAT_VERSION", "LatencyKey", "LayerShape", "LayerLatency", "LatencyTable", "LatencyProgress",
    "MissingLayersError", "build_latency_table", "load_latency_table", "default_latency_table_path",
    "space_specs", "distinct_layers",
    # the bench library (python -m repvgg_nas.bench)
    "BASELINES", "DENSE_FP16_PEAK_TFLOPS", "dense_fp16_peak", "baseline_model",
    "baseline_complexity", "run_benchmark", "repeatability", "write_csv", "wait_for_idle",
]
