"""Throughput of an architecture: a freshly built net of a spec, through the cache.

Throughput of a plain conv stack does not depend on its weights, so a
trial's trained weights are not needed: :func:`measure_spec` builds the
deploy-form net of a spec and measures it (or returns the cached figure);
:func:`measure_specs` measures several in lockstep for ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import ConfigError
from ..model import build_model
from ..spec import RepVGGSpec
from .cache import ThroughputCache
from .settings import MeasureSettings
from .timing import Measurement, measure_model, measure_models

__all__ = ["MeasureMany", "measure_spec", "measure_specs"]

MeasureMany = Callable[..., Mapping[str, Measurement]]  # measure_specs' signature: (specs, settings, cache) -> figures


def measure_spec(
    spec: RepVGGSpec,
    settings: MeasureSettings | None = None,
    cache: ThroughputCache | None = None,
    *,
    deploy: bool = True,
    timer: Callable[..., Measurement] = measure_model,
) -> Measurement:
    """Measure a freshly built net of ``spec`` (deploy form by default), via ``cache``.

    A deploy net's speed does not depend on its weights, so no trained model
    is needed; a cache hit returns the stored figure with ``cached=True``.
    ``timer`` times the net (:func:`.timing.measure_model`; tests pass a fake).
    """
    settings = (settings or MeasureSettings()).resolved()
    if cache is not None:
        hit = cache.get(spec, settings, deploy)
        if hit is not None:
            return hit
    model = build_model(spec, deploy=deploy)
    result = timer(model, settings, in_channels=spec.in_channels, copy_model=False)
    if cache is not None:
        cache.put(spec, settings, result, deploy)
    return result


def measure_specs(
    specs: Mapping[str, RepVGGSpec],
    settings: MeasureSettings | None = None,
    cache: ThroughputCache | None = None,
    *,
    deploy: bool = True,
    timer: Callable[..., dict[str, Measurement]] = measure_models,
) -> dict[str, Measurement]:
    """Freshly built nets of several specs measured in lockstep (:func:`measure_models`).

    For *ratios* between nets (a pruned net's speed-up): both figures come
    from the same stretch of time, so a slow spell of the machine cannot land
    on one of them only. The cache is not read (a stored figure comes from
    another time) but is updated with the new figures. ``timer`` times them
    (:func:`.timing.measure_models`; tests pass a fake).
    """
    settings = (settings or MeasureSettings()).resolved()
    in_channels = {s.in_channels for s in specs.values()}
    if len(in_channels) != 1:
        raise ConfigError(f"measure_specs needs specs with one input channel count, got {sorted(in_channels)}")
    nets = {name: build_model(spec, deploy=deploy) for name, spec in specs.items()}
    out = timer(nets, settings, in_channels=in_channels.pop(), copy_models=False)
    if cache is not None:
        for name, spec in specs.items():
            cache.put(spec, settings, out[name], deploy)
    return out
