"""What a running search reports to its caller: small event records, no printing.

:func:`repvgg_nas.search.run_search` calls its ``on_event`` with one of these
as the study advances (and, when ``progress`` is on, with each training
step's :class:`repvgg_nas.train.TrainStep`). The CLI turns them into lines
and progress bars; a library caller may log them, count them or ignore them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import optuna

from ..measure.latency import LatencyProgress
from ..train import TrainStep

__all__ = [
    "StudyStarted",
    "TrialFinished",
    "Waiting",
    "TrialTakenOver",
    "PruningFrontMember",
    "PruneFailed",
    "Interrupted",
    "LinkedQueued",
    "Remeasured",
    "RungDecided",
    "TimeUp",
    "PoolReady",
    "SearchEvent",
    "EventCallback",
    "ignore",
]


@dataclass(frozen=True)
class StudyStarted:
    """The study is open and the data loaded; ``done`` of ``target`` search trials are finished.

    ``remaining`` is what this process will run (0 for the ``finalize`` role).
    ``storage`` is the URL with any password hidden.
    """

    name: str
    role: str
    done: int
    remaining: int
    target: int
    data: str
    device: str
    storage: str


@dataclass(frozen=True)
class TrialFinished:
    """A trial of this process ended (any state); ``counted`` when it counts toward the target."""

    trial: optuna.trial.FrozenTrial
    counted: bool


@dataclass(frozen=True)
class Waiting:
    """No slot is free: ``running`` trials of other workers are still in flight."""

    running: int
    done: int
    target: int


@dataclass(frozen=True)
class TrialTakenOver:
    """Another worker declared this one's trial dead (missed heartbeats) and retried it."""

    message: str


@dataclass(frozen=True)
class PruningFrontMember:
    """Pruning the front member ``trial`` with the study's ``[prune]`` settings."""

    trial: int
    settings: dict[str, Any]


@dataclass(frozen=True)
class PruneFailed:
    """Pruning front member ``trial`` failed; the search results are kept."""

    trial: int
    reason: str


@dataclass(frozen=True)
class LinkedQueued:
    """``seeds`` extra-seed repeats and ``long`` long re-trainings were queued; ``waiting`` linked trials
    are left to run (the front and the references, ``[trust]``)."""

    seeds: int
    long: int
    waiting: int


@dataclass(frozen=True)
class Remeasured:
    """The front and the references (``nets``) were re-measured together in lockstep at ``at``
    (ISO time) while other processes used ``other_load`` of the machine (None: unknown)."""

    nets: int
    at: str
    other_load: float | None
    contended: bool


@dataclass(frozen=True)
class RungDecided:
    """Trial ``trial`` finished rung ``rung`` (0-based) of ``rungs`` (``epochs`` of training) at
    ``accuracy`` and ``throughput`` img/s; it climbs on when ``promoted``, else ``dominated_by`` names the
    trial whose result at that rung dominates it. References (``reference``: their zoo name) always climb.
    ``paused``: promoted, but its next rung would end after the time budget, so it climbs on in the next run."""

    trial: int
    rung: int
    rungs: int
    epochs: int
    accuracy: float
    throughput: float
    promoted: bool
    dominated_by: int | None
    reference: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class TimeUp:
    """The time budget (``timeout`` seconds) ended the search with ``done`` of ``target`` search trials
    finished and ``paused`` candidates waiting mid-climb; the same call continues those and searches on for
    another budget."""

    timeout: float
    done: int
    target: int
    paused: int = 0


@dataclass(frozen=True)
class PoolReady:
    """Candidates are drawn from a pre-screened pool of ``size`` nets (zero-cost ``proxy`` and the latency
    table's predicted speed). ``made``: what making it took in this call (None: the study had it already)."""

    size: int
    proxy: str
    made: Any = None  # repvgg_nas.search.screening.PoolMade


@dataclass(frozen=True)
class Interrupted:
    """Ctrl-C: completed trials are saved; the same call resumes the study."""


SearchEvent = Union[
    StudyStarted, TrialFinished, Waiting, TrialTakenOver, PruningFrontMember, PruneFailed, Interrupted, TrainStep,
    LinkedQueued, Remeasured, RungDecided, TimeUp, PoolReady, LatencyProgress,
]
EventCallback = Callable[[SearchEvent], None]


def ignore(event: SearchEvent) -> None:
    """The callback of a caller that wants no events."""
