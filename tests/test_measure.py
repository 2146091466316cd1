"""Throughput measurement: sane figures, metadata, cache, validation (CPU, tiny nets)."""

from __future__ import annotations

import json

import pytest
import torch

from repvgg_nas import ConfigError, build_model
from repvgg_nas.measure.cache import CACHE_FORMAT_VERSION
from repvgg_nas.measure import specs as specs_mod
from repvgg_nas.measure import timing as timing_mod
from repvgg_nas.measure import (
    DTYPES,
    MeasureSettings,
    Measurement,
    ThroughputCache,
    measure_model,
    measure_spec,
    measure_specs,
)

from .helpers import FAST_MEASURE


@pytest.fixture
def fast() -> MeasureSettings:
    return MeasureSettings(**FAST_MEASURE)


def test_measure_model_gives_positive_figures_and_metadata(tiny, fast):
    m = measure_model(build_model(tiny, deploy=True), fast)
    assert m.images_per_s > 0 and m.best_images_per_s >= m.images_per_s * 0.999
    assert m.latency_ms > 0
    assert m.images_per_s == pytest.approx(fast.batch_size / (m.latency_ms / 1000))
    assert m.repeats == 3 and len(m.latencies_ms) == 3 and m.iters_per_repeat >= 1
    assert m.cv >= 0 and m.robust_cv >= 0 and m.images_per_s_iqr >= 0
    assert m.peak_memory_bytes is None  # CPU: no allocator peak
    assert not m.cached
    env = m.env
    for key in ("device", "device_name", "torch", "cuda", "cudnn", "threads", "cpu_model", "settings"):
        assert key in env
    assert env["device"] == "cpu" and env["threads"] == 1
    assert env["torch"] == torch.__version__
    assert env["settings"]["batch_size"] == 2 and env["settings"]["threads"] == 1
    json.dumps(m.to_dict())  # JSON-able for caches and CSV


def test_measure_model_leaves_caller_model_and_threads_alone(tiny, fast):
    model = build_model(tiny)
    before = torch.get_num_threads()
    w = model.stages[1][0].conv3x3.conv.weight
    measure_model(model, fast)
    assert torch.get_num_threads() == before
    assert w.is_contiguous() and w.dtype == torch.float32  # no channels_last conversion leaked
    assert model.training  # still in train mode; the copy was put in eval


def test_repeats_stop_at_max_and_respect_min(tiny):
    s = MeasureSettings(**{**FAST_MEASURE, "min_repeats": 2, "max_repeats": 4, "target_cv": 0.0})
    m = measure_model(build_model(tiny, deploy=True), s)
    # target cv 0 is never reached: max_repeats caps the repeats (kept + dropped).
    assert m.repeats + m.dropped_repeats == 4 and m.repeats >= 2


@pytest.mark.parametrize("pattern, kept, dropped, contended", [
    ([0.9, 0.0], 3, 3, False),  # every other repeat shared with a neighbour: dropped
    ([0.9], 6, 0, True),  # never a clean repeat: all kept, flagged
])
def test_repeats_shared_with_other_processes_are_dropped(tiny, monkeypatch, pattern, kept, dropped, contended):
    loads = iter(pattern * 20)

    class FakeLoad:
        def stop(self, min_ticks: int = 1) -> float:
            return next(loads)

    monkeypatch.setattr(timing_mod, "OtherLoad", FakeLoad)
    s = MeasureSettings(**{**FAST_MEASURE, "min_repeats": 3, "max_repeats": 6, "target_cv": 0.0, "max_seconds": 30.0})
    m = measure_model(build_model(tiny, deploy=True), s)
    assert (m.repeats, m.dropped_repeats, m.contended) == (kept, dropped, contended)
    assert len(m.latencies_ms) == kept


def test_neighbours_on_spare_cores_do_not_count(monkeypatch):
    monkeypatch.setattr(timing_mod, "_cpu_count", lambda: 4)
    limit = timing_mod._other_load_limit
    assert limit(MeasureSettings(threads=4, max_other_load=0.25)) == pytest.approx(0.25)
    assert limit(MeasureSettings(threads=1, max_other_load=0.25)) == pytest.approx(1.0)
    assert limit(MeasureSettings(threads=2, max_other_load=0.25)) == pytest.approx(0.75)


def test_cache_hits_on_second_call(tiny, fast):
    cache = ThroughputCache()
    first = measure_spec(tiny, fast, cache)
    assert not first.cached and cache.misses == 1 and len(cache) == 1

    def boom(*a, **k):
        raise AssertionError("a cache hit must not measure")

    second = measure_spec(tiny, fast, cache, timer=boom)
    assert second.cached and cache.hits == 1
    assert second.images_per_s == first.images_per_s
    assert second.env == first.env


def test_measure_specs_times_nets_in_lockstep_and_fills_the_cache(tiny, fast):
    calls = []
    real = specs_mod.measure_models
    smaller = tiny.replace(widths=tuple(max(1, w // 2) for w in tiny.widths))
    cache = ThroughputCache()
    out = measure_specs({"original": tiny, "pruned": smaller}, fast, cache,
                        timer=lambda nets, *a, **k: calls.append(list(nets)) or real(nets, *a, **k))
    assert calls == [["original", "pruned"]]  # one lockstep run, not two separate ones
    assert set(out) == {"original", "pruned"} and all(m.images_per_s > 0 for m in out.values())
    assert len(cache) == 2 and cache.get(smaller, fast).images_per_s == out["pruned"].images_per_s
    with pytest.raises(ConfigError, match="one input channel count"):
        measure_specs({"a": tiny, "b": tiny.replace(in_channels=1)}, fast)


def test_cache_key_separates_settings_and_form(tiny, fast):
    base = ThroughputCache.key(tiny, fast)
    assert base == ThroughputCache.key(tiny.hash, fast)
    assert base != ThroughputCache.key(tiny, MeasureSettings(**{**FAST_MEASURE, "batch_size": 4}))
    assert base != ThroughputCache.key(tiny, fast, deploy=False)
    assert base != ThroughputCache.key(tiny.replace(num_classes=11), fast)
    # "auto" resolves to the real device, so it shares entries with the explicit name.
    if not torch.cuda.is_available():
        assert base == ThroughputCache.key(tiny, MeasureSettings(**{**FAST_MEASURE, "device": "auto"}))


def test_persisted_cache_reloads(tiny, fast, tmp_path):
    path = tmp_path / "sub" / "throughput.json"
    first = measure_spec(tiny, fast, ThroughputCache(path))
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    again = ThroughputCache(path)
    assert len(again) == 1
    hit = measure_spec(tiny, fast, again, timer=lambda *a, **k: pytest.fail("remeasured"))
    assert hit.cached and hit.images_per_s == first.images_per_s
    assert hit.latencies_ms == first.latencies_ms


def test_saving_a_contended_entry_never_overwrites_a_clean_one_another_worker_wrote(tiny, fast, tmp_path):
    path = tmp_path / "throughput.json"

    def m(thr: float, contended: bool) -> Measurement:
        return Measurement(thr, 1.0, 1.0, 0.1, thr, 0.01, 0.01, 3, 1, (1.0,), None, contended=contended)

    mine, theirs = ThroughputCache(path), ThroughputCache(path)
    mine.put(tiny, fast, m(10.0, True))  # this worker's figure was taken under load
    theirs.put(tiny, fast, m(30.0, False))  # another worker's clean figure reaches the disk
    other = tiny.replace(num_classes=11)
    mine.put(other, fast, m(20.0, False))  # this worker saves again, merging with the disk
    for cache in (ThroughputCache(path), mine):
        assert cache.get(tiny, fast).images_per_s == 30.0 and cache.get(other, fast).images_per_s == 20.0


def test_corrupt_cache_file_is_a_clear_error(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cache.json"):
        ThroughputCache(path)
    path.write_text(json.dumps({"format_version": 99, "entries": {}}))
    with pytest.raises(ConfigError, match="format_version"):
        ThroughputCache(path)
    path.write_text(json.dumps({"format_version": 1, "entries": {}}))  # keys of an older layout
    with pytest.raises(ConfigError) as e:
        ThroughputCache(path)
    msg = str(e.value)
    assert str(path) in msg and "format_version 1;" in msg and f"format_version {CACHE_FORMAT_VERSION} only" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"device": "cpu", "dtype": "fp16"}, ["measure.dtype", "fp16", "CUDA", "fp32"]),
        ({"device": "cpu", "dtype": "bf16"}, ["measure.dtype", "bf16", "fp32"]),
        ({"batch_size": 0}, ["measure.batch_size", "0", ">= 1"]),
        ({"batch_size": True}, ["measure.batch_size"]),
        ({"resolution": -3}, ["measure.resolution", "-3"]),
        ({"device": "tpu"}, ["measure.device", "'tpu'", "auto, cpu, cuda, cuda:N"]),
        ({"dtype": "int8"}, ["measure.dtype", "'int8'", "fp32, tf32, fp16, bf16"]),
        ({"threads": 0}, ["measure.threads", "0"]),
        ({"min_repeats": 5, "max_repeats": 2}, ["measure.max_repeats", "min_repeats"]),
        ({"compile_mode": "fast"}, ["measure.compile_mode", "reduce-overhead"]),
        ({"device": "cpu", "cuda_graphs": True}, ["cuda_graphs", "CUDA"]),
        ({"compile": True, "cuda_graphs": True}, ["cuda_graphs", "reduce-overhead"]),
        ({"target_cv": -1.0}, ["measure.target_cv"]),
    ],
)
def test_invalid_settings_are_clear_config_errors(changes, words):
    with pytest.raises(ConfigError) as info:
        MeasureSettings(**changes)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_requests_without_cuda_fail_on_resolve():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        MeasureSettings(device="cuda:0").resolve_device()
    # fp16 under "auto" is only known to be wrong once auto resolves to cpu.
    with pytest.raises(ConfigError, match="fp16"):
        MeasureSettings(device="auto", dtype="fp16").resolve_device()
    assert MeasureSettings(device="AUTO").resolve_device() == torch.device("cpu")


def test_settings_round_trip_and_unknown_keys():
    s = MeasureSettings(**FAST_MEASURE)
    assert MeasureSettings.from_dict(s.to_dict()) == s
    assert MeasureSettings.from_dict(None) == MeasureSettings()
    assert MeasureSettings(dtype="FP32").dtype == "fp32"
    with pytest.raises(ConfigError) as info:
        MeasureSettings.from_dict({"batchsize": 8})
    assert "batchsize" in str(info.value) and "batch_size" in str(info.value)
    with pytest.raises(ConfigError, match="study.toml: measure"):
        MeasureSettings.from_dict({"batch_size": 0}, where="study.toml: measure")


def test_resolved_fills_device_and_threads():
    r = MeasureSettings(device="cpu").resolved()
    assert r.device == "cpu" and r.threads == torch.get_num_threads()


def test_measurement_dict_round_trip(tiny, fast):
    m = measure_spec(tiny, fast)
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_dtype_registry_matches_the_issue():
    assert DTYPES.list() == ["fp32", "tf32", "fp16", "bf16"]
    assert [n for n in DTYPES if DTYPES.get(n).cpu] == ["fp32"]


# ---- GPU -------------------------------------------------------------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", ["fp32", "tf32", "fp16", "bf16"])
def test_gpu_measurement_each_dtype(tiny, dtype):
    s = MeasureSettings(device="cuda", dtype=dtype, batch_size=4, resolution=32,
                        min_repeats=3, max_repeats=5, max_seconds=2.0)
    m = measure_spec(tiny, s)
    assert m.images_per_s > 0 and m.peak_memory_bytes and m.peak_memory_bytes > 0
    assert m.env["device"].startswith("cuda") and m.env["cudnn"]
    assert m.env["gpu_capability"]


@pytest.mark.gpu
@gpu
def test_gpu_cuda_graphs_and_flag_restore(tiny):
    bench_before = torch.backends.cudnn.benchmark
    conv_before = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    s = MeasureSettings(device="cuda", cuda_graphs=True, batch_size=4, resolution=32,
                        min_repeats=3, max_repeats=5, max_seconds=2.0)
    m = measure_spec(tiny, s)
    assert m.images_per_s > 0
    assert torch.backends.cudnn.benchmark == bench_before
    assert getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None) == conv_before


def test_measure_models_in_lockstep(tiny):
    from repvgg_nas.measure import measure_models

    s = MeasureSettings(**{**FAST_MEASURE, "min_repeats": 3, "max_repeats": 4})
    nets = {"train": build_model(tiny), "deploy": build_model(tiny, deploy=True)}
    out = measure_models(nets, s)
    assert list(out) == ["train", "deploy"]
    for m in out.values():
        assert m.images_per_s > 0 and 3 <= m.repeats + m.dropped_repeats <= 4
    assert out["train"].env["settings"] == out["deploy"].env["settings"]
    assert nets["train"].training  # copies were measured
    with pytest.raises(ConfigError, match="at least one model"):
        measure_models({}, s)
