"""What a throughput figure depends on: :class:`MeasureSettings`, dtypes, the device.

Every knob that changes the figure (device, batch size, resolution, dtype,
memory format, ``torch.compile``, CUDA graphs, CPU threads) plus how long to
measure. The settings are validated when they are built, so a bad study
config fails before the first trial; the device itself is resolved (and
checked against CUDA availability) by :meth:`MeasureSettings.resolve_device`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from typing import Any

import torch

from ..config import Table
from ..devices import DEVICE_NAMES, check_device_name
from ..devices import resolve_device as _resolve_device
from ..errors import ConfigError
from ..registry import Registry
from .runtimes import DEFAULT_RUNTIME, RUNTIMES, check_runtime, check_runtime_device

__all__ = ["DTYPES", "DtypeInfo", "COMPILE_MODES", "MeasureSettings"]


@dataclass(frozen=True)
class DtypeInfo:
    """How a dtype name maps onto torch: the tensor dtype and whether TF32 is allowed."""

    name: str
    torch_dtype: torch.dtype
    tf32: bool
    cpu: bool  # measurable on CPU


DTYPES: Registry[DtypeInfo] = Registry("dtype")
# fp32 means true IEEE fp32: TF32 is switched off explicitly (cuDNN allows it by default).
DTYPES.register("fp32", DtypeInfo("fp32", torch.float32, tf32=False, cpu=True))
DTYPES.register("tf32", DtypeInfo("tf32", torch.float32, tf32=True, cpu=False))
DTYPES.register("fp16", DtypeInfo("fp16", torch.float16, tf32=False, cpu=False))
DTYPES.register("bf16", DtypeInfo("bf16", torch.bfloat16, tf32=False, cpu=False))

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class MeasureSettings:
    """Everything that changes a throughput figure, validated up front.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: images per forward pass.
        resolution: input height = width.
        dtype: ``fp32`` (true IEEE fp32), ``tf32``, ``fp16`` or ``bf16``; only fp32 on CPU.
            Half types convert the model (faster for inference than autocast).
        channels_last: NHWC memory format for model and input. On by default:
            oneDNN (CPU) and cuDNN tensor cores both prefer it for convs.
        compile: wrap the model in ``torch.compile`` (mode ``compile_mode``).
        compile_mode: one of :data:`COMPILE_MODES`.
        cuda_graphs: capture one forward in a CUDA graph and time its replays
            (CUDA only; removes launch overhead for small nets and batches).
        threads: CPU intra-op threads, set explicitly for the measurement and
            restored after; ``None`` keeps torch's current count (recorded).
        warmup: untimed forward passes first (oneDNN/cuDNN pick kernels, caches fill).
        min_repeats, max_repeats: bounds on the number of timed repeats.
        target_cv: stop once the robust coefficient of variation of the
            repeats (IQR / 1.349 / median) is at most this.
        min_repeat_s: each repeat runs enough forwards to last at least this
            long, so microsecond nets are not timed by timer noise.
        max_seconds: stop after ``min_repeats`` once the timed loop has run this long.
        max_other_load: on CPU, a repeat during which other processes used more
            than this share of the machine's CPU (plus the share of cores our
            threads leave free) is dropped: a shared 2-core box otherwise
            reports its neighbours, not the net. 1.0 keeps every repeat.
        runtime: what the net runs in (:data:`~.runtimes.RUNTIMES`): ``torch``,
            ``onnxruntime`` (fp32) or ``onnxruntime-int8`` (static PTQ).
    """

    device: str = "auto"
    batch_size: int = 16
    resolution: int = 224
    dtype: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    threads: int | None = None
    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 30
    target_cv: float = 0.02
    min_repeat_s: float = 0.1
    max_seconds: float = 20.0
    max_other_load: float = 0.25
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        runtime = check_runtime(self.runtime)  # unknown name or missing package: one line
        object.__setattr__(self, "runtime", runtime.name)
        t = Table.of(self, "measure")
        device = check_device_name(self.device)
        if device is None:
            raise t.reject("device", self.device, f"allowed: {DEVICE_NAMES}")
        dtype = t.get("dtype", str)
        if dtype not in DTYPES:
            raise t.reject("dtype", dtype, f"allowed: {', '.join(DTYPES.list())}")
        t.get("compile_mode", str, choices=COMPILE_MODES)
        for name in ("channels_last", "compile", "cuda_graphs"):
            t.get(name, bool)
        for name in ("batch_size", "resolution", "min_repeats", "max_repeats"):
            t.get(name, int, min=1)
        t.get("warmup", int, min=0)
        t.get("threads", int, None, min=1)
        if self.max_repeats < self.min_repeats:
            raise t.reject("max_repeats", self.max_repeats, f"must be >= min_repeats ({self.min_repeats})")
        values = {name: t.get(name, float, min=0) for name in ("target_cv", "min_repeat_s", "max_seconds")}
        values["max_other_load"] = t.get("max_other_load", float, min=0, max=1, min_open=True)
        values.update(device=device, dtype=DTYPES.canonical(dtype))
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if self.device == "cpu":
            self._check_for_device("cpu")
        if runtime.name != DEFAULT_RUNTIME:
            torch_only = [n for n in ("compile", "cuda_graphs") if getattr(self, n)]
            if self.dtype != "fp32" or torch_only:
                what = f"dtype = {self.dtype!r}" if self.dtype != "fp32" else f"{torch_only[0]} = true"
                raise ConfigError(
                    f"measure.{what} cannot be combined with measure.runtime = {runtime.name!r}; "
                    f"with {runtime.name} use dtype = 'fp32', compile = false, cuda_graphs = false"
                )
        if self.compile and self.cuda_graphs:
            raise ConfigError(
                "measure.cuda_graphs = true cannot be combined with measure.compile = true; "
                "use compile_mode = 'reduce-overhead', which captures CUDA graphs itself"
            )

    def _check_for_device(self, kind: str) -> None:
        """Settings that only make sense on CUDA, checked once the device is known."""
        if kind != "cpu":
            return
        if not DTYPES.get(self.dtype).cpu:
            allowed = ", ".join(n for n in DTYPES if DTYPES.get(n).cpu)
            raise ConfigError(
                f"measure.dtype = {self.dtype!r} needs a CUDA device; on cpu allowed: {allowed}"
            )
        if self.cuda_graphs:
            raise ConfigError("measure.cuda_graphs = true needs a CUDA device; the device is cpu")

    # ---- device ----------------------------------------------------------------
    def resolve_device(self) -> torch.device:
        """The concrete device: ``auto`` becomes ``cuda`` when available, else ``cpu``.

        Raises ConfigError when CUDA is asked for but missing, or when the
        settings do not fit the resolved device (e.g. fp16 under ``auto`` on a CPU host).
        """
        device = _resolve_device(self.device, key="measure.device")
        self._check_for_device(device.type)
        if device.type == "cuda":  # e.g. onnxruntime without its CUDA provider
            check_runtime_device(self.runtime, f"cuda:{device.index}")
        return device

    def resolved(self) -> MeasureSettings:
        """A copy with a concrete device and (on CPU) a concrete thread count.

        This is what a measurement records and what the cache is keyed on, so
        ``auto`` on two machines never shares an entry.
        """
        device = self.resolve_device()
        threads = self.threads if self.threads is not None else torch.get_num_threads()
        return _replace(self, device=str(device), threads=threads)

    # ---- serialization ---------------------------------------------------------
    @property
    def precision(self) -> str:
        """The arithmetic a figure is measured in: the runtime's (``int8``) or the dtype."""
        return RUNTIMES.get(self.runtime).precision or self.dtype

    def to_dict(self) -> dict[str, Any]:
        """Every field: what a cache key and a recorded measurement hold."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), used in cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "measure") -> MeasureSettings:
        """Build from a config table; unknown keys are rejected with the allowed list.

        ``where`` names the table in messages (e.g. ``study.toml: measure``).
        """
        try:
            if data is None:
                return cls()
            return Table(data, "measure").build(cls)
        except ConfigError as e:
            if where != "measure":
                raise ConfigError(f"{where}: {e}") from None
            raise
