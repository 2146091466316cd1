"""The per-layer latency table: a deploy net's latency predicted as the sum of its layers'.

A deploy RepVGG is a plain chain (:func:`~.memory.deploy_layers`): blocks of
``ReLU(SE(conv3x3 + bias))`` at their input sizes, then global pool + linear.
Speed needs no training, so every *distinct* layer of a search space (in/out
channels, groups, stride, input size, SE width; the head with its classes) is
measured once, in the one timing loop (:func:`~.timing.measure_models`, layers
of one input size in lockstep), at the layer's own input shape. Any net of the
space is then predicted as the sum of its layers' latencies (throughput =
batch / latency) in microseconds, without building it.

A table holds one :class:`LatencyKey`: everything that changes the figures
(device, runtime, dtype, batch, resolution, threads, memory format, compile,
torch/onnxruntime versions). It is a JSON file (:data:`LATENCY_FORMAT_VERSION`)
under the user's cache folder (:func:`~repvgg_nas.layout.user_cache_dir`) with
its key and host facts, written atomically after every measured chunk, so a
build only measures the layers it lacks and an interrupted build resumes. A
file built on the deployment machine can be handed to a search elsewhere:
:func:`load_latency_table` refuses a table of another key with one line
naming the field, unless it is named explicitly (``explicit=True``).

A predicted figure chooses what to train; a claim still rests on lockstep
measurements of whole nets.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from ..errors import ConfigError
from ..files import atomic_write_text, read_versioned_json
from ..layout import user_cache_dir
from ..model import PlainBlock, SqueezeExcite
from ..spec import RepVGGSpec
from .host import cpu_isa, device_name, environment
from .memory import DeployLayer, deploy_layers
from .runtimes import RUNTIMES, runtime_versions
from .settings import MeasureSettings
from .timing import Measurement, measure_models

__all__ = [
    "LATENCY_FORMAT_VERSION",
    "LatencyKey",
    "LayerShape",
    "LayerLatency",
    "LatencyTable",
    "LatencyProgress",
    "MissingLayersError",
    "build_latency_table",
    "load_latency_table",
    "default_latency_table_path",
    "space_specs",
    "distinct_layers",
]

# The layout of a table file (its key's fields, its entries): written in the file, checked when read.
LATENCY_FORMAT_VERSION = 2  # 2: the key names the CPU ISA; onnxruntime layers timed without spinning threads

# Layers of one input size measured in one lockstep run, at most this many at a time:
# the table is saved after each chunk, so a long build shows progress and resumes.
CHUNK = 8

# How long one layer is timed: one layer is a few milliseconds of a net's tens, so fewer and shorter repeats
# than a whole net's settle its median (benchmarks/latency_table_cpu.md checks the sums against whole nets);
# these are not part of the key: they change how long a build takes, not what a layer costs.
LAYER_TIMING = dict(warmup=1, min_repeats=3, max_repeats=9, target_cv=0.05, min_repeat_s=0.02, max_seconds=4.0)


class MissingLayersError(ConfigError):
    """A net has layers the table has not measured."""


@dataclass(frozen=True)
class LatencyKey:
    """Everything that changes a layer's figure; two tables compare equal only with equal keys.

    The fields are compared in this order, and the first that differs names
    the refusal of a foreign table.
    """

    device_name: str
    cpu_isa: str  # oneDNN's cap (ONEDNN_MAX_CPU_ISA) changes a CPU conv's cost
    runtime: str
    dtype: str
    precision: str
    batch_size: int
    resolution: int
    threads: int
    channels_last: bool
    compile: bool
    compile_mode: str
    cuda_graphs: bool
    torch: str
    onnxruntime: str | None

    @classmethod
    def from_settings(cls, settings: MeasureSettings) -> LatencyKey:
        """The key of ``settings`` on this machine (resolved: ``auto`` names the real device)."""
        s = settings.resolved()
        versions = runtime_versions(RUNTIMES.get(s.runtime))
        return cls(
            device_name=device_name(s.device), cpu_isa=cpu_isa(s.device), runtime=s.runtime, dtype=s.dtype, precision=s.precision,
            batch_size=s.batch_size, resolution=s.resolution, threads=int(s.threads or 1),
            channels_last=s.channels_last, compile=s.compile,
            compile_mode=s.compile_mode if s.compile else "", cuda_graphs=s.cuda_graphs,
            torch=torch.__version__, onnxruntime=versions.get("onnxruntime"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> LatencyKey:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, Mapping) or any(n not in data for n in names):
            lacking = [n for n in names if not isinstance(data, Mapping) or n not in data]
            raise ConfigError(f"{where}: its key lacks {', '.join(lacking)}; rebuild it")
        return cls(**{n: data[n] for n in names})

    def difference(self, other: LatencyKey) -> tuple[str, Any, Any] | None:
        """``(field, self's value, other's value)`` of the first field that differs, else None."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                return f.name, mine, theirs
        return None

    @property
    def hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def slug(self) -> str:
        """A readable file-name stem: runtime, precision, batch, resolution, threads, then the hash."""
        return (f"{self.runtime}-{self.precision}-b{self.batch_size}-r{self.resolution}-t{self.threads}-"
                f"{self.hash}")


class LayerShape(NamedTuple):
    """A deploy layer up to what its speed depends on (not its place in the net)."""

    kind: str  # ``block`` or ``head``
    in_channels: int
    out_channels: int  # the classes, for the head
    groups: int
    stride: int
    size: int  # input height = width
    se_hidden: int = 0

    @classmethod
    def of(cls, layer: DeployLayer) -> LayerShape:
        return cls(layer.kind, layer.in_channels, layer.out_channels, layer.groups, layer.stride,
                   layer.size, layer.se_hidden)

    @property
    def id(self) -> str:
        """The entry's name in a table file, e.g. ``block 48>64 g1 s2 @112`` or ``head 1280>10 @7``."""
        if self.kind == "head":
            return f"head {self.in_channels}>{self.out_channels} @{self.size}"
        se = f" se{self.se_hidden}" if self.se_hidden else ""
        return (f"block {self.in_channels}>{self.out_channels} g{self.groups} s{self.stride}{se} "
                f"@{self.size}")

    def module(self) -> nn.Module:
        """A fresh module computing this layer as the deploy net does (weights do not matter for speed)."""
        if self.kind == "head":
            return _Head(self.in_channels, self.out_channels)
        se = SqueezeExcite(self.out_channels, self.se_hidden) if self.se_hidden else None
        return PlainBlock(self.in_channels, self.out_channels, self.stride, self.groups, se)


class _Head(nn.Module):
    """Global average pool + linear: the deploy net's last step (:class:`~repvgg_nas.model.RepVGG`)."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(x), 1))


class LayerLatency(NamedTuple):
    """One table entry: the median time of one forward of a whole batch through one layer."""

    layer: LayerShape
    latency_ms: float
    latency_iqr_ms: float
    robust_cv: float
    repeats: int
    contended: bool  # too few repeats free of other processes: remeasured by the next build

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "layer": self.layer._asdict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerLatency:
        return cls(**{**data, "layer": LayerShape(**data["layer"])})

    @classmethod
    def of(cls, layer: LayerShape, m: Measurement) -> LayerLatency:
        return cls(layer, m.latency_ms, m.latency_iqr_ms, m.robust_cv, m.repeats, m.contended)


class LatencyProgress(NamedTuple):
    """What a build reports after each measured chunk (and once before the first)."""

    done: int  # layers measured so far in this build
    total: int  # layers this build measures
    measured: tuple[str, ...]  # the ids of the chunk just measured
    elapsed_s: float


class _SpaceLike(Protocol):
    """What a search space offers for enumeration (:class:`repvgg_nas.study.SearchSpace`)."""

    def dims(self) -> list[Any]: ...

    def build(self, values: Mapping[str, Any], num_classes: int, in_channels: int = 3) -> RepVGGSpec: ...


def space_specs(space: _SpaceLike, num_classes: int = 1000, in_channels: int = 3) -> Iterable[RepVGGSpec]:
    """Every spec of ``space``: the product of its dimensions' values (``Dim.values()``)."""
    dims = space.dims()
    for combo in itertools.product(*(d.values() for d in dims)):
        yield space.build({d.name: v for d, v in zip(dims, combo)}, num_classes, in_channels)


def _specs_of(
    space_or_specs: _SpaceLike | RepVGGSpec | Iterable[RepVGGSpec], num_classes: int, in_channels: int
) -> Iterable[RepVGGSpec]:
    if isinstance(space_or_specs, RepVGGSpec):
        return [space_or_specs]
    if hasattr(space_or_specs, "dims") and hasattr(space_or_specs, "build"):
        return space_specs(space_or_specs, num_classes, in_channels)  # type: ignore[arg-type]
    return space_or_specs  # type: ignore[return-value]


def distinct_layers(specs: Iterable[RepVGGSpec], resolution: int) -> list[LayerShape]:
    """Every distinct deploy layer of ``specs`` at ``resolution``, in order of first appearance."""
    seen: dict[LayerShape, None] = {}
    for spec in specs:
        for layer in deploy_layers(spec, resolution):
            seen.setdefault(LayerShape.of(layer), None)
    return list(seen)


@dataclass
class LatencyTable:
    """Per-layer latencies under one :class:`LatencyKey`; predicts a plain chain as their sum.

    ``entries`` maps :attr:`LayerShape.id` to its :class:`LayerLatency`;
    ``host`` holds the facts of the machine that measured them
    (:func:`~.host.environment`); ``build_s`` is the measuring time spent on it
    so far, over every build. ``fresh`` names the entries measured by this
    object (not stored): an older entry on disk never replaces one of them.
    """

    key: LatencyKey
    entries: dict[str, LayerLatency] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    build_s: float = 0.0
    path: Path | None = None
    fresh: set[str] = field(default_factory=set, compare=False, repr=False)

    # ---- prediction -------------------------------------------------------------
    def layers(self, spec: RepVGGSpec) -> list[LayerShape]:
        """The deploy layers of ``spec`` at this table's resolution."""
        return [LayerShape.of(layer) for layer in deploy_layers(spec, self.key.resolution)]

    def missing(
        self, specs: RepVGGSpec | Iterable[RepVGGSpec] | _SpaceLike, num_classes: int = 1000, in_channels: int = 3
    ) -> list[LayerShape]:
        """Distinct layers of ``specs`` (or of a space's specs, built with ``num_classes``/``in_channels``)
        the table lacks or holds only a contended figure of, in order of first appearance."""
        out: list[LayerShape] = []
        for layer in distinct_layers(_specs_of(specs, num_classes, in_channels), self.key.resolution):
            entry = self.entries.get(layer.id)
            if entry is None or entry.contended:
                out.append(layer)
        return out

    def predict(self, spec: RepVGGSpec) -> float:
        """Predicted seconds for one forward of a whole batch: the sum of the layers' entries.

        Raises :class:`MissingLayersError` (one line) when the table lacks a layer of ``spec``.
        """
        total = 0.0
        lacking: list[str] = []
        for layer in deploy_layers(spec, self.key.resolution):
            entry = self.entries.get(LayerShape.of(layer).id)
            if entry is None:
                lacking.append(LayerShape.of(layer).id)
            else:
                total += entry.latency_ms
        if lacking:
            raise MissingLayersError(
                f"the latency table{f' {str(self.path)!r}' if self.path else ''} lacks {len(lacking)} layer(s) "
                f"of {spec.summary()} (first: {lacking[0]}); build it for this net's space "
                f"(python -m repvgg_nas.bench --latency-table --space NAME)"
            )
        return total / 1000.0

    def predict_throughput(self, spec: RepVGGSpec) -> float:
        """Predicted images per second: the table's batch size over :meth:`predict`."""
        return self.key.batch_size / self.predict(spec)

    # ---- file -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": LATENCY_FORMAT_VERSION,
            "key": self.key.to_dict(),
            "host": self.host,
            "build_s": self.build_s,
            "entries": {k: e.to_dict() for k, e in sorted(self.entries.items())},
        }

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically, merged with entries another build wrote to the same file meanwhile."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("LatencyTable.save needs a path")
        if target.exists():
            try:
                other = _read(target)
            except ConfigError:
                other = None  # unreadable: ours replaces it
            if other is not None and other.key == self.key:
                for k, e in other.entries.items():  # ours win; a clean one of theirs beats an old contended one
                    mine = self.entries.get(k)
                    if mine is None or (k not in self.fresh and mine.contended and not e.contended):
                        self.entries[k] = e
        atomic_write_text(target, json.dumps(self.to_dict(), indent=1))
        self.path = target
        return target


def default_latency_table_path(settings: MeasureSettings) -> Path:
    """Where the table of ``settings`` on this machine lives: ``<user cache>/latency/<slug>.json``."""
    return user_cache_dir() / "latency" / f"{LatencyKey.from_settings(settings).slug}.json"


def _read(path: Path) -> LatencyTable:
    """A table file as it is, or a one-line ConfigError saying why it cannot be read."""
    where = f"latency table {str(path)!r}"
    data = read_versioned_json(path, where, LATENCY_FORMAT_VERSION,
                               "rebuild it (python -m repvgg_nas.bench --latency-table ...)")
    key = LatencyKey.from_dict(data.get("key"), where)
    try:
        entries = {k: LayerLatency.from_dict(e) for k, e in dict(data.get("entries") or {}).items()}
    except (TypeError, KeyError, ValueError) as e:
        raise ConfigError(f"{where} has a malformed entry ({e}); rebuild it") from None
    host = data.get("host") if isinstance(data.get("host"), dict) else {}
    build_s = data.get("build_s") if isinstance(data.get("build_s"), (int, float)) else 0.0
    return LatencyTable(key, entries, host, float(build_s), path)


def load_latency_table(
    path: str | os.PathLike[str], settings: MeasureSettings | None, explicit: bool = False
) -> LatencyTable:
    """Read a table file and check that it was measured under ``settings`` on this kind of machine.

    A table of another key (device, runtime, dtype, batch, resolution,
    threads, ... :class:`LatencyKey`) is refused with one line naming the
    first differing field, unless ``explicit`` says the caller names this
    table as the one to use (built on the deployment machine, say); it then
    predicts for its own key. ``settings=None`` skips the comparison.
    """
    table = _read(Path(path))
    if settings is not None and not explicit:
        diff = table.key.difference(LatencyKey.from_settings(settings))
        if diff is not None:
            name, theirs, ours = diff
            raise ConfigError(
                f"latency table {str(path)!r} was measured with {name} = {theirs!r}, but these settings "
                f"have {name} = {ours!r}; build a table for these settings, or name this one explicitly as the "
                f"table to use (load_latency_table(..., explicit=True))"
            )
    return table


def _host_facts(settings: MeasureSettings) -> dict[str, Any]:
    env = environment(settings.device, settings)
    env.update(runtime_versions(RUNTIMES.get(settings.runtime)))
    env["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return env


def _chunks(layers: Sequence[LayerShape], size: int) -> list[list[LayerShape]]:
    """Layers grouped by input size (one lockstep run needs one input shape), at most ``size`` a group."""
    by_size: dict[int, list[LayerShape]] = {}
    for layer in layers:
        by_size.setdefault(layer.size, []).append(layer)
    out: list[list[LayerShape]] = []
    for group in by_size.values():
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def build_latency_table(
    space_or_specs: _SpaceLike | RepVGGSpec | Iterable[RepVGGSpec],
    settings: MeasureSettings | None = None,
    path: str | os.PathLike[str] | None = None,
    on_progress: Callable[[LatencyProgress], None] | None = None,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    chunk: int = CHUNK,
    remeasure: bool = False,
) -> LatencyTable:
    """The table of every distinct deploy layer of a space (or of some specs) under ``settings``.

    Reads ``path`` (default :func:`default_latency_table_path`) when it exists
    (a table of another key is refused, one line), measures only the layers
    it lacks (layers of one input size in lockstep, ``chunk`` at a time, each
    at its own input shape: ``settings.batch_size`` x its channels x its
    size; the timing loop's repeats are :data:`LAYER_TIMING`'s, not the settings'), and saves after
    every chunk. ``num_classes``/``in_channels`` build
    a space's specs (ignored for specs). ``on_progress`` hears of every chunk.
    ``remeasure`` measures every layer again, replacing the entries the file holds.
    """
    settings = (settings or MeasureSettings()).resolved()
    key = LatencyKey.from_settings(settings)
    target = Path(path) if path is not None else default_latency_table_path(settings)
    if target.exists():
        table = load_latency_table(target, settings)
    else:
        table = LatencyTable(key, host=_host_facts(settings), path=target)
    if remeasure:
        todo = distinct_layers(_specs_of(space_or_specs, num_classes, in_channels), key.resolution)
    else:
        todo = table.missing(space_or_specs, num_classes, in_channels)
    if on_progress:
        on_progress(LatencyProgress(0, len(todo), (), 0.0))
    done, t0 = 0, time.perf_counter()
    for group in _chunks(todo, max(1, chunk)):
        t_chunk = time.perf_counter()
        layer_settings = _replace(settings, resolution=group[0].size, **LAYER_TIMING)
        ms = measure_models({layer.id: layer.module() for layer in group}, layer_settings, copy_models=False)
        for layer in group:
            table.entries[layer.id] = LayerLatency.of(layer, ms[layer.id])
            table.fresh.add(layer.id)
        table.build_s += time.perf_counter() - t_chunk
        table.save(target)
        done += len(group)
        if on_progress:
            on_progress(LatencyProgress(done, len(todo), tuple(layer.id for layer in group),
                                        time.perf_counter() - t0))
    if not target.exists():  # nothing to measure: still leave the (empty or complete) table on disk
        table.save(target)
    return table
