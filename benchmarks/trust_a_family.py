"""How far the a_family front can be trusted: 3 seeds per front member and reference, and a 24-epoch
re-training of each, on the embedded proxy data.

Runs the built-in a_family study with ``[trust] seeds = 3, long_epochs = 24``
in its own reports folder (resumable: re-run the same command after an
interruption), then writes a markdown note: references and front with mean
+- std over the seeds, Kendall tau between proxy and 24-epoch accuracy over
front + references, and which references are dominated beyond the noise at
the proxy and at the long budget (including "none").

    python benchmarks/trust_a_family.py --out benchmarks/trust_cpu.md

``--note-only`` writes the note from the study as it stands, training nothing;
the note then names every architecture that still lacks a seed or its long
re-training. With ``--remeasure`` it first re-measures the front and the
references together (lockstep), as the end of a finished run does.

Time: 12 search trials with a_family's references and rungs, without its time budget
(about an hour on a 2-core AVX2 CPU), then 2 extra proxy trainings and one
4x-longer training per front member and reference (7 architectures in
trust_cpu.md: about 3 hours on that CPU), minutes on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from repvgg_nas.attrs import STUDY_LOCKSTEP
from repvgg_nas.measure import environment
from repvgg_nas.report import (
    architecture_stats, claim_text, claims_frame, fidelity, load_report_study, register_report, trials_frame,
)
from repvgg_nas.search import load_study_config, remeasure_front, run_search
from repvgg_nas.search import TrustConfig


def _cpu() -> str:
    """The project's device string for the CPU, with its instruction set."""
    env = environment("cpu")
    return f"{env['device_name']}, ISA {env['cpu_capability']}"


def _missing(shown, seeds: int) -> list[str]:
    """A line naming the architectures of the note that lack a seed or the long re-training, or none."""
    short = [f"trial {int(r['number'])} ({int(r['n'])} of {seeds} seeds"
             + ("" if pd.notna(r["long_accuracy"]) else ", no long re-training") + ")"
             for _, r in shown.iterrows() if r["n"] < seeds or pd.isna(r["long_accuracy"])]
    return [f"**Incomplete:** {'; '.join(short)}. Re-run the command to finish them.", ""] if short else []


def _speed_source(lockstep: dict | None) -> str:
    """Where the images/s column comes from: the lockstep re-measurement (when, load) or the search."""
    if not lockstep:
        return "images/s: median of each net's uncontended search measurements (no lockstep re-measurement yet)."
    load = "unknown" if lockstep.get("other_load") is None else f"{lockstep['other_load']:.2f}"
    flag = ", flagged contended" if lockstep.get("contended") else ""
    return (f"images/s: front and references re-measured together (lockstep) at {lockstep['at']} on "
            f"{lockstep.get('device')}, other load {load}{flag}; the speed ratios below use these figures.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--long-epochs", type=int, default=24)
    p.add_argument("--reports-dir", default="reports/bench_trust")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path)
    p.add_argument("--note-only", action="store_true",
                   help="write the note from the finished trials of the study as it stands, training nothing")
    p.add_argument("--remeasure", action="store_true",
                   help="with --note-only: re-measure the front and references in lockstep first")
    args = p.parse_args()
    if args.remeasure and not args.note_only:
        p.error("--remeasure goes with --note-only (a full run re-measures at its end anyway)")

    cfg = load_study_config("a_family")
    # Every search trial and every linked re-training, however long it takes: no time budget.
    cfg = cfg.replace(timeout=None, n_trials=12, trust=TrustConfig(seeds=args.seeds, long_epochs=args.long_epochs,
                                        claim_sigmas=cfg.trust.claim_sigmas))
    t0 = time.time()
    if args.note_only:
        study = load_report_study("a_family", reports_dir=args.reports_dir)[0]
        if args.remeasure:
            measure = dataclasses.replace(cfg.measure, device=args.device) if args.device else cfg.measure
            remeasure_front(study, measure.resolved())
        took = "no training in this call: the note of the study as it stands"
    else:
        register_report()  # the study's page, as the search CLI writes it
        study = run_search(cfg, reports_dir=args.reports_dir, device=args.device, progress=False).study
        took = f"{(time.time() - t0) / 60:.0f} min this run, resumed runs count only their own part"
    stats = architecture_stats(trials_frame(study))
    sigmas = cfg.trust.claim_sigmas
    fid = fidelity(stats)
    shown = stats[stats["on_front"] | stats["reference"].notna()].sort_values("throughput", ascending=False)
    lines = [
        f"# a_family: seed noise and proxy fidelity ({args.seeds} seeds, {args.long_epochs}-epoch re-training)",
        "",
        f"Machine: {_cpu()}; device {cfg.measure.resolved().device}. Command: "
        f"`python benchmarks/trust_a_family.py --out ...` ({took}).",
        "",
        *_missing(shown, args.seeds),
        _speed_source(study.user_attrs.get(STUDY_LOCKSTEP)),
        "",
        "| trial | reference | front | n | accuracy mean ± std | SE | images/s | 24-epoch accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in shown.iterrows():
        std = f" ± {r['accuracy_std']:.4f}" if pd.notna(r["accuracy_std"]) else ""
        ref = r["reference"] if isinstance(r["reference"], str) else ""
        speed = r["lockstep_throughput"] if pd.notna(r["lockstep_throughput"]) else r["throughput"]
        lines.append(
            f"| {int(r['number'])} | {ref} | {'*' if r['on_front'] else ''} | {int(r['n'])} | "
            f"{r['accuracy_mean']:.4f}{std} | {r['accuracy_se']:.4f} | {speed:.1f} | "
            f"{format(r['long_accuracy'], '.4f') if pd.notna(r['long_accuracy']) else ''} |")
    lines += ["", f"Kendall tau (proxy mean vs {args.long_epochs}-epoch accuracy, front + references): "
              f"{fid.tau:+.3f} (p = {fid.p_value:.2g}, n = {fid.n}).", ""]
    for budget in ("proxy", "long"):
        claims = claims_frame(stats, sigmas, budget, cfg.trust.equivalence_points / 100)
        beaten = claims[claims["verdict"] == "dominates"]
        lines.append(f"Dominated beyond the noise ({sigmas:g} combined SE and the speed spread) at the {budget} "
                     f"budget: " + (", ".join(f"{r.reference} by trial {r.front}" for r in beaten.itertuples())
                                   or "none") + ".")
        for _, r in claims.iterrows():
            lines.append(f"- trial {r['front']} vs {claim_text(r)}")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
