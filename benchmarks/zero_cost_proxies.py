"""Which zero-cost proxy ranks trained RepVGG nets best? Kendall tau of every registered proxy against
accuracies the project has measured, and the cost of scoring a whole space.

Three sets of nets, each with the figure it is ranked against:

- ``trust``: RepVGG-A0, A1 and the a_family nets of ``benchmarks/trust_cpu.md`` against their 3-seed mean
  proxy accuracy. That note names its nets by trial number only; their architectures are those of
  ``benchmarks/multifidelity_cpu.md``'s table of the same draws (trial k is row k - 2: the search
  figures 0.754 / 0.732 / 0.726 of trials 2 / 5 / 7 are that table's full-budget accuracies). Trial 10
  is NSGA-II's own offspring and in no table: left out;
- ``paper``: the nine Table-4 configs of ``benchmarks/proxy_vs_paper_cpu.md`` against ImageNet top-1;
- ``random8``: the 8 random a_family nets of ``benchmarks/multifidelity_cpu.md`` (rung_fidelity.py,
  one seed) against their full 6-epoch proxy accuracy.

Every proxy scores the nets as the pre-screen would: the study's data (a_family: embedded synthetic, 10
classes, 32 px), its classes in the head, seeded. Runs in a few minutes on a 2-core CPU:

    python benchmarks/zero_cost_proxies.py --out benchmarks/zero_cost_proxies_cpu.md
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from repvgg_nas import zoo
from repvgg_nas.counting import complexity
from repvgg_nas.data import load_data
from repvgg_nas.measure import environment
from repvgg_nas.study import load_study_config
from repvgg_nas.prescreen import PROXIES, ProxyInputs, macs_stand_in, prescreen
from repvgg_nas.spec import RepVGGSpec, paper_widths

HERE = Path(__file__).resolve().parent

# benchmarks/trust_cpu.md: 3-seed mean proxy accuracy; architecture from multifidelity_cpu.md's table.
TRUST = [
    ("A0", "A0", 0.6980),  # trial 0
    ("A1", "A1", 0.7302),  # trial 1
    ("trial 2", "1-2-5-12-1, 64-96-192-384-768", 0.7442),
    ("trial 5", "1-2-6-6-1, 64-64-128-256-1408, g2", 0.7217),
    ("trial 7", "1-1-4-6-1, 48-48-96-192-768", 0.7147),
    ("trial 9", "1-3-5-12-1, 32-32-64-128-1024, g4", 0.6615),
]

# benchmarks/multifidelity_cpu.md, "Which rung mode ranks better": full 6-epoch accuracy, one seed.
RANDOM8 = [
    ("#0", "1-2-5-12-1, 64-96-192-384-768", 0.754),
    ("#1", "1-3-5-16-1, 32-32-64-128-1280, g4", 0.655),
    ("#2", "1-1-5-12-1, 48-48-96-192-768, g4", 0.698),
    ("#3", "1-2-6-6-1, 64-64-128-256-1408, g2", 0.732),
    ("#4", "1-3-2-16-1, 48-48-96-192-1536", 0.713),
    ("#5", "1-1-4-6-1, 48-48-96-192-768", 0.726),
    ("#6", "1-3-6-8-1, 64-96-192-384-1024, g4", 0.694),
    ("#7", "1-3-5-12-1, 32-32-64-128-1024, g4", 0.656),
]


def _cpu() -> str:
    env = environment("cpu")
    return f"{env['device_name']}, ISA {env['cpu_capability']}, torch {env['torch']}, {env['threads']} threads"


def _arch_spec(space, arch: str, num_classes: int) -> RepVGGSpec:
    """The a_family spec of a note's arch string (``depths, stage widths[, gN]``); a/b found from the widths."""
    m = re.fullmatch(r"([\d-]+), ([\d-]+)(?:, g(\d))?", arch)
    if not m:
        raise ValueError(f"cannot read arch {arch!r}")
    depths = [int(d) for d in m.group(1).split("-")]
    widths = tuple(int(w) for w in m.group(2).split("-"))
    g = int(m.group(3) or 1)
    for a in space.a.values():
        for b in space.b.values():
            if paper_widths(a, b) == widths:
                values = {d.name: v for d, v in zip(space.depths, depths)}
                values.update(a=a, b=b, groupwise="paper" if g > 1 else "none", g=g if g > 1 else 2)
                spec = space.build(values, num_classes)
                assert spec.depths == tuple(depths)
                return spec
    raise ValueError(f"no a, b of space {space.name} give widths {widths}")


def _arch(spec: RepVGGSpec) -> str:
    """``depths, stage widths[, gN]``, as the notes write a net."""
    starts = np.cumsum((0, *spec.depths[:-1]))
    g = max(spec.groups)
    return (f"{'-'.join(map(str, spec.depths))}, {'-'.join(str(spec.widths[i]) for i in starts)}"
            + (f", g{g}" if g > 1 else ""))


def _sets(space, num_classes: int) -> dict[str, list[tuple[str, RepVGGSpec, float]]]:
    def named(name: str) -> RepVGGSpec:
        return zoo.get(name, num_classes=num_classes)

    trust = [(n, named(a) if a in ("A0", "A1") else _arch_spec(space, a, num_classes), acc) for n, a, acc in TRUST]
    rows = [json.loads(line) for line in (HERE / "proxy_vs_paper_cpu.jsonl").read_text().splitlines() if line.strip()]
    paper = [(r["name"], named(r["name"]), float(r["top1"])) for r in rows]
    random8 = [(n, _arch_spec(space, a, num_classes), acc) for n, a, acc in RANDOM8]
    return {"trust": trust, "paper": paper, "random8": random8}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="a_family")
    p.add_argument("--seeds", type=int, default=2, help="init seeds of the data-based proxies (scores averaged)")
    p.add_argument("--batch", type=int, default=64, help="NASWOT mini-batch")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    cfg = load_study_config(args.study)
    space = cfg.space
    data = load_data(cfg.data)
    sets = _sets(space, data.num_classes)
    images = data.sample_images(args.batch, seed=0)

    scores: dict[tuple[str, str, str], float] = {}
    seconds: dict[str, list[float]] = {name: [] for name in PROXIES}
    for set_name, nets in sets.items():
        for net, spec, _ in nets:
            for name in PROXIES:
                proxy = PROXIES.get(name)
                seeds = [0] if name in ("params", "macs") else range(args.seeds)  # counts need no init
                vals = []
                for s in seeds:
                    t = time.perf_counter()
                    vals.append(proxy(spec, ProxyInputs(data.resolution, images, s)))
                    seconds[name].append(time.perf_counter() - t)
                scores[set_name, net, name] = float(np.mean(vals))

    lines = [
        "# Zero-cost proxies against trained accuracy (Kendall tau)",
        "",
        f"Machine: {_cpu()}. Command: `python benchmarks/zero_cost_proxies.py --out ...` "
        f"(study {args.study}: data {data.name}, {data.num_classes} classes, {data.resolution} px; "
        f"{args.seeds} init seeds for synflow/naswot, NASWOT batch {args.batch}).",
        "",
        "Sets: `trust`: A0, A1 and trials 2, 5, 7, 9 of `trust_cpu.md`, which names its nets by trial number "
        "only; their architectures are `multifidelity_cpu.md`'s table of the same seeded draws (trial k = row k - 2: "
        "trials 2 / 5 / 7's search figures 0.754 / 0.732 / 0.726 are that table's full-budget accuracies, and the "
        "images/s roughly agree across the two machines: 13.2 / 10.3, 43.6 / 41.2, 80.5 / 81.6, 124.7 / 157.9); "
        "trial 10, an NSGA-II offspring in no table, is left out. `paper`: the nine configs and "
        "Table-4 top-1 of `proxy_vs_paper_cpu.jsonl`. `random8`: `multifidelity_cpu.md`'s 8 random a_family nets, "
        "full 6-epoch accuracy, one seed. Every net is scored with the study's head (its classes) at its data "
        "resolution, as the pre-screen scores a space.",
        "",
        "Proxies: " + "; ".join(f"`{n}`: {PROXIES.get(n).description}" for n in PROXIES) + ".",
        "",
        "| set | n | against | " + " | ".join(PROXIES.list()) + " |",
        "|---|---|---|" + "---|" * len(PROXIES),
    ]
    against = {"trust": "3-seed mean proxy accuracy (trust_cpu.md)", "paper": "ImageNet top-1 (Table 4)",
               "random8": "6-epoch proxy accuracy, 1 seed"}
    taus: dict[tuple[str, str], float] = {}
    for set_name, nets in sets.items():
        target = [acc for _, _, acc in nets]
        cells = []
        for name in PROXIES:
            res = kendalltau([scores[set_name, n, name] for n, _, _ in nets], target)
            taus[set_name, name] = float(res.statistic)
            cells.append(f"{res.statistic:+.2f} (p {res.pvalue:.2g})")
        lines.append(f"| {set_name} | {len(nets)} | {against[set_name]} | " + " | ".join(cells) + " |")
    lines += ["", "Mean tau over the three sets: " + ", ".join(
        f"{n} {np.mean([taus[s, n] for s in sets]):+.2f}" for n in PROXIES) + ".", ""]
    lines += ["Seconds per net and proxy call on this CPU (median, max): " + ", ".join(
        f"{n} {np.median(v) * 1e3:.3g} ms / {max(v) * 1e3:.3g} ms" for n, v in seconds.items()) + ".", ""]

    for set_name, nets in sets.items():
        lines += [f"## {set_name}", "", "| net | spec | figure | " + " | ".join(PROXIES.list()) + " |",
                  "|---|---|---|" + "---|" * len(PROXIES)]
        for net, spec, acc in nets:
            vals = [scores[set_name, net, n] for n in PROXIES]
            fmt = [f"{v / 1e6:.2f} M" if n in ("params", "macs") else f"{v:.2f}" for n, v in zip(PROXIES, vals)]
            lines.append(f"| {net} | {_arch(spec)} | {acc:g} | " + " | ".join(fmt) + " |")
        lines.append("")

    # The cost of scoring a whole space: counting by building nets (complexity) vs the analytic counts.
    rng = random.Random(1)
    sample = [space.build(space.sample_values(rng), 7) for _ in range(30)]  # a head size not cached yet
    complexity(sample[0], 224)  # the first call pays torch's one-off set-up
    t = time.perf_counter()
    for s in sample[1:]:
        complexity(s, 224)
    per_complexity = (time.perf_counter() - t) / (len(sample) - 1)
    predict = macs_stand_in(224)
    ref = predict(zoo.get("A1", num_classes=data.num_classes))
    res = prescreen(space, predict_throughput=predict, reference_throughput=ref, num_classes=data.num_classes)
    lines += [
        "## Cost of the pre-screen",
        "",
        f"- `counting.complexity` (a net built on the meta device, FlopCounterMode): {per_complexity * 1e3:.0f} ms "
        f"per spec, so {per_complexity * res.scored / 60:.1f} min for the {res.scored} distinct nets of {space.name}; "
        "the analytic counts (`deploy_params`, `deploy_macs`, equal to it: tests/test_prescreen.py) take microseconds.",
        f"- `prescreen({space.name}, proxy='params', predict_throughput=macs_stand_in(224), reference = A1)`: "
        f"{res.scored} nets scored (all of the space's {space.size()} assignments, deduplicated), "
        f"{res.faster_than_reference} predicted faster than A1, front {res.front_size}, pool {len(res.pool)}, "
        f"{res.seconds:.2f} s (enumerating and building the specs included).",
        "",
    ]
    text = "\n".join(lines)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
