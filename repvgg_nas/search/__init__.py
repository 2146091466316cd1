"""The study: search space, study config, one trial, exact trial accounting, workers, the run loop.

``python -m repvgg_nas.search --study a_family`` is the main job (the CLI is
:mod:`repvgg_nas.search.__main__`). The modules, in data-flow order:

- :mod:`repvgg_nas.study` (re-exported here): the search space and the study config;
- :mod:`.trial`: the trial pipeline (sample, measure, train, fuse, check, evaluate), which returns values or raises;
- :mod:`.ends`: what the pipeline raises when a trial ends short of a result (each carries its outcome);
- :mod:`.rungs`: multi-fidelity search: a candidate climbs the rungs of the training budget;
- :mod:`.slots`: exact trial counts with several workers, crash recovery;
- :mod:`.loop`: the ask/tell worker loop, the one place that maps exceptions to outcomes and tells;
- :mod:`.trust`: the ``[trust]`` linked re-trainings (extra seeds, long budgets) of the front and references;
- :mod:`.finish`: the finishing steps (prune the front, lockstep re-measurement, checkpoints, CSVs);
- :mod:`.locks`: the per-device measurement lock shared by local workers;
- :mod:`.launch`: worker identity and the ``--workers N`` launcher;
- :mod:`.workers`: the ``--workers N`` parent: prepare the study once, run the workers, collect their exit codes;
- :mod:`.connect`: opening (or resuming) a study on its storage, and recovering its interrupted trials;
- :mod:`.run`: one run of a study, phase by phase (open, search, linked, finish, outputs);
- :mod:`.events`: what the loop reports to its caller (it never prints);
- :mod:`.console` (the CLI's, not re-exported here): the events and results as text on the terminal.

A trial's way through this package, in order:

1. ``__main__.main`` parses the flags, loads the validated study
   (:func:`repvgg_nas.study.load_study_config`), registers the report page
   and calls :func:`.run.run_search` (``--workers N``: :mod:`.workers`
   plans and starts N such processes).
2. :mod:`.run` opens the run: the data, :func:`.connect.open_and_recover`
   (the study, its interrupted trials queued again), a
   :class:`.trial.TrialRunner` holding the :class:`.trial.TrialTools`;
   then the pool (:func:`.screening.ensure_pool`).
3. :func:`.loop.work` claims a slot and asks for the trial under the claim
   lock (:mod:`.slots`), then :func:`.loop.run_trial` calls the runner.
4. :class:`.trial.TrialRunner`: the spec (a pool member or the space's
   draw), an earlier twin's result if any, every measured objective
   (:func:`repvgg_nas.objectives.measured_values`, alone on the device by
   :mod:`.locks`), the limits (:class:`.ends.Stopped`), then the trained
   net: a cached reference (:mod:`.refcache`), a candidate's climb
   (:meth:`.rungs.Climber.climb`, whose rung :class:`.rungs.Decision` raises
   :class:`.ends.Stopped` or :class:`.ends.TimeBudgetPaused`) or one
   training; fuse, check, score, checkpoint; it returns the values in the
   objective table's order.
5. :func:`.loop.run_trial` maps what came back (:func:`.loop.ending`) to a
   state and an outcome, lets the runner release what it held, records the
   outcome (:func:`repvgg_nas.lifecycle.end`) and tells the study: the one
   place that does.
6. Once the target is reached, :func:`.trust.run_linked` runs the linked
   re-trainings through the same loop; then :mod:`.finish` prunes the front,
   re-measures it with the references in lockstep, keeps the checkpoints
   that matter and writes the CSVs, and the registered pages follow.
   Every step reports :mod:`.events`; the CLI's :mod:`.console` shows them.
"""

from __future__ import annotations

from .connect import connect, default_storage, open_and_recover, open_study, recover_interrupted
from .refcache import CachedReference, ReferenceCache, reference_key
from .screening import POOL_RANK, PoolMade, ensure_pool, stored_pool
from .events import (
    EventCallback,
    Interrupted,
    LinkedQueued,
    PoolReady,
    PruneFailed,
    PruningFrontMember,
    Remeasured,
    RungDecided,
    TimeUp,
    SearchEvent,
    StudyStarted,
    TrialFinished,
    TrialTakenOver,
    Waiting,
)
from .launch import (
    WorkerId,
    current_worker,
    launch_workers,
    pid_alive,
    visible_gpus,
    worker_argv,
    worker_env,
    worker_seed,
    run_seed,
)
from .locks import DeviceLock, default_lock_dir, device_key
from .ends import Stopped, TimeBudgetPaused
from .finish import keep_checkpoints, prune_front, remeasure_front, write_outputs
from .loop import Ending, Runner, ending, failure_reason, run_trial
from .run import ROLES, SearchResult, counts_as_done, run_search
from .slots import SlotState, admission, recover_trials, repeat_key, repeat_taken, slot_state
from .workers import WorkerPlan, WorkersResult, check_workers, hide_url, plan_workers, run_workers
from .rungs import (
    Climber, Decision, RungRecord, RungResult, dominating, paused_by_time, rung_records, rung_results,
    rung_train_config,
)
from .trial import TrialRunner, TrialTools
from .trust import linked_pending, linked_wanted, run_linked
from ..study import (
    SAMPLERS, Dim, FidelityConfig, Objectives, SamplerConfig, SearchSpace, StudyConfig, TrustConfig, load_space,
    load_study_config,
)

__all__ = [
    # space and study config
    "Dim",
    "SearchSpace",
    "load_space",
    "Objectives",
    "SamplerConfig",
    "SAMPLERS",
    "StudyConfig",
    "TrustConfig",
    "FidelityConfig",
    "load_study_config",
    # one trial and how it ends
    "TrialRunner",
    "TrialTools",
    "Runner",
    "run_trial",
    "Ending",
    "ending",
    "failure_reason",
    "Stopped",
    # multi-fidelity rungs
    "Climber",
    "Decision",
    "RungRecord",
    "RungResult",
    "TimeBudgetPaused",
    "dominating",
    "rung_records",
    "rung_results",
    "rung_train_config",
    "paused_by_time",
    # running a study
    "ROLES",
    "SearchResult",
    "run_search",
    "open_study",
    "connect",
    "default_storage",
    "recover_interrupted",
    "open_and_recover",
    "prune_front",
    "write_outputs",
    "counts_as_done",
    "linked_wanted",
    "run_linked",
    "linked_pending",
    "keep_checkpoints",
    "remeasure_front",
    # events (what run_search reports)
    "EventCallback",
    "Interrupted",
    "CachedReference",
    "ReferenceCache",
    "reference_key",
    "POOL_RANK",
    "PoolMade",
    "ensure_pool",
    "stored_pool",
    "PoolReady",
    "LinkedQueued",
    "Remeasured",
    "RungDecided",
    "TimeUp",
    "PruneFailed",
    "PruningFrontMember",
    "SearchEvent",
    "StudyStarted",
    "TrialFinished",
    "TrialTakenOver",
    "Waiting",
    # several workers: slots, crash recovery, device lock, launcher
    "admission",
    "current_worker",
    "default_lock_dir",
    "device_key",
    "DeviceLock",
    "launch_workers",
    "pid_alive",
    "recover_trials",
    "repeat_key",
    "repeat_taken",
    "slot_state",
    "SlotState",
    "visible_gpus",
    "worker_argv",
    "worker_env",
    "worker_seed",
    "run_seed",
    "WorkerId",
    "WorkerPlan",
    "WorkersResult",
    "check_workers",
    "hide_url",
    "plan_workers",
    "run_workers",
]
