"""Measurement runtimes: torch, onnxruntime, onnxruntime INT8 (CPU, tiny nets)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from repvgg_nas import ConfigError, build_model, reparameterize
from repvgg_nas.attrs import ACCURACY, FLOAT_ACCURACY, PRECISION, RUNTIME
from repvgg_nas.data import DataBundle
from repvgg_nas.evaluation import runtime_accuracy
from repvgg_nas.export import export_onnx
from repvgg_nas.measure import RUNTIMES, MeasureSettings, ThroughputCache, measure_spec
from repvgg_nas.measure import onnxrun as onnxrun_mod
from repvgg_nas.measure import runtimes as runtimes_mod
from repvgg_nas.train import evaluate

from .helpers import FAST_MEASURE, randomize_bn, write_tiny_study

pytest.importorskip("onnxruntime")





def test_registry_names_the_issue_runtimes():
    assert RUNTIMES.list() == ["torch", "onnxruntime", "onnxruntime-int8"]
    assert [RUNTIMES.get(n).quantized for n in RUNTIMES] == [False, False, True]
    assert MeasureSettings(**FAST_MEASURE).precision == "fp32"
    assert MeasureSettings(**FAST_MEASURE, runtime="ONNXRuntime-INT8").runtime == "onnxruntime-int8"
    assert MeasureSettings(**FAST_MEASURE, runtime="onnxruntime-int8").precision == "int8"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"runtime": "tensorrt"}, "measure.runtime: 'tensorrt' is not allowed; choose from ['torch', 'onnxruntime', 'onnxruntime-int8']"),
        ({"runtime": 3}, "measure.runtime: 3 is not allowed; choose from ['torch', 'onnxruntime', 'onnxruntime-int8']"),
        ({"runtime": "onnxruntime", "compile": True}, "measure.compile = true cannot be combined with measure.runtime = 'onnxruntime'"),
        ({"runtime": "onnxruntime-int8", "dtype": "fp16", "device": "auto"}, "measure.dtype = 'fp16' cannot be combined"),
    ],
)
def test_bad_runtime_settings_are_one_line(changes, message):
    with pytest.raises(ConfigError) as e:
        MeasureSettings(**changes)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_missing_runtime_package_is_one_line(monkeypatch):
    monkeypatch.setattr(runtimes_mod, "_installed", lambda module: module != "onnxruntime")
    with pytest.raises(ConfigError) as e:
        MeasureSettings(runtime="onnxruntime-int8")
    assert str(e.value) == (
        "measure.runtime: 'onnxruntime-int8' needs the Python package 'onnxruntime', which is not "
        "installed here (pip install onnxruntime)"
    )
    assert MeasureSettings().runtime == "torch"  # torch needs nothing more
    with pytest.raises(ConfigError, match="study.toml: measure: .*'onnxruntime'"):
        MeasureSettings.from_dict({"runtime": "onnxruntime"}, where="study.toml: measure")


def test_onnxruntime_without_its_cuda_provider_fails_when_settings_resolve(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA host...
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for runtime in ("onnxruntime", "onnxruntime-int8"):
        with pytest.raises(ConfigError) as e:
            MeasureSettings(device="auto", runtime=runtime).resolved()  # ...whose onnxruntime lacks CUDA
        msg = str(e.value)
        assert msg.startswith(f"measure.runtime: {runtime!r} on device 'cuda:0' needs onnxruntime's "
                              "CUDAExecutionProvider") and "\n" not in msg
    assert MeasureSettings(device="auto").resolved().device == "cuda:0"  # torch needs no provider
    assert MeasureSettings(device="cpu", runtime="onnxruntime").resolved().device == "cpu"


def test_runtime_is_part_of_the_cache_key(tiny):
    torch_key = json.loads(ThroughputCache.key(tiny, MeasureSettings(**FAST_MEASURE)))
    assert torch_key[3]["runtime"] == "torch" and " / onnxruntime" not in torch_key[2]  # torch needs no onnxruntime
    assert MeasureSettings(**FAST_MEASURE, runtime="torch") == MeasureSettings(**FAST_MEASURE)
    keys = {ThroughputCache.key(tiny, MeasureSettings(**FAST_MEASURE, runtime=r)) for r in RUNTIMES}
    assert len(keys) == 3
    int8 = json.loads(ThroughputCache.key(tiny, MeasureSettings(**FAST_MEASURE, runtime="onnxruntime-int8")))
    assert int8[3]["runtime"] == "onnxruntime-int8" and "/ onnxruntime 1." in int8[2]
    # A torch entry written before runtimes existed (settings without the key) still hits.
    settings = MeasureSettings(**FAST_MEASURE)
    old = {**settings.resolved().to_dict()}
    assert MeasureSettings.from_dict(old) == settings.resolved()


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnxruntime-int8"])
def test_measure_in_onnxruntime_through_the_same_loop(tiny, runtime):
    settings = MeasureSettings(**FAST_MEASURE, runtime=runtime)
    cache = ThroughputCache()
    m = measure_spec(tiny, settings, cache)
    assert m.images_per_s > 0 and m.repeats == 3 and len(m.latencies_ms) == 3
    assert m.env["runtime"] == runtime and m.env["precision"] == ("int8" if "int8" in runtime else "fp32")
    assert m.env["onnxruntime"] and m.peak_memory_bytes is None
    assert cache.get(tiny, MeasureSettings(**FAST_MEASURE)) is None  # a torch figure is another entry
    assert measure_spec(tiny, settings, cache, timer=lambda *a, **k: pytest.fail("remeasured")).cached


def test_measured_sessions_do_not_spin(tiny, tmp_path):
    """Idle onnxruntime workers sleep: in a lockstep run, one session's spinning pool slows the next."""
    path = export_onnx(build_model(tiny, deploy=True), tmp_path / "tiny.onnx", 16, dynamo=False)
    options = onnxrun_mod.onnx_session(path, "cpu", 1).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _bundle_labelled_by(model: torch.nn.Module, n: int = 64, res: int = 16, seed: int = 0) -> DataBundle:
    """Random images labelled by ``model`` itself: its float accuracy is exactly 1.

    The head's bias is first set so the mean logit of every class is equal,
    else a random net gives every noise image the same class.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2 * n, 3, res, res), dtype=torch.uint8, generator=g)
    b = DataBundle("labelled", x[:n], torch.zeros(n, dtype=torch.long), x[n:], torch.zeros(n, dtype=torch.long),
                   10, tuple(map(str, range(10))), (0.5,) * 3, (0.25,) * 3)
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb, _ in b.batches("train", 32)])
        model.head.bias -= logits.mean(0)
        labels = {s: torch.cat([model(xb).argmax(1) for xb, _ in b.batches(s, 32)]) for s in ("train", "val")}
    return dataclasses.replace(b, train_y=labels["train"], val_y=labels["val"])


@pytest.mark.parametrize("block", ["repvgg", "qarepvgg"])
def test_int8_accuracy_of_a_tiny_deploy_net(tiny, block):
    torch.manual_seed(0)  # conv weights: seed 0 gives INT8 agreement 0.95 (repvgg) / 0.84 (qarepvgg)
    deploy = reparameterize(randomize_bn(build_model(tiny.replace(block=block)), seed=1))
    data = _bundle_labelled_by(deploy)
    assert evaluate(deploy, data) == 1.0
    fp32 = runtime_accuracy(deploy, data, "onnxruntime")
    int8 = runtime_accuracy(deploy, data, "onnxruntime-int8", calibration_images=32)
    assert len(set(data.val_y.tolist())) >= 3  # not one class for every image
    assert fp32 == 1.0  # onnxruntime fp32 is the same function
    assert 0.5 <= int8 <= 1.0  # quantized: close to, but not necessarily, the float net's labels
    with pytest.raises(ConfigError, match="needs an onnxruntime runtime"):
        runtime_accuracy(deploy, data, "torch")


def test_int8_calibration_covers_more_than_one_class_of_a_sorted_set(tiny, monkeypatch):
    """A class-sorted (ImageFolder-like) training set calibrates on a random subset, not class 0."""
    per_class = 32
    y = torch.arange(4).repeat_interleave(per_class)
    x = (y * 60).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 16, 16).contiguous()
    data = DataBundle("sorted", x, y, x[:8], y[:8], 10, tuple(map(str, range(10))), (0.0,) * 3, (1 / 255,) * 3)
    seen: list[np.ndarray] = []

    def record(src, dst, calibration):
        seen.extend(calibration)
        return src  # run the float file: only the calibration input matters here

    monkeypatch.setattr(onnxrun_mod, "quantize_onnx", record)
    runtime_accuracy(reparameterize(build_model(tiny)), data, "onnxruntime-int8", calibration_images=per_class)
    images = np.concatenate(seen)
    assert images.shape[0] == per_class
    assert len({round(float(v) / 60) for v in images[:, 0, 0, 0]}) > 1  # the first 32 stored are all class 0


def test_int8_study_records_quantized_and_float_accuracy(tmp_path):
    from repvgg_nas.search import load_study_config, run_search

    path = write_tiny_study(tmp_path, n=1, tail='runtime = "onnxruntime-int8"\n')
    res = run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False)
    (trial,) = res.study.get_trials()
    a = trial.user_attrs
    assert a[RUNTIME] == "onnxruntime-int8" and a[PRECISION] == "int8"
    assert 0.0 <= a[FLOAT_ACCURACY] <= 1.0 and a[ACCURACY] == trial.values[0]
    assert trial.values[1] > 0
    from repvgg_nas.report import collect_report_data

    summary = collect_report_data(res.study).summary
    row = summary[summary["field"] == "runtime"]
    assert row["value"].tolist() == [
        "onnxruntime-int8, int8 (accuracy is the int8 net's; the fp32 net's is in float_accuracy)"
    ]
    measured = summary.loc[summary["field"] == "measured with", "value"].item()
    assert measured == "not recorded" or "onnxruntime 1." in measured
    from repvgg_nas.report.collect import _runtime

    assert _runtime({}) == "torch, fp32" and _runtime({"dtype": "fp16"}) == "torch, fp16"


def test_prune_speedup_is_measured_in_the_study_runtime(tiny):
    from repvgg_nas.prune.speedup import measure_pair

    half = tiny.replace(widths=tuple(max(1, w // 2) for w in tiny.widths))
    pair = measure_pair(tiny, half, MeasureSettings(**FAST_MEASURE, runtime="onnxruntime-int8"), None)
    assert {pair.original.env["runtime"], pair.pruned.env["runtime"]} == {"onnxruntime-int8"}
    assert pair.speedup > 0


def test_one_lockstep_run_across_runtimes(tiny):
    from repvgg_nas.measure import measure_models

    net = build_model(tiny, deploy=True)
    names = {"torch": "torch", "ort": "onnxruntime", "int8": "onnxruntime-int8"}
    out = measure_models({n: net for n in names}, MeasureSettings(**FAST_MEASURE), runtimes={"ort": "onnxruntime", "int8": "onnxruntime-int8"})
    assert {n: m.env["runtime"] for n, m in out.items()} == names
    assert [m.repeats for m in out.values()] == [3, 3, 3]  # the same rounds for all three
    assert out["int8"].env["settings"]["runtime"] == "onnxruntime-int8" and out["torch"].env["settings"]["runtime"] == "torch"
