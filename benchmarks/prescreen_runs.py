"""What main-job runs found: the pool, the trained nets, the time split and the hypervolume ratio.

    REPVGG_NAS_CACHE_DIR=/tmp/c ONEDNN_MAX_CPU_ISA=AVX2 python -m repvgg_nas.search --study a_family --reports-dir /tmp/r/ps0
    python -m repvgg_nas.search --study a_family --prescreen off --reports-dir /tmp/r/blind0
    python benchmarks/prescreen_runs.py /tmp/r/ps0 /tmp/r/blind0

For each reports folder (its ``a_family`` study, or ``--study``) it prints
markdown: the pre-screen (nets scored, pool size, latency-table seconds and
layers measured now), every trained net (role, how it ended, accuracy,
predicted / search / lockstep images/s), where the time went (references,
candidates, the latency table), and two hypervolume ratios of the searched
front over the references-only front, both with the report's reference
point (accuracy floor = lowest reference mean minus 2 SE, 0 images/s):

- ``report``: the last row of ``report_hypervolume.csv`` (search-time speeds);
- ``lockstep``: the final front and the references at the speeds measured
  together at the end of the run (``lockstep_measurement``), the figure a
  claim may use. Predicted speeds never enter either.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from repvgg_nas import attrs
from repvgg_nas.cli import format_table
from repvgg_nas.layout import StudyPaths
from repvgg_nas.measure import environment
from repvgg_nas.report import load_report_study
from repvgg_nas.stats import architecture_stats, hypervolume, hypervolume_reference
from repvgg_nas.study_frames import trials_frame


def _lockstep_ratio(trials: pd.DataFrame) -> tuple[float, int]:
    """Searched front over references-only front, both at their lockstep speeds (NaN without them)."""
    stats = architecture_stats(trials)
    point = hypervolume_reference(trials)[0]
    speed = stats["lockstep_throughput"].where(stats["lockstep_throughput"].notna(), stats["throughput"])
    pts = list(zip(stats["accuracy_mean"], speed))
    refs = [p for p, r in zip(pts, stats["reference"]) if isinstance(r, str) and r]
    front = [p for p, on in zip(pts, stats["on_front"]) if on]
    base = hypervolume(refs, point[:2]) if refs else float("nan")
    both = hypervolume(front + refs, point[:2])
    return (both / base if base else float("nan")), len(front)


def _trained(study) -> pd.DataFrame:  # noqa: ANN001 (optuna.Study)
    rows = []
    lock = (study.user_attrs.get(attrs.STUDY_LOCKSTEP) or {}).get("archs", {})
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        phases = ua.get(attrs.PHASE_SECONDS) or {}
        lk = lock.get(ua.get(attrs.SPEC_HASH)) or {}
        rows.append({
            "trial": t.number, "role": ua.get(attrs.ROLE), "outcome": ua.get(attrs.OUTCOME),
            "reference": ua.get(attrs.REFERENCE) or "", "accuracy": t.values[0] if t.values else None,
            "predicted img/s": ua.get(attrs.PREDICTED_IMAGES_PER_S), "search img/s": ua.get(attrs.IMAGES_PER_S),
            "lockstep img/s": lk.get("images_per_s"), "rung": ua.get(attrs.RUNG),
            "seconds": t.duration.total_seconds() if t.duration else None,
            "train s (this run)": phases.get("train"), "cached": bool(ua.get(attrs.REFERENCE_CACHED)),
            "arch": ua.get(attrs.ARCH),
        })
    return pd.DataFrame(rows)


def summarize(folder: Path, study_name: str) -> str:
    paths = StudyPaths.of(study_name, folder)
    study, _ = load_report_study(study_name, reports_dir=folder)
    trials = trials_frame(study)
    pool = study.user_attrs.get(attrs.STUDY_POOL) or {}
    made = pool.get("made") or {}
    nets = _trained(study)
    refs = nets[nets["role"] == "reference"]
    cands = nets[nets["role"] == "search"]
    hv = pd.read_csv(paths.figure_csv("hypervolume")) if paths.figure_csv("hypervolume").exists() else None
    ratio = float(hv["ratio"].iloc[-1]) if hv is not None and len(hv) else float("nan")
    lock_ratio, front = _lockstep_ratio(trials)
    out = [f"### {folder}", ""]
    if pool:
        out.append(f"- pre-screen: {made.get('scored', '?')} nets scored, pool {len(pool.get('members', []))} "
                   f"({made.get('front_size', '?')} non-dominated), latency table {made.get('table_seconds', 0):.0f} s "
                   f"({made.get('layers_measured', '?')} layers measured now), slowest reference predicted "
                   f"{made.get('reference_throughput', float('nan')):.0f} img/s")
    else:
        out.append("- pre-screen: off (blind)")
    out.append(f"- time: references {refs['seconds'].sum():.0f} s ({int(refs['cached'].sum())} of {len(refs)} "
               f"reused from the cache), candidates {cands['seconds'].sum():.0f} s over {len(cands)} trials "
               f"({int((cands['outcome'] == 'complete').sum())} complete)")
    out.append(f"- hypervolume ratio: report {ratio:.2f}, lockstep {lock_ratio:.2f} (front of {front})")
    rows = [{k: (f"{v:.3f}" if isinstance(v, float) and k == "accuracy" else f"{v:.1f}" if isinstance(v, float)
                 else v) for k, v in r.items() if k != "arch"} for r in nets.to_dict("records")]
    out += ["", "```", format_table(rows), "```", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="--reports-dir of each run")
    ap.add_argument("--study", default="a_family")
    args = ap.parse_args()
    env = environment("cpu")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"CPU: {env['cpu_model']}, torch capability {env['cpu_capability']}"
          + (f", oneDNN limited to {isa} (ONEDNN_MAX_CPU_ISA)" if isa else "") + "\n")
    for folder in args.folders:
        print(summarize(folder, args.study))


if __name__ == "__main__":
    main()
