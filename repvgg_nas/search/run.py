"""The search loop: run (or resume) a study to its target, prune its front, write its outputs.

Nothing here prints: the loop reports through ``on_event``
(:mod:`repvgg_nas.search.events`) and ``python -m repvgg_nas.search``
decides what to show.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from .. import lifecycle
from ..attrs import (
    ACCURACY, ARCH, DEVICE, LATENCY_MS, MACS, OUTCOME, PARAMS, PARENT_TRIAL, PRUNE, PRUNE_TARGET_MET, PRUNED_RATIO,
    REPEAT_OF, SPEC, SPEC_HASH, SPEEDUP, STUDY_LOCKSTEP, STUDY_TRUST, TRAIN_EPOCHS, TRAIN_SEED, arch_key,
)
from ..attrs import IMAGES_PER_S, MEASURE_CONTENDED, OTHER_LOAD, PEAK_MEMORY_MB, THROUGHPUT_CV, THROUGHPUT_IQR, VAL_SIZE
from ..checkpoint import load_model, save_checkpoint
from ..data import DataBundle, load_data
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..lifecycle import Outcome, Role
from ..measure import MeasureSettings, ThroughputCache, deployed_peak_memory_mb, measure_specs
from ..prune import run_prune
from ..outputs import write_study_outputs
from ..stats import architecture_stats, pareto_frame, write_csv
from ..spec import RepVGGSpec
from ..storage import DEFAULT_HEARTBEAT_INTERVAL, claim_lock, enqueued_params, study_heartbeat
from ..study_frames import front_numbers, study_sigmas, trials_frame
from .connect import connect, recover_interrupted
from .events import (
    EventCallback, Interrupted, LinkedQueued, PruneFailed, PruningFrontMember, Remeasured, SearchEvent,
    PoolReady, StudyStarted, TimeUp, TrialFinished, Waiting,
)
from .loop import DONE, RAN, claim_linked_trial, drive, run_trial, work
from .objective import ARCH_DIMENSIONS, _Objective, failure_reason
from .refcache import ReferenceCache
from .rungs import paused_by_time
from .screening import ensure_pool, named_latency_table
from .slots import repeat_key, slot_state
from ..study import StudyConfig

__all__ = [
    "ROLES", "SearchResult", "run_search", "prune_front", "write_outputs", "counts_as_done", "linked_wanted",
    "run_linked", "remeasure_front",
]

TrialState = optuna.trial.TrialState


@dataclass
class SearchResult:
    study: optuna.Study
    out_dir: Path
    trials: Any  # pandas.DataFrame
    pareto: Any  # pandas.DataFrame
    interrupted: bool = False


def _ignore(event: SearchEvent) -> None:
    pass


def counts_as_done(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial counts toward n_trials (:func:`repvgg_nas.lifecycle.counts_toward_target`):
    a search or reference trial with a result, not one cut short, a pruned variant, a linked
    re-training or a lost one. (Study-wide counts use :func:`slots.slot_state`.)"""
    return lifecycle.counts_toward_target(t)


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
    # References, pruned variants and long re-trainings (the better-trained nets) are kept too.
    kept_roles = (Role.REFERENCE, Role.PRUNED_VARIANT, Role.LONG_RETRAIN)
    keep = front_numbers(study) | {t.number for t in trials if lifecycle.role(t) in kept_roles}
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
    parents = [t for t in trials if t.number in front and lifecycle.role(t) != Role.PRUNED_VARIANT
               and t.number not in done]
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
        _add_pruned_variant(study, cfg, parent, out, data, paths)
    return len(parents)


def _add_pruned_variant(study: optuna.Study, cfg: StudyConfig, parent: optuna.trial.FrozenTrial, out: Any,
                        data: DataBundle, paths: StudyPaths) -> None:
    """Add the pruned net of ``parent`` as a complete trial of role pruned_variant, and its checkpoint."""
    assert cfg.prune is not None
    final, spec, meas = out.final, out.model.spec, out.measurement
    # Speed as rounded as the pruning table shows it; accuracy unrounded (its standard error needs it).
    accuracy, images_per_s = float(final.accuracy), round(final.images_per_s, 1)
    attrs = lifecycle.created_attrs(Role.PRUNED_VARIANT, **{
        OUTCOME: Outcome.COMPLETE.value, PARENT_TRIAL: parent.number,
        PRUNED_RATIO: cfg.prune.ratio if cfg.prune.ratio is not None else None,
        PRUNE: cfg.prune.to_dict(),
        SPEEDUP: round(images_per_s / round(out.original.images_per_s, 1), 3),
        PRUNE_TARGET_MET: out.met,
        SPEC: spec.to_dict(), SPEC_HASH: spec.hash, ARCH: spec.summary(),
        PARAMS: final.params, MACS: final.macs,
        LATENCY_MS: round(final.latency_ms, 2), ACCURACY: accuracy, IMAGES_PER_S: images_per_s,
        PEAK_MEMORY_MB: deployed_peak_memory_mb(spec, cfg.measure),
        DEVICE: parent.user_attrs.get(DEVICE), VAL_SIZE: data.val_size,
        # The pruned net's own spread and load flag: its claims are only as sure as its measurement.
        THROUGHPUT_IQR: meas.images_per_s_iqr if meas else None,
        THROUGHPUT_CV: meas.robust_cv if meas else None,
        MEASURE_CONTENDED: meas.contended if meas else None,
        OTHER_LOAD: meas.env.get("other_cpu_load") if meas else None,
    })
    for k in ARCH_DIMENSIONS:
        attrs[arch_key(k)] = parent.user_attrs.get(arch_key(k))
    values = [float(attrs[o.attr]) for o in cfg.objectives.table]
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))
    # Looked up by parent, not taken as the last trial: another worker may have added one since.
    number = max(t.number for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get(PARENT_TRIAL) == parent.number and t.user_attrs.get(SPEC_HASH) == spec.hash)
    save_checkpoint(paths.checkpoint(number), out.model, spec, meta={
        "study": cfg.name, "trial": number, "parent_trial": parent.number,
        "accuracy": accuracy, "throughput": images_per_s, "data": cfg.data.to_dict(),
    })


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
    """A trial holds the finished result of the linked re-training ``key`` (not one cut short)."""
    return any(repeat_key(t) == key and lifecycle.holds_result(t) for t in trials)


def _linked_pending(study: optuna.Study, cfg: StudyConfig) -> bool:
    """True while a wanted linked re-training has not finished (not queued yet, queued, running, or died)."""
    trials = study.get_trials(deepcopy=False)
    return not all(_linked_done(trials, key) for key in linked_wanted(study, cfg))


def _queue_linked(study: optuna.Study, cfg: StudyConfig) -> tuple[int, int]:
    """Queue every wanted linked re-training the study does not hold yet; return (seeds, long) queued.

    A key is held by a queued, running or finished trial; one that was cut
    short (Ctrl-C, a dead worker) is queued again, a finished one never. Runs
    under the claim lock, so two workers never queue the same key.
    """
    with claim_lock(study):
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        held = {repeat_key(t) for t in trials if repeat_key(t) is not None and not lifecycle.lost(t)
                and not lifecycle.needs_rerun(t)}
        seeds = longs = 0
        for key in linked_wanted(study, cfg):
            if key in held or key[0] not in by_number:
                continue
            attrs: dict[str, Any] = {REPEAT_OF: key[0]}
            if key[1] is not None:
                attrs[TRAIN_SEED] = key[1]
                seeds += 1
            if key[2] is not None:
                attrs[TRAIN_EPOCHS] = key[2]
                longs += 1
            role = Role.LONG_RETRAIN if key[2] is not None else Role.SEED_REPEAT
            study.enqueue_trial(enqueued_params(by_number[key[0]]), user_attrs=lifecycle.created_attrs(role, **attrs))
        return seeds, longs


def run_linked(
    study: optuna.Study, cfg: StudyConfig, objective: Callable[[optuna.Trial], Any],
    after_trial: Callable[..., None], on_event: EventCallback | None = None, rounds: int = 50,
) -> None:
    """Queue and run the ``[trust]`` re-trainings of the front and the references until none is missing.

    They are ordinary Optuna trials (fixed params, roles seed_repeat and
    long_retrain, ``repeat_of``/``train_seed``/``train_epochs`` attrs), asked
    and told through the same loop as search trials, but they take no search
    slot. The front may change as means come in, so each step queues what is
    missing, then runs one queued re-training. It stops when nothing is
    missing and none runs, or after ``rounds`` steps that had to queue
    re-trainings anew. While re-trainings run elsewhere (another worker, or a
    killed run whose heartbeat has not yet expired) it waits (:func:`.loop.drive`),
    and queues again any that died. Queued search trials (a reference past the
    target) are left in the queue: a linked step takes its own trials only.
    """
    emit = on_event or _ignore
    left = [rounds]
    announced = [False]

    def step() -> str | Waiting:
        seeds, longs = _queue_linked(study, cfg)
        trials = study.get_trials(deepcopy=False)
        waiting = sum(t.state == TrialState.WAITING and repeat_key(t) is not None for t in trials)
        if seeds or longs or (waiting and not announced[0]):
            left[0] -= bool(seeds or longs)
            announced[0] = True
            emit(LinkedQueued(seeds, longs, waiting))
        trial = claim_linked_trial(study) if left[0] >= 0 else None
        if trial is None:
            running = sum(t.state == TrialState.RUNNING and repeat_key(t) is not None for t in trials)
            if not running or left[0] < 0:
                return DONE
            wanted = linked_wanted(study, cfg)
            return Waiting(running, len(wanted) - sum(_linked_done(trials, k) for k in wanted), len(wanted))
        frozen = run_trial(study, trial, objective, emit)
        if frozen is not None:
            after_trial(study, frozen)
        return RAN

    drive(study, step, emit)


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


@dataclass(frozen=True)
class _Plan:
    """What one ``role`` of :func:`run_search` does."""

    search: bool  # run search trials (this process is a worker)
    finalize: bool  # prune the front, re-measure it in lockstep, write the outputs and the report
    recover: bool  # re-queue trials cut short in earlier runs (the single process, or the --workers parent)


_PLANS = {
    "all": _Plan(search=True, finalize=True, recover=True),
    "worker": _Plan(search=True, finalize=False, recover=False),
    "finalize": _Plan(search=False, finalize=True, recover=False),
}
ROLES = tuple(_PLANS)


@dataclass
class _Run:
    """What the phases of one :func:`run_search` call share."""

    cfg: StudyConfig
    study: optuna.Study
    shown: str
    paths: StudyPaths
    data: DataBundle
    measure: MeasureSettings
    device: torch.device
    cache: ThroughputCache
    objective: _Objective
    target: int
    timeout: float | None
    deadline: float | None
    emit: EventCallback

    @property
    def linked(self) -> bool:
        """Linked re-trainings can bring a trial back onto the front: checkpoints are deleted after them."""
        return self.cfg.trust.seeds > 1 or self.cfg.trust.long_epochs is not None

    def done(self) -> int:
        return slot_state(self.study.get_trials(deepcopy=False), self.target).done


def _open_run(cfg: StudyConfig, plan: _Plan, storage: str | None, n_trials: int | None, timeout: float | None,
              reports_dir: str | Path, progress: bool, on_event: EventCallback | None, **beat: Any) -> _Run:
    """Load the data, open the study and build the objective; nothing runs yet."""
    timeout = cfg.time_budget(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout  # from this call: a resume gets it afresh
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    emit = on_event or _ignore
    paths = StudyPaths.of(cfg.name, reports_dir)
    measure = cfg.measure.resolved()
    device = torch.device(measure.device)
    data = load_data(cfg.data, device=device)  # before anything is written
    named_latency_table(cfg, measure, data.num_classes, data.in_channels)  # a bad table file: nothing written
    study, shown = connect(cfg, storage, reports_dir, **beat)
    paths.root.mkdir(parents=True, exist_ok=True)
    if plan.finalize:
        study.set_user_attr(STUDY_TRUST, cfg.trust.to_dict())  # the latest run's rule, read by the report
    if plan.recover:
        recover_interrupted(study, running=study_heartbeat(study) is None)
    cache = ThroughputCache(paths.throughput_cache)
    paths.checkpoints.mkdir(exist_ok=True)
    target = n_trials if n_trials is not None else cfg.n_trials
    objective = _Objective(cfg, data, device, cache, paths, on_step=emit if (progress and on_event is not None) else None,
                           target=target, on_event=emit, deadline=deadline, budget=timeout,
                           references=ReferenceCache())
    return _Run(cfg, study, shown, paths, data, measure, device, cache, objective, target, timeout, deadline, emit)


def _prepare_pool(run: _Run) -> None:
    """Draw candidates from the study's pre-screened pool (made now, with the latency table, if the study
    has none yet); a blind search when ``[prescreen]`` is off."""
    emit = run.emit
    pool, made = ensure_pool(run.study, run.cfg, run.measure, run.data.num_classes, run.data.in_channels,
                             on_progress=emit)
    run.objective.pool = pool
    if pool is not None:
        emit(PoolReady(len(pool), pool.settings.proxy, made))


def _search_phase(run: _Run) -> None:
    """The worker loop: search trials to the target (or the time budget), then, once the target is reached,
    the linked re-trainings."""
    study, emit = run.study, run.emit

    def after_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        emit(TrialFinished(t, counts_as_done(t)))
        if not run.linked:
            _keep_checkpoints(study, run.paths)

    if run.target - run.done() > 0:
        work(study, run.objective, after_trial, run.target, run.deadline, emit)
        trials = study.get_trials(deepcopy=False)
        done, paused = slot_state(trials, run.target).done, len(paused_by_time(trials))
        if run.deadline is not None and done < run.target and (paused or time.monotonic() >= run.deadline):
            emit(TimeUp(run.timeout, done, run.target, paused))
    if run.done() >= run.target:
        _linked_phase(run)


def _linked_phase(run: _Run) -> None:
    run_linked(run.study, run.cfg, run.objective, lambda s, t: run.emit(TrialFinished(t, False)), run.emit)


def _finalize(run: _Run) -> None:
    """The end of a study: prune the front, re-measure it and the references together."""
    if run.cfg.prune is not None:
        prune_front(run.study, run.cfg, run.data, run.measure, run.device, run.cache, run.paths, run.emit)
    remeasure_front(run.study, run.measure, run.emit)


def _write_all(run: _Run, interrupted: bool, failure: Exception | None) -> SearchResult:
    """The CSVs and the report (also after a failed end phase), then the checkpoint clean-up."""
    trials, pareto = write_outputs(run.study, run.paths.root)
    if failure is None and (not run.linked or not (interrupted or _linked_pending(run.study, run.cfg))):
        _keep_checkpoints(run.study, run.paths)
    write_study_outputs(run.study, run.paths.root, storage=run.shown)  # the report page (:mod:`repvgg_nas.outputs`)
    if failure is not None:
        raise failure
    return SearchResult(run.study, run.paths.root, trials, pareto, interrupted)


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
    retrain_references: bool = False,
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
    are still written before the error propagates. A reference trained by an
    earlier study with the same spec, data, budget and seed is reused
    (:mod:`.refcache`) unless ``retrain_references``.
    """
    if role not in _PLANS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    plan = _PLANS[role]
    if device is not None:
        cfg = cfg.replace(measure=dataclasses.replace(cfg.measure, device=device))
    run = _open_run(cfg, plan, storage, n_trials, timeout, reports_dir, progress, on_event,
                    heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    run.objective.retrain_references = retrain_references
    done = run.done()
    remaining = max(0, run.target - done) if plan.search else 0
    run.emit(StudyStarted(cfg.name, role, done, remaining, run.target, run.data.describe(), run.measure.device,
                          run.shown))
    interrupted, failure = False, None
    if plan.search:
        _prepare_pool(run)  # before the phases: a space the pre-screen rejects writes no outputs
    try:
        if plan.search:
            _search_phase(run)
        elif run.done() >= run.target:
            _linked_phase(run)
        if plan.finalize:
            _finalize(run)
    except KeyboardInterrupt:
        interrupted = True
        run.emit(Interrupted())
    except Exception as e:  # an end phase failed (re-measurement, storage): keep what the search found
        failure = e
    if not plan.finalize:
        if failure is not None:
            raise failure
        return SearchResult(run.study, run.paths.root, None, None, interrupted)
    return _write_all(run, interrupted, failure)
