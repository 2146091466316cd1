"""Run (or resume) a study: open it, search to its target, the linked re-trainings, the finishing steps.

Nothing here prints: the loop reports through ``on_event``
(:mod:`repvgg_nas.search.events`) and ``python -m repvgg_nas.search``
decides what to show.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from .. import lifecycle
from ..attrs import STUDY_TRUST
from ..data import DataBundle, load_data
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths
from ..measure import MeasureSettings, ThroughputCache
from ..outputs import write_study_outputs
from ..storage import DEFAULT_HEARTBEAT_INTERVAL
from ..study import StudyConfig
from .connect import open_and_recover
from .events import EventCallback, Interrupted, PoolReady, StudyStarted, TimeUp, TrialFinished, ignore
from .finish import keep_checkpoints, prune_front, remeasure_front, write_outputs
from .loop import work
from .refcache import ReferenceCache
from .rungs import paused_by_time
from .screening import ensure_pool, named_latency_table
from .slots import slot_state
from .trial import TrialRunner, TrialTools
from .trust import linked_pending, run_linked

__all__ = ["ROLES", "SearchResult", "counts_as_done", "run_search"]

TrialState = optuna.trial.TrialState


@dataclass
class SearchResult:
    study: optuna.Study
    out_dir: Path
    trials: Any  # pandas.DataFrame
    pareto: Any  # pandas.DataFrame
    interrupted: bool = False


def counts_as_done(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial counts toward n_trials (:func:`repvgg_nas.lifecycle.counts_toward_target`):
    a search or reference trial with a result, not one cut short, a pruned variant, a linked
    re-training or a lost one. (Study-wide counts use :func:`slots.slot_state`.)"""
    return lifecycle.counts_toward_target(t)


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
    runner: TrialRunner
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
              reports_dir: str | Path, progress: bool, on_event: EventCallback | None, tools: TrialTools,
              **beat: Any) -> _Run:
    """Load the data, open the study and build the trial runner; nothing runs yet."""
    timeout = cfg.time_budget(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout  # from this call: a resume gets it afresh
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    emit = on_event or ignore
    paths = StudyPaths.of(cfg.name, reports_dir)
    measure = cfg.measure.resolved()
    device = torch.device(measure.device)
    data = load_data(cfg.data, device=device)  # before anything is written
    named_latency_table(cfg, measure, data.num_classes, data.in_channels)  # a bad table file: nothing written
    study, shown = open_and_recover(cfg, storage, reports_dir, recover=plan.recover, **beat)
    paths.root.mkdir(parents=True, exist_ok=True)
    if plan.finalize:
        study.set_user_attr(STUDY_TRUST, cfg.trust.to_dict())  # the latest run's rule, read by the report
    cache = ThroughputCache(paths.throughput_cache)
    paths.checkpoints.mkdir(exist_ok=True)
    target = n_trials if n_trials is not None else cfg.n_trials
    runner = TrialRunner(cfg, data, device, cache, paths, tools,
                         on_step=emit if (progress and on_event is not None) else None, on_event=emit,
                         deadline=deadline, budget=timeout, references=ReferenceCache())
    return _Run(cfg, study, shown, paths, data, measure, device, cache, runner, target, timeout, deadline, emit)


def _prepare_pool(run: _Run) -> None:
    """Draw candidates from the study's pre-screened pool (made now, with the latency table, if the study
    has none yet); a blind search when ``[prescreen]`` is off."""
    emit = run.emit
    pool, made = ensure_pool(run.study, run.cfg, run.measure, run.data.num_classes, run.data.in_channels,
                             on_progress=emit)
    run.runner.pool = pool
    if pool is not None:
        emit(PoolReady(len(pool), pool.settings.proxy, made))


def _search_phase(run: _Run) -> None:
    """The worker loop: search trials to the target (or the time budget), then, once the target is reached,
    the linked re-trainings."""
    study, emit = run.study, run.emit

    def after_trial(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        emit(TrialFinished(t, counts_as_done(t)))
        if not run.linked:
            keep_checkpoints(study, run.paths)

    if run.target - run.done() > 0:
        work(study, run.runner, after_trial, run.target, run.deadline, emit)
        trials = study.get_trials(deepcopy=False)
        done, paused = slot_state(trials, run.target).done, len(paused_by_time(trials))
        if run.deadline is not None and done < run.target and (paused or time.monotonic() >= run.deadline):
            emit(TimeUp(run.timeout, done, run.target, paused))
    if run.done() >= run.target:
        _linked_phase(run)


def _linked_phase(run: _Run) -> None:
    run_linked(run.study, run.cfg, run.runner, lambda s, t: run.emit(TrialFinished(t, False)), run.emit)


def _finalize(run: _Run) -> None:
    """The end of a study: prune the front, re-measure it and the references together."""
    if run.cfg.prune is not None:
        prune_front(run.study, run.cfg, run.data, run.measure, run.device, run.cache, run.paths, run.emit,
                    run.runner.tools.measure_lockstep)
    remeasure_front(run.study, run.measure, run.emit, run.runner.tools.measure_lockstep)


def _write_all(run: _Run, interrupted: bool, failure: Exception | None) -> SearchResult:
    """The CSVs and the registered pages (also after a failed end phase), then the checkpoint clean-up."""
    trials, pareto = write_outputs(run.study, run.paths.root)
    if failure is None and (not run.linked or not (interrupted or linked_pending(run.study, run.cfg))):
        keep_checkpoints(run.study, run.paths)
    write_study_outputs(run.study, run.paths.root, storage=run.shown)  # registered pages (:mod:`repvgg_nas.outputs`)
    if failure is not None:
        raise failure
    return SearchResult(run.study, run.paths.root, trials, pareto, interrupted)


def _run_phases(run: _Run, plan: _Plan) -> SearchResult:
    """The phases of one run in order; Ctrl-C or a failed end phase still writes what the search found."""
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
    tools: TrialTools | None = None,
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
    front still run. The outputs are ``trials.csv``, ``pareto.csv`` and
    whatever pages are registered in :data:`repvgg_nas.outputs.STUDY_OUTPUTS`
    (the CLI registers the report: :func:`repvgg_nas.report.register_report`);
    if an end phase raises, they are still written before the error propagates. A reference trained by an
    earlier study with the same spec, data, budget and seed is reused
    (:mod:`.refcache`) unless ``retrain_references``. ``tools`` gives a
    trial its training, scoring and measuring (:class:`.trial.TrialTools`;
    default: the real ones).
    """
    if role not in _PLANS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    plan = _PLANS[role]
    if device is not None:
        cfg = cfg.replace(measure=dataclasses.replace(cfg.measure, device=device))
    run = _open_run(cfg, plan, storage, n_trials, timeout, reports_dir, progress, on_event, tools or TrialTools(),
                    heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    run.runner.retrain_references = retrain_references
    done = run.done()
    remaining = max(0, run.target - done) if plan.search else 0
    run.emit(StudyStarted(cfg.name, role, done, remaining, run.target, run.data.describe(), run.measure.device,
                          run.shown))
    return _run_phases(run, plan)
