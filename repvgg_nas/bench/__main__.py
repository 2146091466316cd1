"""``python -m repvgg_nas.bench``: train-form vs deploy-form vs ResNet throughput.

The thin CLI around :func:`repvgg_nas.measure.run_benchmark` and
:func:`repvgg_nas.measure.repeatability`: parse, measure, print a table on
stdout with progress on stderr, and write the rows as CSV to
``reports/bench/bench.csv`` unless ``--out`` says otherwise.
``--runtime torch,onnxruntime,onnxruntime-int8`` measures every net in each
runtime in one lockstep run and prints the ratios to the first.

``--latency-table --space NAME`` instead builds (or shows, when complete) the
per-layer latency table of a search space under the same settings
(:func:`repvgg_nas.measure.build_latency_table`), in the user's cache folder
or in ``--latency-table-file FILE``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import zoo
from ..cli import ArgumentParser, check_output_file, format_table, run_cli
from ..errors import ConfigError
from ..layout import DEFAULT_REPORTS_DIR
from ..measure import (
    BASELINES,
    RUNTIMES,
    LatencyProgress,
    LatencyTable,
    MeasureSettings,
    build_latency_table,
    repeatability,
    run_benchmark,
    write_csv,
)
from ..spec import RepVGGSpec

__all__ = ["DEFAULT_OUT", "parse_names", "table_rows", "main"]

DEFAULT_OUT = Path(DEFAULT_REPORTS_DIR) / "bench" / "bench.csv"


def parse_names(text: str | Iterable[str] | None) -> list[str]:
    """``"A0, B0"`` -> ``["A0", "B0"]``; ``none`` or empty gives no names."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in items if n.strip()]
    return [] if [n.lower() for n in names] == ["none"] else names


def table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The printed subset of :func:`run_benchmark` rows, rounded for reading."""

    def rnd(v: Any, n: int) -> Any:
        return round(v, n) if isinstance(v, float) else v

    several = len({r.get("runtime", "torch") for r in rows}) > 1 or any(
        r.get("runtime", "torch") != "torch" for r in rows)
    out = []
    for r in rows:
        t = {
            "model": r["model"],
            "form": r["form"],
            **({"runtime": r.get("runtime")} if several else {}),
            "img/s": rnd(r["img_s"], 1),
            "ms/batch": rnd(r["latency_ms"], 2),
            "params M": rnd(r["params_m"], 2),
            "GMACs": rnd(r["gmacs"], 2),
            "TFLOP/s": rnd(r["tflops"], 3),
            "cv %": rnd(100 * r["cv"], 1),
            "deploy/train": rnd(r["deploy_vs_train"], 2),
        }
        for k in r:
            if k.startswith("vs_"):
                t[k.replace("_", " ", 1)] = rnd(r[k], 2)
        if r.get("pct_fp16_peak") is not None:
            t["% fp16 peak"] = rnd(100 * r["pct_fp16_peak"], 1)
        out.append(t)
    return out


# ---- CLI -------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    d = MeasureSettings()
    p = ArgumentParser(
        prog="python -m repvgg_nas.bench",
        description=(
            "Measure throughput of RepVGG train form, deploy form and ResNet baselines "
            "under one set of settings and print the ratios."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="A0", help="comma-separated zoo names (A0 or RepVGG-A0)")
    p.add_argument("--baselines", default="resnet18,resnet34,resnet50",
                   help=f"comma-separated baselines from {', '.join(BASELINES)}; 'none' for none")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--resolution", type=int, default=d.resolution, help="input height = width")
    p.add_argument("--dtype", default=d.dtype, help="fp32, tf32, fp16, bf16 (only fp32 on cpu)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                   help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="wrap models in torch.compile")
    p.add_argument("--compile-mode", default=d.compile_mode, help="torch.compile mode")
    p.add_argument("--cuda-graphs", action="store_true", help="time CUDA graph replays (cuda only)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's current count, recorded)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed forward passes")
    p.add_argument("--repeats", type=int, default=d.min_repeats, help="minimum timed repeats")
    p.add_argument("--max-repeats", type=int, default=d.max_repeats)
    p.add_argument("--target-cv", type=float, default=d.target_cv,
                   help="stop repeating once the robust CV is below this")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="time budget of one measurement's timed loop")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every model this many times, interleaved; report medians")
    p.add_argument("--repeatability", type=int, default=0, metavar="N",
                   help="also measure each model's deploy form N times and report the CV")
    p.add_argument("--runtime", default=d.runtime,
                   help=f"comma-separated runtimes from {', '.join(RUNTIMES)}: every net is measured in "
                   "each, in one lockstep run, with its ratio to the first")
    p.add_argument("--num-classes", type=int, default=1000)
    t = p.add_argument_group(
        "per-layer latency table",
        "--latency-table builds (or shows, when complete) the table of every distinct deploy layer "
        "of --space under the settings above (device, batch size, resolution, threads, runtime, ...), "
        "measuring only the layers it lacks, and predicts the --models from it; no benchmark runs. "
        "The table lives in the user's cache folder unless --latency-table-file names the file.",
    )
    t.add_argument("--latency-table", action="store_true",
                   help="build or show the per-layer latency table of --space")
    t.add_argument("--latency-table-file", type=Path, default=None, metavar="FILE",
                   help="the table file to extend or show (implies --latency-table); a table measured "
                   "under other settings is refused")
    t.add_argument("--remeasure", action="store_true",
                   help="measure every layer of the table again (when its predictions disagree with the "
                   "whole-net speeds a search measures)")
    t.add_argument("--space", default=None, metavar="NAME|PATH",
                   help="search space (search_spaces/NAME.toml or a TOML path) of --latency-table")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense fp16 peak, for the '%% fp16 peak' column (default: known "
                   "for H100/H200/A100 from the device name)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each measurement wait up to this long for other processes to leave the CPU")
    p.add_argument("--idle-threshold", type=float, default=0.15,
                   help="machine CPU busy fraction counted as idle for --wait-idle")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="CSV path (repeatability goes to <stem>_repeatability.csv)")
    p.add_argument("--no-csv", action="store_true", help="print only, write no CSV")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runtimes = parse_names(args.runtime)
    if not runtimes:
        raise ConfigError(f"--runtime {args.runtime!r} names no runtime; allowed: {', '.join(RUNTIMES.list())}")
    settings = MeasureSettings(
        device=args.device, batch_size=args.batch_size, resolution=args.resolution,
        dtype=args.dtype, channels_last=args.channels_last, compile=args.compile,
        compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs, threads=args.threads,
        warmup=args.warmup, min_repeats=args.repeats,
        max_repeats=max(args.max_repeats, args.repeats), target_cv=args.target_cv,
        max_seconds=args.max_seconds, runtime=runtimes[0],
    ).resolved()
    runtimes = [replace(settings, runtime=r).runtime for r in runtimes]  # every name checked up front
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes = {args.num_classes} is invalid; allowed: an integer >= 1")
    models, baselines = parse_names(args.models), parse_names(args.baselines)
    for name in models:
        zoo.get_entry(name)  # fail on a typo before anything is measured
    for name in baselines:
        BASELINES.canonical(name)
    if args.remeasure and not (args.latency_table or args.latency_table_file is not None):
        raise ConfigError("--remeasure goes with --latency-table (it measures a table's layers again)")
    if args.latency_table or args.latency_table_file is not None:
        return _latency_tables(args, settings, runtimes, models)
    if not args.no_csv:
        check_output_file(args.out, "--out")

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    rows = run_benchmark(
        models, baselines, settings, num_classes=args.num_classes, rounds=args.rounds,
        wait_idle_s=args.wait_idle, idle_threshold=args.idle_threshold, progress=progress,
        peak_tflops=args.peak_tflops, runtimes=runtimes,
    )
    env = f"{rows[0]['device_name']} | torch {rows[0]['torch']} | threads {rows[0]['threads']}"
    if len(runtimes) > 1 or runtimes != ["torch"]:
        env += f" | runtimes {', '.join(runtimes)}"
    print(f"# {env} | {settings.dtype} batch {settings.batch_size} {settings.resolution}x"
          f"{settings.resolution} channels_last={settings.channels_last} compile={settings.compile}")
    print(format_table(table_rows(rows)))

    rep_rows = []
    if args.repeatability:
        for name in models:
            rep = repeatability(name, settings, args.repeatability, num_classes=args.num_classes,
                                wait_idle_s=args.wait_idle, idle_threshold=args.idle_threshold,
                                progress=progress)
            rep_rows.append(rep)
            runs = ", ".join(f"{v:.1f}" for v in rep["img_s"])
            print(f"repeatability {rep['model']} {rep['form']}: {rep['n']} runs [{runs}] img/s, "
                  f"mean {rep['mean_img_s']:.1f}, CV {rep['cv']:.2%}")
    if not args.no_csv:
        path = write_csv(rows, args.out)
        print(f"wrote {path}", file=sys.stderr)
        if rep_rows:
            flat = [
                {**{k: v for k, v in r.items() if k not in ("img_s", "within_cv", "settings")},
                 **{f"run{i + 1}_img_s": v for i, v in enumerate(r["img_s"])}}
                for r in rep_rows
            ]
            rpath = write_csv(flat, args.out.with_name(f"{args.out.stem}_repeatability.csv"))
            print(f"wrote {rpath}", file=sys.stderr)
    return 0


# ---- the per-layer latency table ---------------------------------------------------
def _latency_tables(
    args: argparse.Namespace, settings: MeasureSettings, runtimes: list[str], models: list[str]
) -> int:
    """Build (or show) the table of ``--space`` in each runtime; print its entries and predictions."""
    from ..study import load_space  # only this mode needs a search space

    if args.space is None:
        raise ConfigError("--latency-table needs --space NAME (a search space, e.g. --space a_family)")
    if args.latency_table_file is not None:
        if len(runtimes) > 1:
            raise ConfigError("--latency-table-file holds one runtime's table; give one --runtime with it")
        check_output_file(args.latency_table_file, "--latency-table-file")
    space = load_space(args.space)
    specs = {zoo.get_entry(n).name: zoo.get_entry(n).spec(num_classes=args.num_classes) for n in models}
    for runtime in runtimes:
        s = replace(settings, runtime=runtime)
        bar = _LayerBar(f"latency table {runtime}", enabled=not args.quiet)
        with bar:
            table = build_latency_table(space, s, args.latency_table_file, bar,
                                        num_classes=args.num_classes, remeasure=args.remeasure)
        _print_table(table, space.name, bar.measured, specs)
    return 0


class _LayerBar:
    """A tqdm bar of measured layers, fed by :func:`build_latency_table`'s progress callback."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self.measured = 0
        self._bar: Any = None

    def __call__(self, p: LatencyProgress) -> None:
        self.measured = p.done
        if not self.enabled or p.total == 0:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=p.total, desc=self.desc, unit="layer", dynamic_ncols=True, leave=False)
        self._bar.update(p.done - self._bar.n)
        if p.measured:
            self._bar.set_postfix_str(p.measured[-1], refresh=False)

    def __enter__(self) -> _LayerBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _print_table(table: LatencyTable, space: str, measured: int, specs: dict[str, RepVGGSpec]) -> None:
    k = table.key
    print(f"# latency table {table.path}")
    print(f"# space {space} | {k.device_name} | {k.runtime} {k.precision} | batch {k.batch_size} "
          f"{k.resolution}x{k.resolution} | threads {k.threads} | torch {k.torch}"
          + (f" | onnxruntime {k.onnxruntime}" if k.onnxruntime else ""))
    contended = sum(e.contended for e in table.entries.values())
    state = f"measured {measured} layer(s) now" if measured else "complete: nothing to measure"
    print(f"# {len(table.entries)} layers ({state}; {table.build_s:.1f} s of measuring in all"
          + (f"; {contended} contended, remeasured by the next build" if contended else "") + ")")
    rows = [
        {"layer": e.layer.id, "ms/batch": round(e.latency_ms, 4), "cv %": round(100 * e.robust_cv, 1),
         "repeats": e.repeats}
        for e in sorted(table.entries.values(), key=lambda e: (-e.layer.size, e.layer.id))
    ]
    print(format_table(rows))
    for name, spec in specs.items():
        if table.missing(spec):
            print(f"{name}: not predicted, it has layers outside space {space}'s table")
            continue
        print(f"predicted {name}: {table.predict(spec) * 1000:.2f} ms/batch, "
              f"{table.predict_throughput(spec):.1f} img/s (the sum of its {len(table.layers(spec))} layers)")


if __name__ == "__main__":
    sys.exit(run_cli(main))
