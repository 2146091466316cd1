"""Several workers on one study: identity, exact trial accounting, crash recovery,
per-device measurement lock and the ``--workers N`` launcher.

Why each piece exists:

- **Exact trial count.** Optuna's ``n_trials`` is per worker and
  ``MaxTrialsCallback`` counts only finished trials, so concurrent workers
  overshoot. Here every search trial has a *slot key*: its own number, or for
  a retry the number of the trial it repeats (so a retry inherits its
  original's place in line). A key is *held* while it has a result or a trial
  in flight. A trial may run only if fewer than ``target`` keys below its own
  are held and no other trial already answers for its key; otherwise it is
  *surplus*: it is pruned untrained with the ``surplus`` attr, which every
  count and report skips. See :func:`admission` and :func:`slot_state`.
- **Crash recovery.** A trial that was running when its worker died is failed
  and queued again (``retry_of`` names it). RDB storages use Optuna's
  heartbeat for this (:mod:`repvgg_nas.storage`); storages without one use
  :func:`recover_trials`, which trusts only what it can check: a worker on
  this host whose process is gone.
- **Clean throughput.** :class:`DeviceLock` is a reader/writer lock per
  physical device shared by all processes on the machine: training holds it
  shared, a measurement exclusive, so no other local worker trains on the
  device while one measures.
- **``--workers N``.** :func:`launch_workers` runs N copies of the search as
  subprocesses, pins each to one GPU when there are several, prefixes their
  output, and stops them all on Ctrl-C.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "INTERRUPTED",
    "SURPLUS",
    "DUPLICATE",
    "WorkerId",
    "SlotState",
    "DeviceLock",
    "current_worker",
    "worker_seed",
    "pid_alive",
    "trial_key",
    "is_search_trial",
    "died",
    "slot_state",
    "admission",
    "recover_trials",
    "device_key",
    "default_lock_dir",
    "visible_gpus",
    "worker_env",
    "launch_workers",
]

INTERRUPTED = "interrupted"  # fail_reason prefix of a trial cut short by Ctrl-C or a dead worker
SURPLUS = "surplus"  # user attr of a trial that found no free slot (never trained, never counted)
DUPLICATE = "duplicate"  # surplus reason prefix: another trial already answers for the same slot
UNKNOWN_WORKER_AFTER_S = 30.0  # a RUNNING trial with no worker attr this old is taken as dead


# ---- identity ----------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerId:
    """Who runs a trial: host, pid and the process start time (guards against pid reuse)."""

    host: str
    pid: int
    start: int | None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], start time is [19])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def current_worker() -> WorkerId:
    return WorkerId(socket.gethostname(), os.getpid(), _start_ticks(os.getpid()))


def worker_seed(seed: int, worker: WorkerId | None = None) -> int:
    """A sampler seed of its own for each worker of a shared study.

    Workers seeded alike propose the same architectures at the same time
    (a seeded NSGA-II draws the same first generation everywhere) and train
    each several times. The study's seed still matters (same seed, same
    host and pid give the same stream); training always uses the study seed.
    """
    w = worker or current_worker()
    return zlib.crc32(f"{seed}:{w.host}:{w.pid}:{w.start}".encode()) % (2**31 - 1)


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie or a reused pid does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc/self/stat").exists()  # no procfs: trust os.kill
    if fields[0] == "Z":
        return False
    return start is None or len(fields) <= 19 or int(fields[19]) == int(start)


# ---- slot accounting ------------------------------------------------------------------
def _reason(t: FrozenTrial) -> str:
    return str(t.user_attrs.get("fail_reason") or "")


def is_search_trial(t: FrozenTrial) -> bool:
    """A sampled or enqueued trial of the search: not a pruned variant, not surplus."""
    return t.user_attrs.get("parent_trial") is None and not t.user_attrs.get(SURPLUS)


def died(t: FrozenTrial) -> bool:
    """FAIL because its run stopped (Ctrl-C, killed worker, stale heartbeat), not because of the net.

    The objective records a ``fail_reason`` for every failure it sees, so a
    FAIL without one was ended from outside (Optuna's heartbeat).
    """
    return t.state == TrialState.FAIL and (not _reason(t) or _reason(t).startswith(INTERRUPTED))


def trial_key(t: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> int:
    """The slot a trial answers for: its number, or the first trial of its retry chain."""
    seen: set[int] = set()
    while True:
        origin = t.user_attrs.get("retry_of")
        if origin is None:
            first = t.system_attrs.get("failed_trial")
            return int(first) if first is not None else t.number
        origin = int(origin)
        if origin in seen or origin not in by_number:
            return origin
        seen.add(origin)
        t = by_number[origin]


@dataclass(frozen=True)
class SlotState:
    """Where a study stands against its target number of search trials.

    ``done``: keys with a final result (complete, pruned by a constraint,
    failed; a dead trial not retried yet counts as failed until its retry
    appears). ``held``: keys done or in flight. ``running``: RUNNING search
    trials of any worker. ``admissible_waiting``: queued trials that would be
    allowed to run now.
    """

    target: int
    done: int
    held: int
    running: int
    admissible_waiting: int

    @property
    def finished(self) -> bool:
        return self.done >= self.target

    @property
    def runnable(self) -> bool:
        """A worker asking for a trial now would get one it may run."""
        return not self.finished and (self.held < self.target or self.admissible_waiting > 0)


class _Keys:
    """Per-key status of a trial list, computed once (every query is then cheap)."""

    def __init__(self, trials: Sequence[FrozenTrial]) -> None:
        self.by_number = {t.number: t for t in trials}
        self.search = [t for t in trials if is_search_trial(t)]
        self.key = {t.number: trial_key(t, self.by_number) for t in self.search}
        self.members: dict[int, list[FrozenTrial]] = {}
        for t in self.search:
            self.members.setdefault(self.key[t.number], []).append(t)
        self.status: dict[int, str] = {}
        for k, group in self.members.items():
            if any(t.state.is_finished() and not died(t) for t in group):
                self.status[k] = "done"
            elif any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in group):
                self.status[k] = "active"
            else:  # only dead runs: a failure, unless a retry turns up
                self.status[k] = "done"
        self.held_keys = sorted(self.status)

    def held_below(self, key: int) -> int:
        return bisect.bisect_left(self.held_keys, key)

    def blocker(self, t: FrozenTrial) -> str | None:
        """Why ``t`` may not run (None when it may)."""
        k = self.key.get(t.number, t.number)
        for other in self.members.get(k, ()):
            if other.number == t.number:
                continue
            if other.state.is_finished() and not died(other):
                return f"{DUPLICATE}: trial {other.number} already holds the result for slot {k}"
            if other.state == TrialState.RUNNING and other.user_attrs.get("admitted"):
                return f"{DUPLICATE}: trial {other.number} already runs slot {k}"
        return None

    def admits(self, t: FrozenTrial, target: int) -> str | None:
        reason = self.blocker(t)
        if reason is not None:
            return reason
        below = self.held_below(self.key.get(t.number, t.number))
        if below >= target:
            return f"{below} trial slot(s) before it already fill the target of {target}"
        return None


def slot_state(trials: Sequence[FrozenTrial], target: int) -> SlotState:
    keys = _Keys(trials)
    waiting = [t for t in keys.search if t.state == TrialState.WAITING]
    return SlotState(
        target=target,
        done=sum(s == "done" for s in keys.status.values()),
        held=len(keys.held_keys),
        running=sum(t.state == TrialState.RUNNING for t in keys.search),
        admissible_waiting=sum(keys.admits(t, target) is None for t in waiting),
    )


def admission(trial: FrozenTrial | int, trials: Sequence[FrozenTrial], target: int) -> str | None:
    """None when the (just started) trial may run; else why it is surplus.

    A trial may run when fewer than ``target`` slot keys below its own are held
    and no other trial already has, or is admitted to compute, the result for
    its key. Keys below are the trials that started before it and the retries
    of those, so the first ``target`` slots always win, whichever worker asks
    first; a later trial that raced past the count finds the slots full.
    """
    keys = _Keys(trials)
    number = trial if isinstance(trial, int) else trial.number
    t = keys.by_number.get(number)
    if t is None:
        return None  # not visible yet: nothing to compare against
    return keys.admits(t, target)


# ---- crash recovery -------------------------------------------------------------------
def _dead_reason(t: FrozenTrial, host: str, now: _dt.datetime, unknown_after_s: float) -> str | None:
    name = t.user_attrs.get("worker")
    if not name:
        started = t.datetime_start
        if started is not None and (now - started).total_seconds() > unknown_after_s:
            return "worker stopped"
        return None
    w_host, _, pid = str(name).rpartition(":")
    if w_host != host or not pid.isdigit():
        return None  # another machine: nothing here can tell whether it lives
    start = t.user_attrs.get("worker_start")
    if pid_alive(int(pid), int(start) if start is not None else None):
        return None
    return f"worker {name} died"


def _older(t: FrozenTrial, now: _dt.datetime, seconds: float) -> bool:
    end = t.datetime_complete
    return end is None or (now - end).total_seconds() > seconds


def recover_trials(
    study: optuna.Study,
    *,
    running: bool = True,
    finished: bool = True,
    unknown_after_s: float = UNKNOWN_WORKER_AFTER_S,
) -> list[int]:
    """Fail and queue again the trials whose worker is gone; return their numbers.

    ``running``: RUNNING trials whose worker ran on this host and is dead (or,
    with no worker recorded, that started over ``unknown_after_s`` ago) are
    marked FAIL with ``fail_reason = "interrupted: ..."``. The FAIL update is
    the claim: when two workers find the same dead trial, the storage lets only
    one of them finish it, and only that one queues the retry. Storages with a
    heartbeat leave this to Optuna (pass ``running=False``).

    ``finished``: trials already FAIL as interrupted (Ctrl-C) with no retry yet
    are queued again, and so are trials failed by a recovery whose worker died
    before it could queue the retry (after ``unknown_after_s``). Checking "no
    retry yet" is not atomic, so this belongs to one process at start-up (the
    single search, or the ``--workers`` parent before it starts its workers).
    """
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    retried: set[int] = set()
    for t in trials:
        if t.user_attrs.get("retry_of") is not None:
            retried.add(int(t.user_attrs["retry_of"]))
        retried.update(int(n) for n in t.system_attrs.get("retry_history", []))
    host, now = socket.gethostname(), _dt.datetime.now()
    out = []
    for t in trials:
        if not is_search_trial(t):
            continue
        if t.state == TrialState.RUNNING:
            why = _dead_reason(t, host, now, unknown_after_s) if running else None
            if why is None:
                continue
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", f"{INTERRUPTED}: {why}")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another worker finished or claimed it first
        elif not (finished and t.state == TrialState.FAIL and _reason(t).startswith(INTERRUPTED)):
            continue
        elif _reason(t).startswith(f"{INTERRUPTED}: worker") and not _older(t, now, unknown_after_s):
            continue  # just claimed by another worker's recovery, which queues the retry itself
        if t.number in retried:
            continue
        attrs: dict[str, Any] = {"retry_of": t.number}
        if t.user_attrs.get("reference"):
            attrs["reference"] = t.user_attrs["reference"]
        params = t.params or dict(t.system_attrs.get("fixed_params") or {})
        study.enqueue_trial(params, user_attrs=attrs)
        retried.add(t.number)
        out.append(t.number)
    return out


# ---- per-device measurement lock ----------------------------------------------------------
def device_key(device: Any) -> str:
    """A name for the physical device, the same in every process of this machine.

    CUDA devices are named by UUID, so ``cuda:0`` of two workers pinned to
    different GPUs (``CUDA_VISIBLE_DEVICES``) gets two different locks. The
    CPU is one device for the whole machine.
    """
    import torch

    d = torch.device(device)
    key = d.type
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        try:
            key = f"cuda-{torch.cuda.get_device_properties(index).uuid}"
        except Exception:
            visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            key = f"cuda{visible[index] if index < len(visible) else index}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def default_lock_dir() -> Path:
    env = os.environ.get("REPVGG_NAS_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "repvgg_nas-locks"


class DeviceLock:
    """Reader/writer lock per device across processes (``fcntl.flock`` on two files).

    Training takes it shared, measurement exclusive. A turnstile file gives a
    waiting measurement priority: new trainings queue behind it instead of
    starving it. Locks die with their process, so a killed worker never
    leaves one behind. If the lock files cannot be created (read-only or
    lock-less filesystem) the lock degrades to a no-op and ``available`` is
    False, which the search records as ``measure_exclusive = False``.
    """

    def __init__(self, device: Any, lock_dir: str | os.PathLike | None = None) -> None:
        self.key = device_key(device)
        self.dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.path = self.dir / f"{self.key}.lock"
        self.gate = self.dir / f"{self.key}.gate"
        self.available = True
        self._shared_depth = 0

    def _open(self, path: Path) -> int | None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.dir, 0o1777)  # other users' workers share the device too
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            self.available = False
            return None
        return fd

    def _flock(self, fd: int | None, op: int) -> None:
        if fd is None:
            return
        try:
            fcntl.flock(fd, op)
        except OSError:
            self.available = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        gate = self._open(self.gate)
        self._flock(gate, fcntl.LOCK_EX)  # pass the turnstile: wait for a queued measurement
        self._flock(gate, fcntl.LOCK_UN)
        if gate is not None:
            os.close(gate)
        fd = self._open(self.path)
        self._flock(fd, fcntl.LOCK_SH)
        self._shared_depth += 1
        try:
            yield
        finally:
            self._shared_depth -= 1
            if fd is not None:
                self._flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Yields whether the device really was held exclusively."""
        if self._shared_depth:
            raise RuntimeError("DeviceLock.exclusive() inside shared() of the same lock would deadlock")
        gate = self._open(self.gate)
        self._flock(gate, fcntl.LOCK_EX)  # hold the turnstile while waiting for trainings to end
        try:
            fd = self._open(self.path)
            self._flock(fd, fcntl.LOCK_EX)
        finally:
            if gate is not None:
                self._flock(gate, fcntl.LOCK_UN)
                os.close(gate)
        try:
            yield self.available
        finally:
            if fd is not None:
                self._flock(fd, fcntl.LOCK_UN)
                os.close(fd)


# ---- launching local workers -------------------------------------------------------------
def visible_gpus() -> list[str]:
    """CUDA device ids this process may hand out (honours an existing CUDA_VISIBLE_DEVICES)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [v.strip() for v in env.split(",") if v.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:
        return []


def worker_env(index: int, gpus: Sequence[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of worker ``index``: one GPU of ``gpus`` round-robin when there are several."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the parent as they are printed
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def _pump(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(prefix + line if line.endswith("\n") else prefix + line + "\n")
            out.flush()
    stream.close()


def launch_workers(
    commands: Sequence[Sequence[str]],
    envs: Sequence[Mapping[str, str]],
    *,
    out: IO[str] | None = None,
    poll_s: float = 0.2,
    stop_grace_s: float = 60.0,
) -> list[int]:
    """Run one subprocess per command, stream their output prefixed ``[worker i]``, return exit codes.

    Children run in their own session so a terminal Ctrl-C reaches only this
    process, which then forwards exactly one SIGINT to each (a worker finishes
    recording its trial as interrupted and exits); stragglers are killed after
    ``stop_grace_s``. The parent polls its children so a dead one is reaped at
    once: a zombie would still look alive to the other workers' recovery.
    """
    out = out if out is not None else sys.stderr
    lock = threading.Lock()
    procs: list[subprocess.Popen[str]] = []
    pumps = []
    try:
        for i, (cmd, env) in enumerate(zip(commands, envs)):
            p = subprocess.Popen(
                list(cmd), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, bufsize=1, start_new_session=True,
            )
            procs.append(p)
            th = threading.Thread(target=_pump, args=(p.stdout, f"[worker {i}] ", out, lock), daemon=True)
            th.start()
            pumps.append(th)
        while any(p.poll() is None for p in procs):
            time.sleep(poll_s)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + stop_grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        raise
    finally:
        for th in pumps:
            th.join(timeout=5)
    return [int(p.returncode) for p in procs]
