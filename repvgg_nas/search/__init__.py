"""The study: search space, study config, one trial, exact trial accounting, workers, the run loop.

``python -m repvgg_nas.search --study a_family`` is the main job (the CLI is
:mod:`repvgg_nas.search.__main__`). The modules, in data-flow order:

- :mod:`repvgg_nas.study` (re-exported here): the search space and the study config;
- :mod:`.objective`: one trial (sample, train, fuse, check, evaluate, measure);
- :mod:`.rungs`: multi-fidelity search: a candidate climbs the rungs of the training budget;
- :mod:`.slots`: exact trial counts with several workers, crash recovery;
- :mod:`.loop`: the ask/tell worker loop (a trial is asked for only once its slot is claimed);
- :mod:`.locks`: the per-device measurement lock shared by local workers;
- :mod:`.launch`: worker identity and the ``--workers N`` launcher;
- :mod:`.workers`: the ``--workers N`` parent: prepare the study once, run the workers, collect their exit codes;
- :mod:`.connect`: opening (or resuming) a study on its storage, and recovering its interrupted trials;
- :mod:`.run`: the loop, pruning of the front, the CSV and report outputs;
- :mod:`.events`: what the loop reports to its caller (it never prints);
- :mod:`.console` (the CLI's, not re-exported here): the events and results as text on the terminal.
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
)
from .locks import DeviceLock, default_lock_dir, device_key
from .workers import WorkerPlan, WorkersResult, check_workers, hide_url, plan_workers, run_workers
from .run import (
    ROLES, SearchResult, counts_as_done, linked_wanted, prune_front, remeasure_front, run_linked, run_search,
    write_outputs,
)
from .slots import (
    SlotState, admission, died, is_search_trial, paused, recover_trials, repeat_key, repeat_taken, slot_state,
    trial_key,
)
from .rungs import (
    RungResult, TimeBudgetPaused, climb, dominating, paused_by_time, rung_records, rung_results, rung_train_config,
)
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
    # multi-fidelity rungs
    "RungResult",
    "TimeBudgetPaused",
    "climb",
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
    "died",
    "paused",
    "is_search_trial",
    "launch_workers",
    "pid_alive",
    "recover_trials",
    "repeat_key",
    "repeat_taken",
    "slot_state",
    "SlotState",
    "trial_key",
    "visible_gpus",
    "worker_argv",
    "worker_env",
    "worker_seed",
    "WorkerId",
    "WorkerPlan",
    "WorkersResult",
    "check_workers",
    "hide_url",
    "plan_workers",
    "run_workers",
]
