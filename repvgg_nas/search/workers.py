"""The ``--workers N`` parent: prepare the study once, run N worker processes of the search CLI, collect their ends.

The parent creates the study (so the references are queued exactly once)
and re-queues trials interrupted by an earlier Ctrl-C before any worker
starts; the workers then only run trials, and the parent's caller writes
the outputs afterwards (:func:`run_search` with the ``finalize`` role).
Library code: it returns a plan and the workers' exit codes, and the CLI
says what they mean (:mod:`.console`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from ..layout import StudyPaths
from ..storage import DEFAULT_HEARTBEAT_INTERVAL, storage_kind
from ..study import StudyConfig
from .connect import open_and_recover
from .launch import launch_workers, visible_gpus, worker_argv, worker_env

__all__ = ["SEARCH_MODULE", "WorkerPlan", "WorkersResult", "check_workers", "plan_workers", "run_workers",
           "hide_url"]

SEARCH_MODULE = "repvgg_nas.search"  # each worker runs ``python -m SEARCH_MODULE`` with the parent's arguments


@dataclass(frozen=True)
class WorkerPlan:
    """The worker processes to start: a command and an environment each, and what of them may be shown."""

    commands: tuple[tuple[str, ...], ...]
    envs: tuple[dict[str, str], ...]
    storage: str  # the storage URL with any password hidden
    gpus: tuple[str, ...]  # the GPUs the workers are pinned to, one each (none: the workers share the device)
    shown_command: tuple[str, ...]  # the first worker's command less its index, password-free


@dataclass(frozen=True)
class WorkersResult:
    """How the workers ended: their exit codes in order, or ``interrupted`` (Ctrl-C in the parent stopped them)."""

    codes: tuple[int, ...]
    interrupted: bool = False

    @property
    def failed(self) -> tuple[tuple[int, int], ...]:
        """``(worker index, exit code)`` of each worker that did not exit 0 (a negative code: killed by a signal)."""
        return tuple((i, c) for i, c in enumerate(self.codes) if c != 0)

    @property
    def exit_code(self) -> int:
        """0; 130 when interrupted (the parent, or every worker that failed); else 1 when a worker failed."""
        bad = self.failed
        if self.interrupted or (bad and all(c == 130 for _, c in bad)):
            return 130
        return 1 if bad else 0


def check_workers(cfg: StudyConfig, workers: int, storage: str | None, reports_dir: str | Path, *,
                  heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL, grace_period: int | None = None) -> None:
    """Refuse worker settings that cannot work, before anything is opened: no workers, a storage that takes
    one writer at a time, or a grace period a live worker's heartbeat would not beat."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if heartbeat_interval < 1:
        raise ConfigError(f"--heartbeat-interval must be >= 1 second, got {heartbeat_interval}")
    if grace_period is not None and grace_period <= heartbeat_interval:
        raise ConfigError(f"--grace-period ({grace_period}s) must be longer than --heartbeat-interval "
                          f"({heartbeat_interval}s), or live workers' trials would be retried")
    if workers > 1 and (storage is None or storage_kind(storage) == "sqlite"):
        raise ConfigError(
            f"--workers {workers} needs a storage several processes can write at once: "
            f"--storage journal:{StudyPaths.of(cfg.name, reports_dir).journal.as_posix()} (one machine or a "
            f"shared filesystem) or --storage postgresql://USER@HOST/DB (any number of machines); "
            f"SQLite takes one writer at a time"
        )


def hide_url(command: Sequence[str], url: str, shown: str) -> list[str]:
    """``command`` with the storage URL (``--storage URL`` or ``--storage=URL``) replaced by ``shown``."""
    out = []
    for a in command:
        flag, eq, value = a.partition("=")
        out.append(shown if a == url else f"{flag}={shown}" if eq and value == url and flag.startswith("--") else a)
    return out


def plan_workers(
    cfg: StudyConfig,
    argv: Sequence[str],
    workers: int,
    storage: str,
    reports_dir: str | Path,
    device: str | None = None,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
) -> WorkerPlan:
    """Open the study and recover its interrupted trials, then plan ``workers`` copies of the CLI on it.

    ``argv`` is the parent's own command line: each worker gets it less
    ``--workers N``, plus ``--worker-index i`` (:func:`launch.worker_argv`),
    so a new flag of the CLI reaches the workers without being listed twice.
    With several GPUs each worker is pinned to one, unless the device is the CPU.
    """
    _, shown = open_and_recover(cfg, storage, reports_dir, heartbeat_interval=heartbeat_interval,
                                grace_period=grace_period)
    commands = [(sys.executable, "-m", SEARCH_MODULE, *worker_argv(argv, i)) for i in range(workers)]
    gpus = visible_gpus() if (device or cfg.measure.device) != "cpu" else []
    return WorkerPlan(
        commands=tuple(commands), envs=tuple(worker_env(i, gpus) for i in range(workers)), storage=shown,
        gpus=tuple(gpus), shown_command=tuple(hide_url(commands[0][:-2], storage, shown)),
    )


def run_workers(plan: WorkerPlan, out: IO[str] | None = None) -> WorkersResult:
    """Run the planned workers to their end, their output prefixed on ``out`` (default stderr).

    Ctrl-C stops every worker (each records its trial as interrupted) and
    returns ``interrupted``; completed trials stay in the study.
    """
    try:
        codes = launch_workers(plan.commands, plan.envs, out=out)
    except KeyboardInterrupt:
        return WorkersResult((), interrupted=True)
    return WorkersResult(tuple(codes))
