"""What a throughput figure depends on: :class:`MeasureSettings`, dtypes, the device.

Every knob that changes the figure (device, batch size, resolution, dtype,
memory format, ``torch.compile``, CUDA graphs, CPU threads) plus how long to
measure. The settings are validated when they are built, so a bad study
config fails before the first trial; the device itself is resolved (and
checked against CUDA availability) by :meth:`MeasureSettings.resolve_device`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from typing import Any

import torch

from ..config import check_bool, check_int, check_number, dataclass_from_dict
from ..errors import ConfigError
from ..registry import Registry
from .runtimes import DEFAULT_RUNTIME, RUNTIMES, check_runtime, check_runtime_device

__all__ = ["DTYPES", "DtypeInfo", "COMPILE_MODES", "MeasureSettings", "resolve_device"]


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

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _invalid(name: str, value: Any, allowed: str) -> ConfigError:
    """The error for ``measure.<name>``: the key, the bad value, what is allowed."""
    return ConfigError(f"measure.{name} = {value!r} is invalid; {allowed}")


def _check(name: str, value: Any, check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a shared :mod:`repvgg_nas.config` check on ``measure.<name>``.

    Its verdict is kept; the message keeps the ``measure.<name> = <value> is
    invalid`` form that study configs have always reported.
    """
    key = f"measure.{name}"
    try:
        check(key, value, *args, **kwargs)
    except ConfigError as e:
        detail = str(e).removeprefix(key).strip()
        raise _invalid(name, value, detail.rpartition(", got ")[0] or detail) from None


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
            ``onnxruntime`` (fp32) or ``onnxruntime-int8`` (static PTQ). Left
            out of :meth:`to_dict` when ``torch``, so figures and cache keys
            from before the field existed stay valid.
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
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device.strip().lower()):
            raise _invalid("device", self.device, "allowed: auto, cpu, cuda, cuda:N")
        object.__setattr__(self, "device", self.device.strip().lower())
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise _invalid("dtype", self.dtype, f"allowed: {', '.join(DTYPES.list())}")
        object.__setattr__(self, "dtype", DTYPES.canonical(self.dtype))
        if self.compile_mode not in COMPILE_MODES:
            raise _invalid("compile_mode", self.compile_mode, f"allowed: {', '.join(COMPILE_MODES)}")
        for name in ("channels_last", "compile", "cuda_graphs"):
            _check(name, getattr(self, name), check_bool)
        for name in ("batch_size", "resolution", "min_repeats", "max_repeats"):
            _check(name, getattr(self, name), check_int, 1)
        _check("warmup", self.warmup, check_int, 0)
        _check("threads", self.threads, check_int, 1, allow_none=True)
        if self.max_repeats < self.min_repeats:
            raise _invalid("max_repeats", self.max_repeats, f"must be >= min_repeats ({self.min_repeats})")
        for name in ("target_cv", "min_repeat_s", "max_seconds"):
            _check(name, getattr(self, name), check_number, 0)
        _check("max_other_load", self.max_other_load, check_number, 0, 1, lo_open=True)
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
        name = self.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ConfigError(
                    f"measure.device = {self.device!r} but CUDA is not available on this "
                    f"machine (torch {torch.__version__}); use 'cpu' or 'auto'"
                )
            index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise ConfigError(
                    f"measure.device = {self.device!r} but only {torch.cuda.device_count()} "
                    f"CUDA device(s) exist"
                )
            self._check_for_device("cuda")
            check_runtime_device(self.runtime, f"cuda:{index}")  # e.g. onnxruntime without its CUDA provider
            return torch.device("cuda", index)
        self._check_for_device("cpu")
        return torch.device("cpu")

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
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["runtime"] == DEFAULT_RUNTIME:
            del d["runtime"]  # keeps the cache keys of torch figures from before the field
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), used in cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "measure") -> MeasureSettings:
        """Build from a config table; unknown keys are rejected with the allowed list.

        ``where`` names the table in messages (e.g. ``study.toml: measure``).
        """
        try:
            return dataclass_from_dict(cls, data, where)
        except ConfigError as e:
            if where != "measure":
                raise ConfigError(f"{where}: {e}") from None
            raise


def resolve_device(device: torch.device | str | None = "auto") -> torch.device:
    """The one device resolver: ``None``/``auto`` -> CUDA when available, else CPU.

    Shorthand for ``MeasureSettings(device=device).resolve_device()``, so a
    CUDA device that is missing, or an unknown name, is a ConfigError here
    rather than a torch error later. A ``torch.device`` is taken by its name.
    """
    name = "auto" if device is None else str(device)
    return MeasureSettings(device=name).resolve_device()
