"""The bench library functions and ``python -m repvgg_nas.bench`` (CPU, small inputs)."""

from __future__ import annotations

import csv

import pytest

from repvgg_nas import ConfigError, UnknownNameError
from repvgg_nas.bench.__main__ import main, parse_names, table_rows
from repvgg_nas.cli import run_cli
from repvgg_nas.measure import (
    BASELINES,
    MeasureSettings,
    baseline_complexity,
    dense_fp16_peak,
    repeatability,
    run_benchmark,
)

TINY = MeasureSettings(
    device="cpu", batch_size=2, resolution=32, threads=1, warmup=1,
    min_repeats=2, max_repeats=2, min_repeat_s=0.0, max_seconds=1.0,
)
CLI_TINY = [
    "--device", "cpu", "--resolution", "32", "--batch-size", "2", "--threads", "1",
    "--num-classes", "10", "--warmup", "1", "--repeats", "2", "--max-repeats", "2",
]


def test_parse_names():
    assert parse_names(" A0, B0 ,") == ["A0", "B0"]
    assert parse_names("none") == [] and parse_names("") == [] and parse_names(None) == []
    assert parse_names(["A0"]) == ["A0"]


def test_baseline_complexity_matches_torchvision_figures():
    params, macs = baseline_complexity("resnet18", 224)
    assert params == pytest.approx(11.69e6, rel=0.01)
    assert macs / 1e9 == pytest.approx(1.82, rel=0.02)  # the well-known 1.8 GMACs
    assert list(BASELINES) == ["resnet18", "resnet34", "resnet50", "resnet101"]


@pytest.fixture(scope="module")
def rows():
    lines: list[str] = []
    out = run_benchmark(["A0"], ["resnet18"], TINY, num_classes=10, progress=lines.append)
    assert any("RepVGG-A0 deploy" in line and "img/s" in line for line in lines)
    return out


def test_run_benchmark_rows_and_ratios(rows):
    assert [(r["model"], r["form"]) for r in rows] == [
        ("RepVGG-A0", "train"), ("RepVGG-A0", "deploy"), ("resnet18", "baseline"),
    ]
    by = {r["form"]: r for r in rows}
    for r in rows:
        assert r["img_s"] > 0 and r["latency_ms"] > 0 and r["params_m"] > 0 and r["gmacs"] > 0
        assert r["device"] == "cpu" and r["threads"] == 1 and r["resolution"] == 32
    assert by["deploy"]["deploy_vs_train"] == pytest.approx(by["deploy"]["img_s"] / by["train"]["img_s"])
    assert by["train"]["deploy_vs_train"] is None
    assert by["baseline"]["vs_resnet18"] == pytest.approx(1.0)
    assert by["deploy"]["vs_resnet18"] == pytest.approx(by["deploy"]["img_s"] / by["baseline"]["img_s"])
    # Fusion keeps the deploy net smaller than the train form it came from.
    assert by["deploy"]["params_m"] < by["train"]["params_m"]
    for r in rows:  # achieved TFLOP/s: 2 FLOPs per MAC at the measured rate; no known peak on cpu
        assert r["tflops"] == pytest.approx(2 * r["gmacs"] * r["img_s"] / 1000)
        assert r["pct_fp16_peak"] is None
    table = table_rows(rows)
    assert {"img/s", "ms/batch", "params M", "GMACs", "TFLOP/s", "deploy/train", "vs resnet18"} <= set(table[0])


def test_share_of_a_given_or_known_fp16_peak():
    rows = run_benchmark(["A0"], [], TINY, num_classes=10, peak_tflops=0.5)
    assert all(r["pct_fp16_peak"] == pytest.approx(r["tflops"] / 0.5) for r in rows)
    assert "% fp16 peak" in table_rows(rows)[0]
    assert dense_fp16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert dense_fp16_peak("NVIDIA H100 PCIe") == 756.0
    assert dense_fp16_peak("NVIDIA H200") == 989.0
    assert dense_fp16_peak("AMD EPYC") is None and dense_fp16_peak(None) is None


def test_run_benchmark_rejects_bad_names_before_measuring():
    with pytest.raises(UnknownNameError, match="did you mean"):
        run_benchmark(["A9"], [], TINY)
    with pytest.raises(UnknownNameError, match="resnet18"):
        run_benchmark([], ["resnet19"], TINY)
    with pytest.raises(ConfigError, match="nothing to measure"):
        run_benchmark([], [], TINY)


def test_repeatability_reports_cv():
    rep = repeatability("A0", TINY, 2, num_classes=10)
    assert rep["n"] == 2 and len(rep["img_s"]) == 2 and rep["cv"] >= 0
    with pytest.raises(ConfigError, match="n >= 2"):
        repeatability("A0", TINY, 1)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--models", "Z9"], ["unknown zoo model", "Z9"]),
        (["--baselines", "vgg16"], ["unknown baseline", "vgg16"]),
        (["--batch-size", "0"], ["batch_size", "0"]),
        (["--device", "tpu"], ["measure.device", "tpu"]),
        (["--device", "cpu", "--dtype", "fp16"], ["fp16", "CUDA"]),
        (["--bogus"], ["unrecognized arguments", "--bogus"]),
        (["--peak-tflops", "-3"], ["peak TFLOP/s", "-3"]),
        (["--peak-tflops", "inf"], ["peak TFLOP/s", "inf"]),
        (["--batch-size", "many"], ["--batch-size", "many"]),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path):
    rc = run_cli(main, [*argv, "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err
    for w in words:
        assert w in err
    assert not (tmp_path / "x.csv").exists()


def test_cli_tiny_run_writes_csv(capsys, tmp_path):
    out = tmp_path / "bench" / "tiny.csv"
    rc = run_cli(main, [*CLI_TINY, "--models", "A0", "--baselines", "resnet18",
                        "--repeatability", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0
    assert "RepVGG-A0" in captured.out and "deploy/train" in captured.out
    assert "repeatability RepVGG-A0 deploy" in captured.out
    assert "[round 1/1]" in captured.err  # progress goes to stderr
    with out.open() as f:
        data = list(csv.DictReader(f))
    assert [(r["model"], r["form"]) for r in data] == [
        ("RepVGG-A0", "train"), ("RepVGG-A0", "deploy"), ("resnet18", "baseline"),
    ]
    expected = {"model", "form", "img_s", "latency_ms", "params_m", "gmacs", "cv",
                "deploy_vs_train", "vs_resnet18", "device_name", "torch", "threads", "dtype",
                "batch_size", "resolution", "channels_last"}
    assert expected <= set(data[0])
    assert float(data[1]["img_s"]) > 0 and float(data[1]["deploy_vs_train"]) > 0
    rep = out.with_name("tiny_repeatability.csv")
    with rep.open() as f:
        rep_rows = list(csv.DictReader(f))
    assert rep_rows[0]["model"] == "RepVGG-A0" and float(rep_rows[0]["cv"]) >= 0
    assert {"run1_img_s", "run2_img_s"} <= set(rep_rows[0])


def test_cli_help_mentions_every_issue_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--models", "--device", "--batch-size", "--resolution", "--dtype",
                "--channels-last", "--compile", "--baselines", "--repeatability", "--out"):
        assert opt in text


def test_wait_for_idle_waits_for_neighbours_then_gives_up(monkeypatch):
    from repvgg_nas.measure import bench as bench_mod

    seen = iter([0.9, 0.8, 0.05, 0.9])
    monkeypatch.setattr(bench_mod, "cpu_busy_fraction", lambda interval: next(seen))
    notes: list[str] = []
    assert bench_mod.wait_for_idle(0.1, 60, notes.append) == 0.05
    assert notes and "waiting" in notes[0]
    # A zero timeout measures at once, whatever the load.
    monkeypatch.setattr(bench_mod, "cpu_busy_fraction", lambda interval: 0.9)
    assert bench_mod.wait_for_idle(0.1, 0) == 0.9


def test_repeatability_retries_contended_runs(monkeypatch):
    import dataclasses

    from repvgg_nas.measure import bench as bench_mod

    real = bench_mod.measure_model
    flags = iter([True, False, False])  # first attempt shared with a neighbour

    def fake(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), contended=next(flags))

    monkeypatch.setattr(bench_mod, "measure_model", fake)
    rep = repeatability("A0", TINY, 2, num_classes=10)
    assert rep["contended_retries"] == 1 and not rep["contended"] and len(rep["img_s"]) == 2


def test_several_runtimes_in_one_lockstep_run(monkeypatch):
    from repvgg_nas.measure import bench as bench_mod

    calls = []
    real = bench_mod.measure_models

    def counting(nets, settings, **kw):
        calls.append(dict(kw.get("runtimes") or {}))
        return real(nets, settings, **kw)

    monkeypatch.setattr(bench_mod, "measure_models", counting)
    rows = run_benchmark(["A0"], [], TINY, num_classes=10, runtimes=["torch", "onnxruntime"])
    assert len(calls) == 1 and sorted(set(calls[0].values())) == ["onnxruntime", "torch"]
    assert [(r["form"], r["runtime"]) for r in rows] == [
        ("train", "torch"), ("deploy", "torch"), ("train", "onnxruntime"), ("deploy", "onnxruntime"),
    ]
    by = {(r["form"], r["runtime"]): r for r in rows}
    assert by[("deploy", "torch")]["vs_torch"] == 1.0
    ort = by[("deploy", "onnxruntime")]
    assert ort["vs_torch"] == pytest.approx(ort["img_s"] / by[("deploy", "torch")]["img_s"])
    assert ort["deploy_vs_train"] == pytest.approx(ort["img_s"] / by[("train", "onnxruntime")]["img_s"])
    assert ort["precision"] == "fp32" and ort["onnxruntime"]


def test_cli_runtimes_print_ratios_and_csv_columns_only_grow(capsys, tmp_path):
    out = tmp_path / "rt.csv"
    rc = run_cli(main, [*CLI_TINY, "--models", "A0", "--baselines", "none",
                        "--runtime", "torch,onnxruntime-int8", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "onnxruntime-int8" in captured.out and "vs torch" in captured.out
    with out.open() as f:
        data = list(csv.DictReader(f))
    assert [(r["form"], r["runtime"]) for r in data] == [
        ("train", "torch"), ("deploy", "torch"), ("train", "onnxruntime-int8"), ("deploy", "onnxruntime-int8"),
    ]
    assert {"model", "form", "img_s", "deploy_vs_train", "vs_torch", "precision"} <= set(data[0])
    assert data[3]["precision"] == "int8" and float(data[3]["vs_torch"]) > 0


def test_cli_unknown_runtime_is_one_line_exit_2(capsys, tmp_path):
    rc = run_cli(main, ["--runtime", "torch,tensorrtx", "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "tensorrtx" in err
