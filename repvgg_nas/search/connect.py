"""Opening a study on its storage: create or resume it, refuse a changed space, recover crashes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna

from .. import lifecycle, zoo
from ..attrs import (
    REFERENCE, STUDY_DATA, STUDY_FIDELITY, STUDY_MEASURE, SCHEMA, STUDY_OBJECTIVES, STUDY_PRESCREEN, STUDY_SEED, STUDY_SPACE,
    STUDY_SPACE_HASH, STUDY_TRAIN,
)
from ..errors import ConfigError
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..storage import DEFAULT_HEARTBEAT_INTERVAL, make_storage, redact_url, study_heartbeat
from .launch import run_seed, worker_seed
from .slots import recover_trials
from ..study import LIMIT_KEYS, StudyConfig

__all__ = ["default_storage", "open_study", "connect", "recover_interrupted", "open_and_recover"]



def default_storage(cfg: StudyConfig, reports_dir: str | Path = DEFAULT_REPORTS_DIR) -> str:
    """The single-process SQLite URL of a study: ``sqlite:///<reports_dir>/<study>/study.db``."""
    return StudyPaths.of(cfg.name, reports_dir).default_storage


# Stored settings a resumed study must share, besides its space: results under others do not mix.
# Left out: measure.device (``auto``, ``cuda`` and ``cuda:0`` may name the same device) and
# data.download (whether torchvision may fetch the data, not which data it is).
# Objectives: values of other objectives do not mix either; the limits may change between runs.
# The pre-screen too: a resumed study draws from the pool it has (a table file's path may move).
_RESUME_TABLES = (STUDY_DATA, STUDY_TRAIN, STUDY_MEASURE, STUDY_FIDELITY, STUDY_OBJECTIVES, STUDY_PRESCREEN)
_RESUME_FREE = {STUDY_MEASURE: {"device"}, STUDY_DATA: {"download"}, STUDY_OBJECTIVES: set(LIMIT_KEYS),
                STUDY_PRESCREEN: {"latency_table"}}


# The flag that sets a table's key, named when a resume is refused over it.
_FLAG_HINTS = {STUDY_FIDELITY: " (--rungs sets fidelity.rungs)", STUDY_PRESCREEN: " (--prescreen sets prescreen.enabled)"}


def _changed_setting(stored: dict[str, Any], new: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """The first ``(table.key, stored, new)`` that differs between two ``StudyConfig.to_dict()`` values.

    Only keys present in both are compared (a key the config gained with a
    default leaves the study's meaning unchanged); values are compared as
    stored (JSON).
    """
    def plain(v: Any) -> Any:
        return json.loads(json.dumps(v))

    if STUDY_SEED in stored and plain(stored[STUDY_SEED]) != plain(new[STUDY_SEED]):
        return STUDY_SEED, stored[STUDY_SEED], new[STUDY_SEED]
    for table in _RESUME_TABLES:
        old_t, new_t = stored.get(table), new.get(table)
        if not isinstance(old_t, dict) or not isinstance(new_t, dict):
            continue
        for key in [k for k in new_t if k in old_t and k not in _RESUME_FREE.get(table, set())]:
            if plain(old_t[key]) != plain(new_t[key]):
                return f"{table}.{key}", old_t[key], new_t[key]
    return None


def open_study(
    cfg: StudyConfig, storage: str | optuna.storages.BaseStorage, create: bool = True,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """Create or resume the study; refuse to resume one made from a different space or settings.

    ``storage`` is a URL (opened without a heartbeat) or a storage from
    :func:`repvgg_nas.storage.make_storage`. ``sampler_seed`` seeds this
    process's sampler only (training uses the study seed); by default the study
    seed on a new study, and on a resumed one a seed derived from it and the
    trials the study holds (:func:`.launch.run_seed`), so a rerun draws anew.
    """
    sampler = cfg.sampler.build(cfg.seed if sampler_seed is None else sampler_seed, cfg.space)
    label = redact_url(storage if isinstance(storage, str) else str(getattr(storage, "url", type(storage).__name__)))
    if isinstance(storage, str):
        storage = make_storage(storage, heartbeat_interval=None)
    try:
        study = optuna.create_study(
            study_name=cfg.name,
            storage=storage,
            sampler=sampler,
            directions=[o.direction for o in cfg.objectives.table],
            load_if_exists=True,
        )
    except (ValueError, ImportError, RuntimeError) as e:
        raise ConfigError(f"cannot open storage {label!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # SQLAlchemy's OperationalError and friends
        raise ConfigError(f"cannot open storage {label!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    stored = study.user_attrs.get(STUDY_SPACE_HASH)
    if stored is not None:
        _check_schema(study, cfg, label)
    if stored is not None and stored != cfg.space.hash:
        raise ConfigError(
            f"study {cfg.name!r} in {label} was created with search space "
            f"{study.user_attrs.get(STUDY_SPACE, '?')!r} hashing to {stored}, but "
            f"{cfg.space.name!r} now hashes to {cfg.space.hash}: the space changed. Restore "
            f"it, or start a new study (another study file name or --storage)"
        )
    changed = _changed_setting(study.user_attrs, cfg.to_dict()) if stored is not None else None
    if changed is not None:
        key, was, now = changed
        raise ConfigError(
            f"study {cfg.name!r} in {label} was created with {key} = {was!r}, but the config now has "
            f"{key} = {now!r}: resuming would mix results under different settings. Restore it"
            f"{_FLAG_HINTS.get(key.partition('.')[0], '')}, or "
            f"start a new study (another study file name or --storage)"
        )
    held = len(study.get_trials(deepcopy=False))  # known once the study is open: the sampler is built again
    if sampler_seed is None and held:
        study.sampler = cfg.sampler.build(run_seed(cfg.seed, held), cfg.space)
    if study.metric_names is None:  # shown by optuna-dashboard and the optuna CLI instead of "Objective 0/1"
        with warnings.catch_warnings():  # experimental in Optuna 5 (stable interface since 3.2)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in cfg.objectives.table])
    if stored is None:
        _initialize(study, cfg)
    return study


def _initialize(study: optuna.Study, cfg: StudyConfig) -> None:
    """A new study: its settings and schema as study attrs, its references queued as its first trials."""
    for k, v in cfg.to_dict().items():
        study.set_user_attr(k, v)
    study.set_user_attr(SCHEMA, lifecycle.SCHEMA_VERSION)
    for ref in cfg.references:
        study.enqueue_trial(cfg.space.params_for(zoo.get_entry(ref)),
                            user_attrs=lifecycle.created_attrs(lifecycle.Role.REFERENCE, **{REFERENCE: ref}))


def _check_schema(study: optuna.Study, cfg: StudyConfig, label: str) -> None:
    """Refuse a study written under another version of what a trial records (its roles and outcomes)."""
    found = study.user_attrs.get(SCHEMA)
    if found != lifecycle.SCHEMA_VERSION:
        raise ConfigError(
            f"study {cfg.name!r} in {label} was written with trial schema version {found or 1}, but this "
            f"version of repvgg-nas reads version {lifecycle.SCHEMA_VERSION} only: start a new study "
            f"(another study file name or --storage)"
        )


def connect(
    cfg: StudyConfig,
    storage: str | None,
    reports_dir: str | Path = DEFAULT_REPORTS_DIR,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
) -> tuple[optuna.Study, str]:
    """Open (or create) the study on its storage; return it with the URL to show.

    The default SQLite file serves one process and has no heartbeat: a trial
    whose process died is retried when the command runs again. An explicit
    URL may be shared by several workers, so RDB URLs get Optuna's heartbeat
    and each process seeds its sampler differently (:func:`launch.worker_seed`):
    only the first run of the default single-process study is reproducible
    trial by trial (a later run draws anew: :func:`.launch.run_seed`).
    The storage is opened before the study's reports folder is made, so an
    unreachable URL leaves no files behind.
    """
    paths = StudyPaths.of(cfg.name, reports_dir)
    if storage is None:
        url = paths.default_storage
        paths.root.mkdir(parents=True, exist_ok=True)
        store = make_storage(url, heartbeat_interval=None)
    else:
        url = storage
        store = make_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        return open_study(cfg, store, sampler_seed=worker_seed(cfg.seed)), redact_url(url)
    return open_study(cfg, store), redact_url(url)


def recover_interrupted(study: optuna.Study, *, running: bool = True) -> int:
    """Re-enqueue trials that were interrupted (Ctrl-C) or left RUNNING by a dead process.

    Only RUNNING trials whose worker ran on this host and is gone are touched
    (see :func:`slots.recover_trials`), so a second live process on the same
    study keeps its trial. ``running=False`` leaves RUNNING trials to Optuna's
    heartbeat. Returns how many trials were queued again.
    """
    return len(recover_trials(study, running=running, finished=True))


def open_and_recover(
    cfg: StudyConfig,
    storage: str | None,
    reports_dir: str | Path = DEFAULT_REPORTS_DIR,
    *,
    recover: bool = True,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
) -> tuple[optuna.Study, str]:
    """:func:`connect`, then (with ``recover``) :func:`recover_interrupted`; return the study and the URL to show.

    The one way a process that runs trials opens its study, so the search and
    the ``--workers N`` parent recover the same trials. A storage with a
    heartbeat leaves RUNNING trials to it: a live worker elsewhere keeps its trial.
    """
    study, shown = connect(cfg, storage, reports_dir, heartbeat_interval=heartbeat_interval,
                           grace_period=grace_period)
    if recover:
        recover_interrupted(study, running=study_heartbeat(study) is None)
    return study, shown
