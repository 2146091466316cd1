"""The pre-screen: score >= 10^4 nets of a space on a zero-cost proxy and predicted speed, keep the pool.

Before any training, every net of the space (or ``n`` distinct nets drawn at
random, when the space is larger) is scored on a cheap proxy of accuracy and
on a predicted throughput. The pool is what can extend the front: the nets
predicted faster than the slowest reference, non-dominated on (proxy,
predicted speed); when that front holds fewer than ``min_pool_size`` nets, the
next non-dominated layers are added, the last one thinned evenly over the
speed range. A predicted figure only chooses what to train; claims use
lockstep measurements.

The speed predictor is passed in (the latency table's ``predict_throughput``
in a search, :func:`macs_stand_in` in tests): there is no default, so a pool
never rests on a predictor nobody chose.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError
from ..spec import RepVGGSpec
from ..stats import pareto_mask
from .proxies import DEFAULT_PROXY, PROXIES, ProxyInputs, deploy_macs

__all__ = [
    "POOL_FORMAT",
    "Pool",
    "PoolMember",
    "PoolSettings",
    "PrescreenResult",
    "macs_stand_in",
    "prescreen",
    "select_pool",
]

# The layout of a stored pool (``Pool.to_dict``): one of another format is refused.
POOL_FORMAT = 1

ThroughputPredictor = Callable[[RepVGGSpec], float]


class SearchSpace(Protocol):
    """What the pre-screen needs of a search space (:class:`repvgg_nas.study.SearchSpace` has it). A
    protocol, not an import: the study config validates ``[prescreen]`` with this package, so this package
    must not import the study package back."""

    name: str

    @property
    def hash(self) -> str: ...

    def size(self) -> int: ...

    def enumerate_values(self) -> Iterator[dict[str, Any]]: ...

    def sample_values(self, rng: random.Random) -> dict[str, Any]: ...

    def build(self, values: Mapping[str, Any], num_classes: int, in_channels: int = 3) -> RepVGGSpec: ...


def macs_stand_in(resolution: int = 224) -> ThroughputPredictor:
    """A stand-in speed predictor, ``1e9 / deploy MACs`` ("images/s" of a 1 GMAC/s device).

    For tests and for pre-screening before a latency table exists; pass it
    explicitly, and a reference's speed computed with the same predictor.
    """

    def predict(spec: RepVGGSpec) -> float:
        return 1e9 / deploy_macs(spec, resolution)

    predict.__qualname__ = f"macs_stand_in({resolution})"
    return predict


@dataclass(frozen=True)
class PoolMember:
    """One net of the pool: the trial params that build it, its spec hash and its two predicted figures.

    ``layer`` 0 is the non-dominated set; 1 the front of what is left; ...
    """

    params: dict[str, Any]
    spec_hash: str
    proxy: float
    throughput: float
    layer: int = 0


@dataclass(frozen=True)
class PoolSettings:
    """What a pool was made with, so a resumed study or a worker can tell it is the same one."""

    space: str
    space_hash: str
    proxy: str
    speed_source: str
    reference_throughput: float
    n: int
    min_pool_size: int
    seed: int
    num_classes: int
    in_channels: int
    resolution: int


@dataclass(frozen=True)
class Pool:
    """The nets a sampler may draw from, with the settings that made them (JSON round-trip)."""

    members: tuple[PoolMember, ...]
    settings: PoolSettings

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[PoolMember]:
        return iter(self.members)

    def specs(self, space: SearchSpace) -> list[RepVGGSpec]:
        """Every member's spec, built by ``space`` (the one the pool was made from)."""
        s = self.settings
        return [space.build(m.params, s.num_classes, s.in_channels) for m in self.members]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": POOL_FORMAT,
            "settings": asdict(self.settings),
            "members": [asdict(m) for m in self.members],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pool:
        """A pool from :meth:`to_dict`'s layout; another format or missing keys raise ConfigError."""
        if not isinstance(data, Mapping) or data.get("format") != POOL_FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ConfigError(f"a stored pool has format {got!r}; this version reads format {POOL_FORMAT} only")
        try:
            raw = dict(data["settings"])
            if "pool_size" in raw:  # the key's name in studies stored before it said what it is
                raw["min_pool_size"] = raw.pop("pool_size")
            settings = PoolSettings(**raw)
            members = tuple(PoolMember(**m) for m in data["members"])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"a stored pool is malformed: {e}") from None
        return cls(members, settings)


@dataclass(frozen=True)
class PrescreenResult:
    """The pool and what it took: nets scored, how many beat the slowest reference, front size, seconds."""

    pool: Pool
    scored: int
    faster_than_reference: int
    front_size: int
    seconds: float


def select_pool(proxy: np.ndarray, throughput: np.ndarray, min_pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pool and their non-dominated layer: the whole front (layer 0), then the next layers
    while the pool is smaller than ``min_pool_size``; the layer that crosses ``min_pool_size`` is thinned to
    members evenly spread over its log-speed range."""
    proxy, throughput = np.asarray(proxy, float), np.asarray(throughput, float)
    left = np.arange(len(proxy))
    chosen: list[np.ndarray] = []
    layers: list[np.ndarray] = []
    count, layer = 0, 0
    while len(left) and (layer == 0 or count < min_pool_size):
        mask = pareto_mask(proxy[left], throughput[left])
        front, left = left[mask], left[~mask]
        if layer > 0 and count + len(front) > min_pool_size:
            front = _spread(front, throughput, min_pool_size - count)
        chosen.append(front)
        layers.append(np.full(len(front), layer))
        count += len(front)
        layer += 1
    if not chosen:
        return np.empty(0, int), np.empty(0, int)
    return np.concatenate(chosen), np.concatenate(layers)


def _spread(idx: np.ndarray, throughput: np.ndarray, k: int) -> np.ndarray:
    """``k`` of ``idx`` whose speeds lie closest to ``k`` points evenly spaced in log speed."""
    order = idx[np.argsort(throughput[idx])]
    logs = np.log(throughput[order])
    targets = np.linspace(logs[0], logs[-1], k)
    picked: list[int] = []
    free = np.ones(len(order), dtype=bool)
    for t in targets:
        j = int(np.argmin(np.where(free, np.abs(logs - t), np.inf)))
        free[j] = False
        picked.append(j)
    return order[sorted(picked)]


def _candidates(space: SearchSpace, n: int, seed: int, num_classes: int,
                in_channels: int) -> list[tuple[dict[str, Any], RepVGGSpec]]:
    """Every distinct net of ``space`` when it holds at most ``n`` assignments, else ``n`` distinct random ones."""
    out: dict[str, tuple[dict[str, Any], RepVGGSpec]] = {}
    if space.size() <= n:
        for values in space.enumerate_values():
            spec = space.build(values, num_classes, in_channels)
            out.setdefault(spec.hash, (values, spec))
        return list(out.values())
    rng = random.Random(seed)
    misses = 0
    # Duplicates (an unused g, say) only slow the draw; stop when new nets have become rare.
    while len(out) < n and misses < 20 * n:
        values = space.sample_values(rng)
        spec = space.build(values, num_classes, in_channels)
        if spec.hash in out:
            misses += 1
        else:
            out[spec.hash] = (values, spec)
    return list(out.values())


def prescreen(
    space: SearchSpace,
    *,
    predict_throughput: ThroughputPredictor,
    reference_throughput: float,
    num_classes: int,
    in_channels: int = 3,
    proxy: str = DEFAULT_PROXY,
    n: int = 10_000,
    min_pool_size: int = 32,
    seed: int = 0,
    resolution: int = 32,
    speed_source: str | None = None,
) -> PrescreenResult:
    """Score ``n`` nets of ``space`` (all, when it is smaller) and keep the pool.

    Args:
        predict_throughput: predicted images/s of a spec (the latency table's
            ``predict_throughput``, or :func:`macs_stand_in`).
        reference_throughput: the slowest reference's speed on the same
            predictor: only nets predicted faster can extend the front.
        proxy: a :data:`PROXIES` name that needs no data (all nets are scored).
        min_pool_size: the least pool size: the front, plus the next layers
            while it is smaller.
        resolution: the proxy resolution (MACs proxy only).
        speed_source: recorded in the settings; default: the predictor's name.

    Raises ConfigError (one line) when no net is predicted faster than the
    reference, or when the proxy needs data.
    """
    if min_pool_size < 1 or n < 1:
        raise ConfigError(f"pre-screen: min_pool_size and n must be >= 1, got {min_pool_size} and {n}")
    entry = PROXIES.get(proxy)
    if entry.needs_data:
        raise ConfigError(
            f"pre-screen proxy {entry.name!r} needs data and is too slow for every net of a space; "
            f"use one of {', '.join(p for p in PROXIES if not PROXIES.get(p).needs_data)}"
        )
    start = time.perf_counter()
    cands = _candidates(space, n, seed, num_classes, in_channels)
    inputs = ProxyInputs(resolution=resolution, seed=seed)
    scores = np.array([entry(spec, inputs) for _, spec in cands], dtype=float)
    speeds = np.array([float(predict_throughput(spec)) for _, spec in cands], dtype=float)
    faster = np.flatnonzero(speeds > reference_throughput)
    if not len(faster):
        raise ConfigError(
            f"search space {space.name!r}: no net is predicted faster than the slowest reference "
            f"({reference_throughput:.4g} images/s; fastest net {speeds.max():.4g})"
        )
    picked, layers = select_pool(scores[faster], speeds[faster], min_pool_size)
    order = np.lexsort((speeds[faster][picked], layers))  # by layer, then slowest first
    picked, layers = picked[order], layers[order]
    members = tuple(
        PoolMember(dict(cands[i][0]), cands[i][1].hash, float(scores[i]), float(speeds[i]), int(layer))
        for i, layer in zip(faster[picked], layers)
    )
    settings = PoolSettings(
        space=space.name,
        space_hash=space.hash,
        proxy=entry.name,
        speed_source=speed_source or getattr(predict_throughput, "__qualname__", repr(predict_throughput)),
        reference_throughput=float(reference_throughput),
        n=n,
        min_pool_size=min_pool_size,
        seed=seed,
        num_classes=num_classes,
        in_channels=in_channels,
        resolution=resolution,
    )
    front = int((layers == 0).sum())
    return PrescreenResult(Pool(members, settings), len(cands), len(faster), front,
                           time.perf_counter() - start)
