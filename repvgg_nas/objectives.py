"""The objective table: every figure a study optimizes, and how each one is stored, named and shown.

A study always optimizes proxy accuracy and measured throughput; ``[objectives]
extra`` adds optional ones (today: ``peak_memory_mb``, the deploy net's peak
activation memory at the deployment batch and resolution, the paper's memory
argument for plain nets). Everything that handles objectives reads this
table instead of spelling them out: the study's directions and metric names,
the values a trial reports, the CSV columns, the Pareto mask and hypervolume
(which turn every objective into a maximized one with :attr:`Objective.sign`),
the claims and the plots.

Limits (``min_throughput``, ``max_params_m``, ``max_gmacs``) are not
objectives: they are constraints, kept apart in the study config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import attrs
from .measure.memory import deployed_peak_memory_mb
from .registry import Registry

if TYPE_CHECKING:
    from .measure.settings import MeasureSettings
    from .measure.timing import Measurement
    from .spec import RepVGGSpec

__all__ = [
    "ACCURACY", "BASE_OBJECTIVES", "DIRECTIONS", "EXTRA_OBJECTIVES", "Measured", "Objective", "PEAK_MEMORY",
    "THROUGHPUT", "measured_values", "names", "objectives_for", "trial_values",
]

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    """One optimized figure.

    ``name``: its key (``[objectives] extra``); ``metric``: the Optuna metric
    name (optuna-dashboard shows it); ``attr``: the trial user attr that holds
    it; ``column``: its column in ``trials.csv``/``pareto.csv``; ``fmt``: the
    format spec it is shown with, ``unit`` after it; ``label``: axis and
    hover text. ``measure`` is how the value is obtained: a function of the
    measured net (:class:`Measured`), or None for the trained net's accuracy
    (the one objective only training reveals). ``noisy``: one trial's value is
    an estimate whose standard error comes from seeds and the validation set
    (accuracy); a measured figure is taken as exact, its spread aside.
    """

    name: str
    metric: str
    direction: str
    unit: str
    attr: str
    column: str
    fmt: str
    label: str
    measure: Callable[[Measured], float] | None = None
    noisy: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"objective {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")

    @property
    def sign(self) -> int:
        """+1 for a maximized objective, -1 for a minimized one: ``sign * value`` is always maximized."""
        return 1 if self.direction == "maximize" else -1

    def show(self, value: Any) -> str:
        """The value as people read it (``0.712``, ``1234 img/s``, ``61.3 MB``)."""
        text = format(float(value), self.fmt)
        return f"{text} {self.unit}" if self.unit else text


@dataclass(frozen=True)
class Measured:
    """What a measured objective is computed from: the net's spec, the measurement settings, and its throughput
    measurement (a hook may also build or inspect the net from the spec)."""

    spec: RepVGGSpec
    settings: MeasureSettings
    measurement: Measurement


ACCURACY = Objective("accuracy", "accuracy", "maximize", "", attrs.ACCURACY, "accuracy", ".3f", "accuracy",
                     noisy=True)
THROUGHPUT = Objective("throughput", "images/s", "maximize", "img/s", attrs.IMAGES_PER_S, "throughput", ".0f",
                       "images/s", measure=lambda net: net.measurement.images_per_s)
PEAK_MEMORY = Objective("peak_memory_mb", "peak memory MB", "minimize", "MB", attrs.PEAK_MEMORY_MB,
                        "peak_memory_mb", ".1f", "peak activation memory",
                        measure=lambda net: deployed_peak_memory_mb(net.spec, net.settings))

BASE_OBJECTIVES: tuple[Objective, ...] = (ACCURACY, THROUGHPUT)
EXTRA_OBJECTIVES: Registry[Objective] = Registry("extra objective")
EXTRA_OBJECTIVES.register(PEAK_MEMORY.name, PEAK_MEMORY)


def objectives_for(extra: Iterable[str] = ()) -> tuple[Objective, ...]:
    """The study's objectives in the order Optuna stores its values: accuracy, throughput, then ``extra``.

    An unknown name raises :class:`~repvgg_nas.errors.UnknownNameError` with the close matches.
    """
    out = list(BASE_OBJECTIVES)
    for name in extra:
        obj = EXTRA_OBJECTIVES.get(name)
        if obj not in out:
            out.append(obj)
    return tuple(out)


def names(objectives: Sequence[Objective]) -> tuple[str, ...]:
    """The objectives' names, in order."""
    return tuple(o.name for o in objectives)


def measured_values(objectives: Sequence[Objective], net: Measured) -> dict[str, float]:
    """Every measured objective's value of ``net``, keyed by the trial attr that holds it: the one place a
    measured objective's value is obtained."""
    return {o.attr: float(o.measure(net)) for o in objectives if o.measure is not None}


def trial_values(objectives: Sequence[Objective], user_attrs: Mapping[str, Any]) -> tuple[float, ...]:
    """A trial's objective values in table order (the order Optuna stores them), read from its attrs."""
    return tuple(float(user_attrs[o.attr]) for o in objectives)
