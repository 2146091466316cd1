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

The two private Optuna attributes the search cannot do without
(``Study._storage``, ``FrozenTrial._trial_id``) are read here and nowhere else.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .attrs import FAIL_REASON, REFERENCE, REPEAT_OF, RETRY_OF
from .errors import ConfigError

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_RETRY",
    "FAILED_TRIAL",
    "FIXED_PARAMS",
    "JOURNAL_PREFIX",
    "RETRY_HISTORY",
    "SQLITE_TIMEOUT_S",
    "RetryStaleTrial",
    "fail_trial",
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


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Mark a RUNNING trial of another (dead) process FAIL, with ``fail_reason = reason``.

    ``Study.tell`` only finishes trials this process asked for, so this goes to
    the storage by the private ``FrozenTrial._trial_id``. Raises Optuna's
    ``UpdateFinishedTrialError`` when another process finished it first.
    """
    storage = study_storage(study)
    storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


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
        if trial.user_attrs.get(REPEAT_OF) is not None:
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
