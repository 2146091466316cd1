"""The search loop: run (or resume) a study to its target, prune its front, write its outputs.

Nothing here prints: the loop reports through ``on_event``
(:mod:`repvgg_nas.search.events`) and ``python -m repvgg_nas.search``
decides what to show.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from ..attrs import (
    ACCURACY, ARCH, DEVICE, FAIL_REASON, INTERRUPTED, LATENCY_MS, MACS, PARAMS, PARENT_TRIAL, PRUNE,
    PRUNE_TARGET_MET, PRUNED_RATIO, REFERENCE, SPEC, SPEC_HASH, SPEEDUP, SURPLUS, arch_key,
)
from ..attrs import REPEAT_OF, STUDY_LOCKSTEP, STUDY_TRUST, TRAIN_EPOCHS, TRAIN_SEED
from ..attrs import MEASURE_CONTENDED, OTHER_LOAD, THROUGHPUT_CV, THROUGHPUT_IQR, VAL_SIZE
from ..checkpoint import load_model, save_checkpoint
from ..data import DataBundle, load_data
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..measure import MeasureSettings, ThroughputCache, measure_specs
from ..prune import run_prune
from ..report import write_report
from ..stats import architecture_stats, front_numbers, pareto_frame, study_sigmas, trials_frame, write_csv
from ..spec import RepVGGSpec
from ..storage import DEFAULT_HEARTBEAT_INTERVAL, FIXED_PARAMS, study_heartbeat
from .connect import connect, recover_interrupted
from .events import (
    EventCallback, Interrupted, LinkedQueued, PruneFailed, PruningFrontMember, Remeasured, SearchEvent,
    StudyStarted, TimeUp, TrialFinished, TrialTakenOver, Waiting,
)
from .objective import ARCH_DIMENSIONS, _Objective, failure_reason
from .rungs import paused_by_time
from .slots import died, recover_trials, repeat_key, slot_state
from ..study import StudyConfig

__all__ = [
    "ROLES", "SearchResult", "run_search", "prune_front", "write_outputs", "counts_as_done", "linked_wanted",
    "run_linked", "remeasure_front",
]

TrialState = optuna.trial.TrialState
_DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ROLES = ("all", "worker", "finalize")


@dataclass
class SearchResult:
    study: optuna.Study
    out_dir: Path
    trials: Any  # pandas.DataFrame
    pareto: Any  # pandas.DataFrame
    interrupted: bool = False


def _fail_dead_trials(study: optuna.Study, heartbeat_interval: int | None) -> None:
    """Fail (and so re-queue) trials whose worker is gone: Optuna's heartbeat where the
    storage has one, otherwise :func:`slots.recover_trials` for dead workers on this host."""
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    else:
        recover_trials(study, running=True, finished=False)


def _ignore(event: SearchEvent) -> None:
    pass


def counts_as_done(t: optuna.trial.FrozenTrial) -> bool:
    """Finished trials count toward n_trials, except those cut short by the user or a crash,
    pruned variants (added after the search, not sampled), linked re-trainings (seed
    repeats, long re-trainings) and surplus trials of a worker that found every slot
    taken. (Study-wide counts use :func:`slots.slot_state`.)"""
    return (
        t.state in _DONE
        and not str(t.user_attrs.get(FAIL_REASON, "")).startswith(INTERRUPTED)
        and t.user_attrs.get(PARENT_TRIAL) is None
        and t.user_attrs.get(REPEAT_OF) is None
        and not t.user_attrs.get(SURPLUS)
    )


def _keep_checkpoints(study: optuna.Study, paths: StudyPaths) -> None:
    """Keep deploy checkpoints of the front and of the references only (bounded disk use).

    Only checkpoints of finished trials are removed: another worker may have
    just written one for a trial it has not reported yet. Without linked
    re-trainings a finished trial off the front never rejoins it, so an older
    view of the study is safe to act on. With them it may (the front is on mean
    accuracy, and a member's repeats can lower its mean), so
    :func:`run_search` calls this only once they are all finished
    (:func:`_linked_pending`).
    """
    trials = study.get_trials(deepcopy=False)
    finished = {t.number for t in trials if t.state.is_finished()}
    keep = front_numbers(study) | {
        t.number for t in trials if t.user_attrs.get(REFERENCE) or t.user_attrs.get(PARENT_TRIAL) is not None
        or t.user_attrs.get(TRAIN_EPOCHS) is not None  # long re-trainings: the better-trained nets
    }
    for n, f in paths.checkpoint_trials().items():
        if n in finished and n not in keep:
            f.unlink(missing_ok=True)


def prune_front(
    study: optuna.Study, cfg: StudyConfig, data: DataBundle, measure: MeasureSettings, device: torch.device,
    cache: ThroughputCache, paths: StudyPaths, on_event: EventCallback | None = None,
) -> int:
    """Prune every front member not pruned yet; add each result as a trial linked to its parent.

    Pruned variants are real points on the accuracy/speed plane, so they join
    the study (and may join the front) with ``parent_trial`` naming their source.
    """
    assert cfg.prune is not None
    on_event = on_event or _ignore
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get(PARENT_TRIAL) for t in trials}
    front = front_numbers(study)
    parents = [
        t for t in trials
        if t.number in front and t.user_attrs.get(PARENT_TRIAL) is None and t.number not in done
    ]
    for parent in parents:
        path = paths.checkpoint(parent.number)
        if not path.is_file():
            continue
        model, _ = load_model(path)
        on_event(PruningFrontMember(parent.number, cfg.prune.to_dict()))
        try:
            out = run_prune(model, cfg.prune, data, measure, cfg.train, device, cache)
        except Exception as e:  # a failed prune must not lose the search results
            on_event(PruneFailed(parent.number, failure_reason(e)))
            continue
        final, spec, meas = out.final, out.model.spec, out.measurement
        # Speed as rounded as the pruning table shows it; accuracy unrounded (its standard error needs it).
        accuracy, images_per_s = float(final.accuracy), round(final.images_per_s, 1)
        attrs = {
            PARENT_TRIAL: parent.number,
            PRUNED_RATIO: cfg.prune.ratio if cfg.prune.ratio is not None else None,
            PRUNE: cfg.prune.to_dict(),
            SPEEDUP: round(images_per_s / round(out.original.images_per_s, 1), 3),
            PRUNE_TARGET_MET: out.met,
            SPEC: spec.to_dict(), SPEC_HASH: spec.hash, ARCH: spec.summary(),
            PARAMS: final.params, MACS: final.macs,
            LATENCY_MS: round(final.latency_ms, 2), ACCURACY: accuracy,
            DEVICE: parent.user_attrs.get(DEVICE), VAL_SIZE: data.val_size,
            # The pruned net's own spread and load flag: its claims are only as sure as its measurement.
            THROUGHPUT_IQR: meas.images_per_s_iqr if meas else None,
            THROUGHPUT_CV: meas.robust_cv if meas else None,
            MEASURE_CONTENDED: meas.contended if meas else None,
            OTHER_LOAD: meas.env.get("other_cpu_load") if meas else None,
        }
        for k in ARCH_DIMENSIONS:
            attrs[arch_key(k)] = parent.user_attrs.get(arch_key(k))
        study.add_trial(optuna.trial.create_trial(values=[float(accuracy), float(images_per_s)], user_attrs=attrs))
        # Looked up by parent, not taken as the last trial: another worker may have added one since.
        number = max(t.number for t in study.get_trials(deepcopy=False)
                     if t.user_attrs.get(PARENT_TRIAL) == parent.number and t.user_attrs.get(SPEC_HASH) == spec.hash)
        save_checkpoint(paths.checkpoint(number), out.model, spec, meta={
            "study": cfg.name, "trial": number, "parent_trial": parent.number,
            "accuracy": accuracy, "throughput": images_per_s, "data": cfg.data.to_dict(),
        })
    return len(parents)


def linked_wanted(study: optuna.Study, cfg: StudyConfig) -> list[tuple[int, int | None, int | None]]:
    """The linked re-trainings the study should hold now, as :func:`slots.repeat_key` tuples.

    For every architecture on the front (taken on mean accuracy) and every
    reference: ``[trust] seeds - 1`` extra seeds (``cfg.seed + 1``, ...) at
    the proxy budget, and one run at ``long_epochs`` when set. Pruned variants
    are not re-trained (their accuracy comes from pruning a trained net).
    """
    trust = cfg.trust
    if trust.seeds <= 1 and trust.long_epochs is None:
        return []
    stats = architecture_stats(trials_frame(study))
    if stats.empty:
        return []
    pick = stats[(stats["on_front"].astype(bool) | stats["reference"].notna()) & (stats["kind"] != "pruned")]
    out: list[tuple[int, int | None, int | None]] = []
    for n in sorted(int(x) for x in pick["number"]):
        out += [(n, cfg.seed + k, None) for k in range(1, trust.seeds)]
        if trust.long_epochs is not None:
            out.append((n, None, trust.long_epochs))
    return out


def _linked_done(trials: list[optuna.trial.FrozenTrial], key: tuple[int, int | None, int | None]) -> bool:
    """A trial holds the finished result of the linked re-training ``key`` (not one that died)."""
    return any(repeat_key(t) == key and t.state.is_finished() and not died(t) and not t.user_attrs.get(SURPLUS)
               for t in trials)


def _linked_pending(study: optuna.Study, cfg: StudyConfig) -> bool:
    """True while a wanted linked re-training has not finished (not queued yet, queued, running, or died)."""
    trials = study.get_trials(deepcopy=False)
    return not all(_linked_done(trials, key) for key in linked_wanted(study, cfg))


def _queue_linked(study: optuna.Study, cfg: StudyConfig) -> tuple[int, int]:
    """Queue every wanted linked re-training the study does not hold yet; return (seeds, long) queued.

    A key is held by a queued, running or finished trial; one that died
    (Ctrl-C, a dead worker) is queued again, a finished one never.
    """
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    held = {repeat_key(t) for t in trials if repeat_key(t) is not None and not t.user_attrs.get(SURPLUS) and not died(t)}
    seeds = longs = 0
    for key in linked_wanted(study, cfg):
        if key in held or key[0] not in by_number:
            continue
        origin = by_number[key[0]]
        params = origin.params or dict(origin.system_attrs.get(FIXED_PARAMS) or {})
        attrs: dict[str, Any] = {REPEAT_OF: key[0]}
        if key[1] is not None:
            attrs[TRAIN_SEED] = key[1]
            seeds += 1
        if key[2] is not None:
            attrs[TRAIN_EPOCHS] = key[2]
            longs += 1
        study.enqueue_trial(params, user_attrs=attrs)
    return seeds, longs


def run_linked(
    study: optuna.Study, cfg: StudyConfig, objective: Callable[[optuna.Trial], Any],
    after_trial: Callable[..., None], on_event: EventCallback | None = None, rounds: int = 50,
) -> None:
    """Queue and run the ``[trust]`` re-trainings of the front and the references until none is missing.

    They are ordinary Optuna trials (fixed params, ``repeat_of``/``train_seed``/
    ``train_epochs`` attrs), so storages, workers and crash recovery treat them
    like search trials, but they take no search slot. The front may change as
    means come in, so this loops: queue what is missing, run it, look again.
    It stops when nothing is missing and none runs, or when a round takes
    nothing from the queue. While re-trainings run elsewhere (another worker,
    or a killed run whose heartbeat has not yet expired) it waits, as
    :func:`_work` does, and queues again any that died. Optuna runs the oldest
    queued trial first: a search trial queued earlier (a reference past the
    target) is pruned as surplus and queued again behind the re-trainings,
    and the next round runs them.
    """
    emit = on_event or _ignore
    interval = study_heartbeat(study)
    poll = min(5.0, float(interval)) if interval is not None else 2.0
    said_wait = False

    def queued() -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}

    while rounds > 0:
        _fail_dead_trials(study, interval)
        seeds, longs = _queue_linked(study, cfg)
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING and repeat_key(t)]
        if not waiting:
            running = sum(t.state == TrialState.RUNNING and repeat_key(t) is not None for t in trials)
            if not running:
                return
            if not said_wait:
                wanted = linked_wanted(study, cfg)
                emit(Waiting(running, len(wanted) - sum(_linked_done(trials, k) for k in wanted), len(wanted)))
                said_wait = True
            time.sleep(poll)
            continue
        rounds -= 1
        said_wait = False
        emit(LinkedQueued(seeds, longs, len(waiting)))
        before = queued()
        study.optimize(objective, n_trials=len(waiting), catch=(Exception,), callbacks=[after_trial],
                       gc_after_trial=True)
        if not before - queued():
            return


def remeasure_front(study: optuna.Study, measure: MeasureSettings, on_event: EventCallback | None = None) -> dict[str, Any] | None:
    """Re-measure the front and the references together in lockstep; store and return the record.

    Their ratios then come from one stretch of time (as the bench measures),
    not from measurements hours apart on a machine whose load changed. The
    record (study attr ``lockstep_measurement``: when, other processes' load,
    per-architecture images/s, IQR, CV, contended) is what the claims use.
    """
    frame = trials_frame(study)
    stats = architecture_stats(frame)
    if stats.empty:
        return None
    pick = stats[stats["on_front"].astype(bool) | stats["reference"].notna()]
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    specs = {}
    for h, n in zip(pick["spec_hash"], pick["number"]):
        spec = by_number[int(n)].user_attrs.get(SPEC)
        if spec:
            specs[str(h)] = RepVGGSpec.from_dict(spec)
    if not specs:
        return None
    at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = measure_specs(specs, measure)
    loads = [m.env.get("other_cpu_load") for m in out.values() if m.env.get("other_cpu_load") is not None]
    record = {
        "at": at, "other_load": max(loads) if loads else None,
        "contended": any(m.contended for m in out.values()),
        "device": next(iter(out.values())).env.get("device_name"),
        "archs": {h: {"images_per_s": m.images_per_s, "images_per_s_iqr": m.images_per_s_iqr,
                      "robust_cv": m.robust_cv, "contended": m.contended} for h, m in out.items()},
    }
    study.set_user_attr(STUDY_LOCKSTEP, record)
    (on_event or _ignore)(Remeasured(len(specs), at, record["other_load"], record["contended"]))
    return record


def write_outputs(study: optuna.Study, out_dir: str | Path) -> tuple[Any, Any]:
    """Write ``trials.csv`` and ``pareto.csv`` of the study into ``out_dir``; return both frames."""
    paths = StudyPaths(Path(out_dir))
    trials = trials_frame(study)
    pareto = pareto_frame(trials, study_sigmas(study))
    write_csv(trials, paths.trials_csv)
    write_csv(pareto, paths.pareto_csv)
    return trials, pareto


def _work(
    study: optuna.Study, objective: _Objective, after_trial: Callable[..., None], target: int,
    deadline: float | None, on_event: EventCallback,
) -> None:
    """Run trials until the study holds ``target`` finished search trials.

    ``study.optimize`` alone is not enough with several workers: its count is
    per worker, and a worker that stops as soon as every slot is taken could
    leave for good while another worker's running trial is about to die and be
    retried. So this loop runs trials while a slot is free (or a queued retry
    may run), and otherwise waits, checking for dead workers' trials (Optuna's
    heartbeat, or :func:`slots.recover_trials` for storages without one),
    until the target is reached or nothing is in flight any more.
    """
    interval = study_heartbeat(study)
    poll = min(5.0, float(interval)) if interval is not None else 2.0
    said_wait = False
    while True:
        _fail_dead_trials(study, interval)
        state = slot_state(study.get_trials(deepcopy=False), target)
        left = None if deadline is None else deadline - time.monotonic()
        if state.finished or (left is not None and left <= 0):
            return
        if state.runnable:
            try:
                study.optimize(
                    objective, n_trials=None, timeout=left, catch=(Exception,),
                    callbacks=[after_trial], gc_after_trial=True,
                )
            except optuna.exceptions.UpdateFinishedTrialError as e:
                # Another worker declared this one's trial dead (missed heartbeats) and retried it.
                on_event(TrialTakenOver(str(e).splitlines()[0]))
            said_wait = False
            continue
        if state.running == 0:
            return
        if not said_wait:
            on_event(Waiting(state.running, state.done, target))
            said_wait = True
        time.sleep(poll)


def run_search(
    cfg: StudyConfig,
    *,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    reports_dir: str | Path = DEFAULT_REPORTS_DIR,
    progress: bool = True,
    role: str = "all",
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = None,
    on_event: EventCallback | None = None,
) -> SearchResult:
    """Run (or resume) the study until it has ``n_trials`` finished search trials.

    ``storage`` is an Optuna storage URL (``sqlite:///``, ``postgresql://``,
    ``journal:PATH``); several processes may share one. ``role`` splits the job
    for ``--workers``: ``"worker"`` only runs trials (no pruning, CSV or
    report), ``"finalize"`` only prunes the front and writes the outputs, and
    ``"all"`` (one process) does both. ``on_event`` receives the search's
    events (:mod:`repvgg_nas.search.events`), and with ``progress`` also every
    training step; nothing is printed. ``timeout`` (default: the study's;
    0: none) is this call's time budget in seconds, counted from
    the call: no trial starts after it, and a candidate climbs a rung only if
    the rung would end before it. The budget bounds the search only: the
    trial in flight, the final re-measurement and, once the study reaches
    ``n_trials``, the linked re-trainings (``[trust]``) and the pruning of the
    front still run. If an end phase raises, the trials CSVs and the report
    are still written before the error propagates.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    timeout = cfg.time_budget(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout  # from this call: a resume gets it afresh
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    emit = on_event or _ignore
    paths = StudyPaths.of(cfg.name, reports_dir)
    if device is not None:
        cfg = cfg.replace(measure=dataclasses.replace(cfg.measure, device=device))
    measure = cfg.measure.resolved()
    train_device = torch.device(measure.device)
    target = n_trials if n_trials is not None else cfg.n_trials

    data = load_data(cfg.data, device=train_device)  # before anything is written
    study, shown = connect(cfg, storage, reports_dir, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    paths.root.mkdir(parents=True, exist_ok=True)
    if role != "worker":
        study.set_user_attr(STUDY_TRUST, cfg.trust.to_dict())  # the latest run's rule, read by the report
    if role == "all":
        recover_interrupted(study, running=study_heartbeat(study) is None)
    cache = ThroughputCache(paths.throughput_cache)
    paths.checkpoints.mkdir(exist_ok=True)
    on_step = emit if (progress and on_event is not None) else None
    objective = _Objective(cfg, data, train_device, cache, paths, on_step=on_step, target=target, on_event=emit,
                           deadline=deadline, budget=timeout)

    done = slot_state(study.get_trials(deepcopy=False), target).done
    remaining = max(0, target - done) if role != "finalize" else 0
    emit(StudyStarted(cfg.name, role, done, remaining, target, data.describe(), measure.device, shown))

    # Linked re-trainings can bring a trial back onto the front: delete checkpoints only after them.
    linked = cfg.trust.seeds > 1 or cfg.trust.long_epochs is not None

    def after_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        emit(TrialFinished(t, counts_as_done(t)))
        if not linked:
            _keep_checkpoints(study, paths)
        state = slot_state(study.get_trials(deepcopy=False), target)
        if state.finished or not state.runnable:
            study.stop()

    def after_linked(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        emit(TrialFinished(t, False))

    interrupted = False
    failure: Exception | None = None
    try:
        if remaining:
            _work(study, objective, after_trial, target, deadline, emit)
            trials = study.get_trials(deepcopy=False)
            done, paused = slot_state(trials, target).done, len(paused_by_time(trials))
            if timeout is not None and deadline is not None and done < target and (
                    paused or time.monotonic() >= deadline):
                emit(TimeUp(timeout, done, target, paused))
        if slot_state(study.get_trials(deepcopy=False), target).finished:
            run_linked(study, cfg, objective, after_linked, emit)
        if cfg.prune is not None and role != "worker":
            prune_front(study, cfg, data, measure, train_device, cache, paths, emit)
        if role != "worker":
            remeasure_front(study, measure, emit)
    except KeyboardInterrupt:
        interrupted = True
        emit(Interrupted())
    except Exception as e:  # an end phase failed (re-measurement, storage): keep what the search found
        failure = e
    if role == "worker":
        if failure is not None:
            raise failure
        return SearchResult(study, paths.root, None, None, interrupted)
    trials, pareto = write_outputs(study, paths.root)
    if failure is None and (not linked or not (interrupted or _linked_pending(study, cfg))):
        _keep_checkpoints(study, paths)
    write_report(study, paths.root, storage=shown)
    if failure is not None:
        raise failure
    return SearchResult(study, paths.root, trials, pareto, interrupted)

