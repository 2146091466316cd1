"""Names of the attributes stored on Optuna trials and studies: one home for each key.

Trial user attrs are the study's record of everything a trial measured and
why it ended; the search writes them, the report, the CSV frames and the
worker accounting read them. Spell a key only through these constants.
"""

from __future__ import annotations

__all__ = [
    "ACCURACY", "ADMITTED", "ARCH", "ARCH_DIMENSIONS", "ARCH_PREFIX", "DEVICE", "DUPLICATE_OF", "FAIL_REASON",
    "FINAL_LOSS", "FUSION_ERROR", "LATENCY_MS", "MACS", "MEASURE_CACHED", "MEASURE_EXCLUSIVE",
    "PARAMS", "PARENT_TRIAL", "PHASE_SECONDS", "PRUNE", "PRUNE_REASON", "PRUNE_TARGET_MET", "PRUNED_RATIO", "REFERENCE",
    "RETRY_OF", "SPEC", "SPEC_HASH", "SPEEDUP", "THROUGHPUT_IQR", "TRAIN_IMAGES_PER_S",
    "TRAIN_SECONDS", "WORKER", "WORKER_START", "STUDY_SPACE", "STUDY_SPACE_HASH",
    "arch_key", "ROLE", "OUTCOME", "SCHEMA", "IMAGES_PER_S", "PEAK_MEMORY_MB", "PREDICTED_IMAGES_PER_S", "ZERO_COST",
    "PREDICTED_ACCURACY", "PREDICTED_ACCURACY_SD", "EXPECTED_GAIN", "POOL_CLAIM", "REFERENCE_CACHED",
    "FLOAT_ACCURACY", "RUNTIME", "PRECISION",
    "REPEAT_OF", "TRAIN_SEED", "TRAIN_EPOCHS", "VAL_SIZE", "THROUGHPUT_CV", "MEASURE_CONTENDED", "OTHER_LOAD",
    "STUDY_TRUST", "STUDY_LOCKSTEP", "STUDY_FIDELITY", "STUDY_PRESCREEN", "STUDY_POOL", "RUNGS", "RUNG", "RUNG_OUT_OF_TIME",
    "STUDY_NAME", "STUDY_DESCRIPTION", "STUDY_SEED", "STUDY_N_TRIALS", "STUDY_REFERENCES", "STUDY_DATA",
    "STUDY_TRAIN", "STUDY_MEASURE", "STUDY_OBJECTIVES", "STUDY_SAMPLER", "STUDY_PRUNE",
]

# ---- trial user attrs: what the trial is --------------------------------------------
ROLE = "role"  # lifecycle.Role, written when the trial is created
REFERENCE = "reference"  # zoo name of a paper reference config (enqueued first)
SPEC = "spec"  # RepVGGSpec.to_dict() of the sampled network
SPEC_HASH = "spec_hash"
ARCH = "arch"  # RepVGGSpec.summary(), for people
ARCH_PREFIX = "arch_"  # arch_a, arch_b, arch_groupwise, arch_g: the space's dimensions
ARCH_DIMENSIONS = ("a", "b", "groupwise", "g", "block")  # recorded as arch_<dim> on every trial
PARENT_TRIAL = "parent_trial"  # a pruned variant names the trial it was pruned from
PRUNED_RATIO = "pruned_ratio"
PRUNE = "prune"  # the [prune] settings a pruned variant was made with
PRUNE_TARGET_MET = "prune_target_met"  # False when its target speed-up could not be reached
SPEEDUP = "speedup"
# A linked re-training (an extra seed or a longer budget) of an architecture already in the study:
REPEAT_OF = "repeat_of"  # the trial whose architecture it re-trains
TRAIN_SEED = "train_seed"  # init and shuffle seed of an extra-seed repeat (absent: the study seed)
TRAIN_EPOCHS = "train_epochs"  # epochs of a long re-training (absent: the study's proxy budget)
# Multi-fidelity search ([fidelity]): a candidate's results at the rungs of the training budget.
RUNGS = "rungs"  # list of {rung, epochs, accuracy, float_accuracy, images_per_s, train_seconds, promoted,
#                  dominated_by[, out_of_time]}, lowest rung first (accuracy: the objective's, e.g. the INT8 net's)
RUNG = "rung"  # the highest rung the candidate finished (0-based; the top rung is the full budget)
RUNG_OUT_OF_TIME = "out_of_time"  # rung record key: promoted, but its next rung would end after the time budget

# ---- trial user attrs: what it measured ---------------------------------------------
ACCURACY = "accuracy"  # the accuracy objective: of the INT8 net under a quantized runtime
FLOAT_ACCURACY = "float_accuracy"  # the fp32 deploy net's, kept where ACCURACY is a quantized net's
RUNTIME = "runtime"  # measure.runtime the throughput (and a quantized accuracy) was taken in
PRECISION = "precision"  # fp32 / fp16 / bf16 / tf32 / int8: the arithmetic of that runtime
PARAMS = "params"
MACS = "macs"
LATENCY_MS = "latency_ms"
THROUGHPUT_IQR = "throughput_iqr"
THROUGHPUT_CV = "throughput_cv"  # robust CV of the timed repeats (IQR / 1.349 / median)
MEASURE_CONTENDED = "measure_contended"  # True: other processes held the device; the figure is suspect
OTHER_LOAD = "other_load"  # share of the machine other processes used while it was timed
VAL_SIZE = "val_size"  # validation images the accuracy was counted on (binomial error)
MEASURE_CACHED = "measure_cached"
MEASURE_EXCLUSIVE = "measure_exclusive"
DEVICE = "device"
FUSION_ERROR = "fusion_error"
TRAIN_SECONDS = "train_seconds"
TRAIN_IMAGES_PER_S = "train_images_per_s"
FINAL_LOSS = "final_loss"
PHASE_SECONDS = "phase_seconds"
PREDICTED_IMAGES_PER_S = "predicted_images_per_s"  # a pooled candidate's speed by the latency table (never a claim)
ZERO_COST = "zero_cost_proxy"  # a pooled candidate's zero-cost accuracy proxy (the pool's [prescreen] proxy)
# Why the pool sampler drew a candidate (never a claim): the accuracy model's posterior and the expected gain.
PREDICTED_ACCURACY = "predicted_accuracy"
PREDICTED_ACCURACY_SD = "predicted_accuracy_sd"
EXPECTED_GAIN = "expected_hypervolume_gain"
POOL_CLAIM = "pool_claim"  # the member a running trial's sampler drew, written under the claim lock
REFERENCE_CACHED = "reference_cached"  # a reference trained by an earlier study: the cache file it came from
IMAGES_PER_S = "images_per_s"  # the throughput objective (also the trial's second value)
PEAK_MEMORY_MB = "peak_memory_mb"  # peak activation memory of the deploy net (objective when [objectives] extra has it)

# ---- trial user attrs: how it ran and why it ended ----------------------------------
WORKER = "worker"
WORKER_START = "worker_start"
ADMITTED = "admitted"
RETRY_OF = "retry_of"  # a re-queued trial names the one whose worker died
DUPLICATE_OF = "duplicate_of"  # same architecture as an earlier completed trial
OUTCOME = "outcome"  # lifecycle.Outcome, written when the trial ends (before it is told): what code reads
FAIL_REASON = "fail_reason"  # for people only: nothing parses it, nothing groups by it
PRUNE_REASON = "prune_reason"  # for people only: nothing parses it, nothing groups by it

# ---- study user attrs: the study config as stored at creation (StudyConfig.to_dict()) --
STUDY_NAME = "name"
STUDY_DESCRIPTION = "description"
STUDY_SPACE = "space"
STUDY_SPACE_HASH = "space_hash"
STUDY_SEED = "seed"
STUDY_N_TRIALS = "n_trials"
STUDY_REFERENCES = "references"
STUDY_DATA = "data"  # DataConfig.to_dict()
STUDY_TRAIN = "train"  # TrainConfig.to_dict()
STUDY_MEASURE = "measure"  # MeasureSettings.to_dict()
STUDY_OBJECTIVES = "objectives"
STUDY_SAMPLER = "sampler"
STUDY_PRUNE = "prune"

# ---- study user attrs written after creation -----------------------------------------
STUDY_TRUST = "trust"  # the [trust] table of the latest run
STUDY_LOCKSTEP = "lockstep_measurement"  # front + references re-measured together: when, load, figures
SCHEMA = "schema_version"  # study attr: lifecycle.SCHEMA_VERSION the study was written under (not config)
STUDY_PRESCREEN = "prescreen"  # the [prescreen] table (PrescreenConfig.to_dict())
STUDY_POOL = "pool"  # the pre-screened pool candidates are drawn from (Pool.to_dict()); absent: blind search
STUDY_FIDELITY = "fidelity"  # the [fidelity] table (rung budgets, reduction factor, mode); absent: one budget


def arch_key(dimension: str) -> str:
    """The trial attr holding a search-space dimension's value (``arch_a``, ...)."""
    return f"{ARCH_PREFIX}{dimension}"

