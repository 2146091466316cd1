"""Optuna storages for one worker or many: a URL in, an Optuna storage object out.

The search cooperates through Optuna's own distributed storages rather than
anything home-made; this module only picks the right one and sets it up so
that a dead worker never loses a trial:

- ``sqlite:///PATH``, ``postgresql://USER@HOST/DB`` (any SQLAlchemy URL) ->
  :class:`optuna.storages.RDBStorage`. SQLite gets a busy timeout so a second
  process waits for the file lock instead of failing with "database is
  locked". With a heartbeat interval, Optuna's heartbeat marks a trial whose
  worker stopped beating as FAIL and :class:`RetryStaleTrial` queues it again.
  A bare ``postgresql://`` is pinned to psycopg 3 (``postgresql+psycopg``), so
  the URL means the same thing under SQLAlchemy 2.0 and 2.1.
- ``journal:PATH`` -> :class:`optuna.storages.JournalStorage` on a
  :class:`~optuna.storages.journal.JournalFileBackend` (an append-only log;
  works on shared filesystems). It has no heartbeat, so
  :func:`repvgg_nas.search.recover_trials` fails and retries RUNNING trials
  whose worker ran on this host and is dead. Trials of workers on other hosts
  are left alone: nothing in the journal says whether a remote process lives.

Any URL that cannot be opened is a :class:`ConfigError` (one line, exit code 2)
naming the URL with its password hidden; nothing is created for it.

Optuna's private attributes the search cannot do without (``Study._storage``,
``Study._study_id``, ``FrozenTrial._trial_id``, the storage behind Optuna's
cache, the journal's file) and its system attrs (an enqueued trial's fixed
params, constraint values, the heartbeat retry's record) are read here and
nowhere else.

**The claim lock.** A worker checks the study's slots and asks for a trial
as one step under :func:`claim_lock`, so two workers never both take the last
slot: an ``fcntl.flock`` on a file beside a journal or SQLite file (every
process sharing the file shares the lock; it dies with its process), a
PostgreSQL session advisory lock (``pg_advisory_lock``) on the RDB storage's
own engine, and a process-local lock for an in-memory study or any other
database, where a race is still caught after ``ask`` and the loser recorded
as lost (:class:`repvgg_nas.lifecycle.Outcome`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .attrs import REFERENCE, RETRY_OF, ROLE
from .errors import ConfigError
from .lifecycle import Outcome, end, is_linked

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_RETRY",
    "FAILED_TRIAL",
    "FIXED_PARAMS",
    "JOURNAL_PREFIX",
    "RETRY_HISTORY",
    "SQLITE_TIMEOUT_S",
    "RetryStaleTrial",
    "set_frozen_trial_attr",
    "ask_trial",
    "claim_lock",
    "constraint_values",
    "enqueued_params",
    "fail_trial",
    "heartbeat",
    "has_heartbeat",
    "study_heartbeat",
    "make_storage",
    "redact_url",
    "storage_kind",
    "study_storage",
]

# Optuna's own system attrs: the params of an enqueued trial, and the heartbeat retry's
# bookkeeping (the first trial of a retry chain, and every trial of it).
FIXED_PARAMS = "fixed_params"
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"

JOURNAL_PREFIX = "journal:"
DEFAULT_HEARTBEAT_INTERVAL = 60  # seconds; Optuna's documented example value
DEFAULT_MAX_RETRY = 3  # a net that kills its worker every time must not loop forever
SQLITE_TIMEOUT_S = 60.0  # how long a writer waits for SQLite's file lock
PG_CONNECT_TIMEOUT_S = 10  # an unroutable host fails in seconds, not minutes

_STORAGE_HINT = "use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or journal:PATH"


def storage_kind(url: str) -> str:
    """``"journal"``, ``"sqlite"`` or ``"rdb"`` (any other SQLAlchemy URL)."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    return "sqlite" if url.split(":", 1)[0].split("+", 1)[0] == "sqlite" else "rdb"


def redact_url(url: str) -> str:
    """The URL as it may be printed: any password replaced by ``***``."""
    if storage_kind(url) == "journal":
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: hide anything that looks like user:password@
        return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def has_heartbeat(storage: BaseStorage) -> bool:
    """True when Optuna's heartbeat watches this storage's running trials."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get is not None and get() is not None


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object under ``study``.

    Optuna has no public accessor (``Study._storage`` is private); the search
    needs it to ask for the heartbeat interval and to fail a dead worker's trial.
    """
    return study._storage


def study_heartbeat(study: optuna.Study) -> int | None:
    """Seconds between heartbeats of ``study``'s running trials; None without a heartbeat."""
    storage = study_storage(study)
    return storage.get_heartbeat_interval() if has_heartbeat(storage) else None


class _StoredTrial:
    """A trial of another process, as :func:`repvgg_nas.lifecycle.end` writes to it."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str, how: Outcome = Outcome.DIED) -> None:
    """Mark a RUNNING trial of another (dead) process FAIL with outcome ``how`` and ``fail_reason = reason``.

    ``Study.tell`` only finishes trials this process asked for, so this goes to
    the storage by the private ``FrozenTrial._trial_id``. Raises Optuna's
    ``UpdateFinishedTrialError`` when another process finished it first.
    """
    storage = study_storage(study)
    end(_StoredTrial(storage, trial._trial_id), how, reason)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def enqueued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The params a trial ran with or, still queued, was enqueued with (Optuna's ``fixed_params``)."""
    return dict(trial.params or trial.system_attrs.get(FIXED_PARAMS) or {})


def constraint_values(trial: FrozenTrial) -> list[float]:
    """The trial's constraint values (<= 0 is feasible); empty when it has none."""
    c = getattr(trial, "constraints", None)
    if c is None:
        c = trial.system_attrs.get("constraints")
    if isinstance(c, dict):
        return [float(v) for v in c.values()]
    return [float(v) for v in (c or ())]


def _backend(study: optuna.Study) -> BaseStorage:
    """The storage itself, under Optuna's cache wrapper of RDB storages."""
    storage = study_storage(study)
    return getattr(storage, "_backend", storage) if type(storage).__name__ == "_CachedStorage" else storage


_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


def _local_lock(name: str) -> threading.Lock:
    with _LOCAL_GUARD:
        return _LOCAL_LOCKS.setdefault(name, threading.Lock())


@contextlib.contextmanager
def _flock(path: Path, name: str) -> Iterator[None]:
    with _local_lock(f"{path}"):  # threads of one process: flock on separate opens would not exclude them
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pg_lock(storage: RDBStorage, name: str) -> Iterator[None]:
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(f"repvgg_nas claim {name}".encode()).digest()[:8], "big", signed=True)
    with storage.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


_HELD = threading.local()  # claim locks this thread holds: taking one again is a no-op, not a deadlock


@contextlib.contextmanager
def claim_lock(study: optuna.Study) -> Iterator[None]:
    """The study's claim lock (see the module doc): hold it to check the slots and ask as one step.
    Re-entrant within a thread."""
    key = f"{id(_backend(study))}:{study.study_name}"
    held: set[str] = getattr(_HELD, "keys", set())
    _HELD.keys = held
    if key in held:
        yield
        return
    with _claim_lock(study):
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)


def _claim_lock(study: optuna.Study) -> contextlib.AbstractContextManager[Any]:
    storage = _backend(study)
    name = study.study_name
    if isinstance(storage, JournalStorage):
        path = getattr(getattr(storage, "_backend", None), "_file_path", None)
        if path is not None:
            return _flock(Path(f"{path}.claim.lock"), name)
    if isinstance(storage, RDBStorage):
        from sqlalchemy.engine import make_url

        url = make_url(storage.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return _flock(Path(f"{url.database}.claim.lock"), name)
        if url.get_backend_name() == "postgresql":
            return _pg_lock(storage, name)
    return _local_lock(f"{id(storage)}:{name}")


def set_frozen_trial_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attr of a running trial known only as a ``FrozenTrial`` (what a sampler is handed)."""
    study_storage(study).set_trial_user_attr(trial._trial_id, key, value)


def ask_trial(study: optuna.Study, number: int | None = None) -> optuna.Trial | None:
    """``study.ask()`` for the queued trial ``number``, or for a new trial when None.

    ``study.ask`` takes the oldest queued trial; the search must choose which
    (the one its slot admits), so a queued trial is taken by number, and a new
    one is created past the queue. Returns None when another process took the
    queued trial first.
    """
    storage = study_storage(study)
    with warnings.catch_warnings():  # "heartbeat ... used with Study.optimize": the search beats itself
        warnings.simplefilter("ignore", UserWarning)
        if number is None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return study.ask()
    if number is None:
        trial_id = storage.create_new_trial(study._study_id)
    else:
        queued = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if t.number == number]
        if not queued:
            return None
        trial_id = queued[0]._trial_id
        try:
            if not storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return None
        except optuna.exceptions.UpdateFinishedTrialError:
            return None
    study._thread_local.cached_all_trials = None  # as study.ask does: a sampler's view is per trial
    return optuna.Trial(study, trial_id)


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Beat for ``trial`` while it runs, as ``study.optimize`` does (nothing without a heartbeat)."""
    interval = study_heartbeat(study)
    if interval is None:
        yield
        return
    storage = study_storage(study)
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial, tagged the way the search reads retries.

    Like the parent class, it re-creates the dead trial as WAITING with the
    same parameters and Optuna's ``failed_trial``/``retry_history`` system
    attrs, and gives up after ``max_retry`` retries. Unlike it, the copy keeps
    only the user attrs that say *what* to run (``reference``), not the dead
    run's partial figures, and names the trial it repeats in ``retry_of`` (as
    the single-process crash recovery does), so the search counts the retry in
    its original's slot.
    """

    def __init__(self, max_retry: int | None = DEFAULT_MAX_RETRY) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if is_linked(trial):
            return  # a linked re-training: the search queues its key again itself
        history = [*trial.system_attrs.get(RETRY_HISTORY, []), trial.number]
        if self.max_retry is not None and len(history) > self.max_retry:
            return
        system_attrs = {
            **trial.system_attrs,
            FAILED_TRIAL: trial.system_attrs.get(FAILED_TRIAL, trial.number),
            RETRY_HISTORY: history,
        }
        user_attrs: dict[str, Any] = {RETRY_OF: trial.number}
        if trial.user_attrs.get(ROLE) is not None:  # a retry keeps its original's role
            user_attrs[ROLE] = trial.user_attrs[ROLE]
        if trial.user_attrs.get(REFERENCE):
            user_attrs[REFERENCE] = trial.user_attrs[REFERENCE]
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs=user_attrs, system_attrs=system_attrs,
        ))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def make_storage(
    url: str,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    max_retry: int | None = DEFAULT_MAX_RETRY,
) -> BaseStorage:
    """Open the storage ``url`` names (see the module doc); ``ConfigError`` when it cannot.

    ``heartbeat_interval=None`` turns the RDB heartbeat off: right for the
    default single-process SQLite file, whose crashed trials are retried when
    the command is run again. ``grace_period`` defaults to Optuna's (twice the
    interval). Journal storages ignore the three heartbeat arguments.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"--storage {url!r} is empty; {_STORAGE_HINT}")
    shown = redact_url(url)
    if heartbeat_interval is not None and heartbeat_interval < 1:
        raise ConfigError(f"heartbeat interval must be >= 1 second, got {heartbeat_interval}")
    if grace_period is not None and (heartbeat_interval is None or grace_period <= heartbeat_interval):
        raise ConfigError(
            f"grace period {grace_period}s must be longer than the heartbeat interval "
            f"({heartbeat_interval}s), or a live worker's trial would be declared dead"
        )
    if storage_kind(url) == "journal":
        return _journal(url, shown)

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--storage {shown!r} is not a storage URL; {_STORAGE_HINT}") from None
    engine_kwargs: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True  # a server restart must not break a long search
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
            url = parsed.render_as_string(hide_password=False)
        if parsed.drivername == "postgresql+psycopg":
            engine_kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    beat: dict[str, Any] = {}
    if heartbeat_interval is not None:
        beat = dict(
            heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=max_retry),
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except ImportError as e:
        need = "pip install 'psycopg[binary]'" if backend == "postgresql" else "install its database driver"
        raise ConfigError(f"cannot open storage {shown!r}: driver missing ({_first_line(e)}); {need}") from None
    except Exception as e:  # SQLAlchemy's OperationalError, NoSuchModuleError and friends
        text = _first_line(e)
        if parsed.password:
            text = text.replace(str(parsed.password), "***")
        raise ConfigError(f"cannot open storage {shown!r}: {type(e).__name__}: {text}") from None


def _journal(url: str, shown: str) -> JournalStorage:
    raw = url[len(JOURNAL_PREFIX):]
    if raw.startswith("//"):  # tolerate journal:///abs/path
        raw = raw[2:]
    if not raw:
        raise ConfigError(f"--storage {shown!r} names no file; write journal:PATH, e.g. journal:reports/STUDY/journal.log")
    path = Path(raw).expanduser()
    if path.is_dir():
        raise ConfigError(f"cannot open storage {shown!r}: {path} is a directory; name a file inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise ConfigError(f"cannot open storage {shown!r}: {e.strerror or _first_line(e)}") from None
