"""The per-layer latency table (``measure/latency.py``) and ``python -m repvgg_nas.bench --latency-table``."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from repvgg_nas import ConfigError, RepVGGSpec
from repvgg_nas.bench.__main__ import main
from repvgg_nas.cli import run_cli
from repvgg_nas.layout import CACHE_DIR_ENV, user_cache_dir
from repvgg_nas.measure import (
    LATENCY_FORMAT_VERSION,
    LatencyKey,
    LayerShape,
    MeasureSettings,
    MissingLayersError,
    build_latency_table,
    default_latency_table_path,
    deploy_layers,
    distinct_layers,
    layer_activations,
    load_latency_table,
    space_specs,
)
from repvgg_nas.study import load_space

# Few, short repeats; every repeat kept (the CPU is shared: a contended layer would be remeasured).
TINY = MeasureSettings(
    device="cpu", batch_size=2, resolution=32, threads=1, warmup=1,
    min_repeats=2, max_repeats=2, min_repeat_s=0.0, max_seconds=1.0, max_other_load=1.0,
)
CLI_TINY = [
    "--device", "cpu", "--resolution", "32", "--batch-size", "2", "--threads", "1",
    "--num-classes", "10", "--warmup", "1", "--repeats", "2", "--max-repeats", "2", "-q",
]
SPACE = """\
description = "two widths, two depths: four tiny nets"
depths = [1, 1, {low = 1, high = 2}, 1, 1]
a = {choices = [0.25, 0.5]}
b = 0.5
"""


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Tables go to a folder of the test, never to the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny_space.toml"
    path.write_text(SPACE, encoding="utf-8")
    return path


@pytest.fixture
def space(space_file):
    return load_space(space_file)


@pytest.fixture
def table(space, tmp_path):
    return build_latency_table(space, TINY, tmp_path / "t.json", num_classes=10)


def test_the_walk_is_memory_s_walk(tiny_spec):
    layers = deploy_layers(tiny_spec, 32)
    assert [layer.name for layer in layers] == [a.name for a in layer_activations(tiny_spec, 32)]
    assert [layer.size for layer in layers] == [32, 16, 8, 4, 4, 2, 2, 1]
    assert layers[-1].kind == "head" and layers[-1].out_channels == 10
    assert [layer.groups for layer in layers[:-1]] == list(tiny_spec.groups)


def test_distinct_layers_of_a_space(space):
    specs = list(space_specs(space, 10))
    assert len(specs) == space.size() == 4
    layers = distinct_layers(specs, 32)
    assert len(layers) == len(set(layers))
    assert {layer for s in specs for layer in map(LayerShape.of, deploy_layers(s, 32))} == set(layers)


def test_prediction_is_the_sum_of_its_layers(table, space):
    assert table.missing(space, 10) == []
    for spec in space_specs(space, 10):
        expected = sum(table.entries[layer.id].latency_ms for layer in table.layers(spec)) / 1000
        assert table.predict(spec) == pytest.approx(expected, rel=1e-12)
        assert table.predict_throughput(spec) == pytest.approx(TINY.batch_size / expected)
    outside = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.75, 0.75, num_classes=10)
    with pytest.raises(MissingLayersError) as e:
        table.predict(outside)
    assert "\n" not in str(e.value) and "lacks" in str(e.value)


def test_the_file_holds_key_host_and_entries(table, tmp_path):
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["format_version"] == LATENCY_FORMAT_VERSION
    assert data["key"] == table.key.to_dict() and data["key"]["runtime"] == "torch"
    assert data["host"]["cpu_model"] and "cpu_capability" in data["host"] and data["host"]["torch"]
    assert len(data["entries"]) == len(table.entries) > 0 and data["build_s"] > 0


def test_the_key_holds_runtime_dtype_batch_resolution_threads():
    key = LatencyKey.from_settings(TINY)
    changed = {
        "runtime": LatencyKey.from_settings(replace(TINY, runtime="onnxruntime")),
        "batch_size": LatencyKey.from_settings(replace(TINY, batch_size=3)),
        "resolution": LatencyKey.from_settings(replace(TINY, resolution=40)),
        "threads": LatencyKey.from_settings(replace(TINY, threads=2)),
        "dtype": replace(key, dtype="fp16"),  # fp16 needs CUDA: a key from a GPU machine
    }
    for name, other in changed.items():
        assert key.difference(other)[0] == name
        assert other.hash != key.hash
    assert key.difference(LatencyKey.from_settings(replace(TINY, warmup=3, max_repeats=9))) is None


@pytest.mark.parametrize("field, change", [
    ("batch_size", {"batch_size": 3}), ("resolution", {"resolution": 40}), ("threads", {"threads": 2}),
    ("runtime", {"runtime": "onnxruntime"}),
])
def test_a_table_of_other_settings_is_refused_unless_explicit(table, tmp_path, field, change):
    other = replace(TINY, **change)
    with pytest.raises(ConfigError) as e:
        load_latency_table(tmp_path / "t.json", other)
    assert field in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):  # a build never mixes figures of two settings in one file
        build_latency_table([], other, tmp_path / "t.json")
    named = load_latency_table(tmp_path / "t.json", other, explicit=True)
    assert named.key == table.key and named.entries == table.entries


def test_a_table_from_another_device_is_refused(table, tmp_path):
    foreign = replace(table, key=replace(table.key, device_name="NVIDIA H100 80GB HBM3", dtype="fp16"))
    foreign.save(tmp_path / "gpu.json")
    with pytest.raises(ConfigError) as e:
        load_latency_table(tmp_path / "gpu.json", TINY)
    assert "device_name" in str(e.value) and "H100" in str(e.value) and "\n" not in str(e.value)
    assert load_latency_table(tmp_path / "gpu.json", TINY, explicit=True).key.dtype == "fp16"


def test_a_second_build_measures_only_missing_layers(space, tmp_path):
    path = tmp_path / "t.json"
    specs = list(space_specs(space, 10))
    progress = []
    first = build_latency_table(specs[:1], TINY, path, progress.append)
    n_first = len(first.entries)
    assert progress[0].total == n_first == len(first.layers(specs[0]))
    assert progress[-1].done == n_first
    before = dict(first.entries)
    progress.clear()
    second = build_latency_table(space, TINY, path, progress.append, num_classes=10)
    new = len(distinct_layers(specs, 32)) - n_first
    assert progress[0].total == new > 0 and len(second.entries) == n_first + new
    assert all(second.entries[k] == v for k, v in before.items())  # measured once, kept
    progress.clear()
    third = build_latency_table(space, TINY, path, progress.append, num_classes=10)
    assert [p.total for p in progress] == [0] and third.entries == second.entries


def test_remeasure_measures_every_layer_again(space, tmp_path):
    path = tmp_path / "t.json"
    first = build_latency_table(space, TINY, path, num_classes=10)
    stale = {k: e._replace(latency_ms=e.latency_ms * 100) for k, e in first.entries.items()}
    first.entries = stale
    first.save(path)  # a table that predicts every net 100x too slow
    progress = []
    again = build_latency_table(space, TINY, path, progress.append, num_classes=10, remeasure=True)
    assert progress[0].total == len(stale) and set(again.entries) == set(stale)
    assert all(again.entries[k].latency_ms < e.latency_ms / 10 for k, e in stale.items())
    assert load_latency_table(path, TINY).entries == again.entries


def test_cli_remeasure_needs_a_table(capsys):
    assert run_cli(main, [*CLI_TINY, "--remeasure"]) == 2
    err = capsys.readouterr().err
    assert "--remeasure goes with --latency-table" in err and err.count("\n") == 1


def test_the_default_file_is_in_the_user_cache(cache_dir, space):
    assert user_cache_dir() == cache_dir
    path = default_latency_table_path(TINY)
    assert path.parent == cache_dir / "latency" and "torch" in path.name and "b2-r32-t1" in path.name
    built = build_latency_table([next(iter(space_specs(space, 10)))], TINY)
    assert built.path == path and path.exists()
    assert default_latency_table_path(replace(TINY, batch_size=4)) != path


@pytest.mark.parametrize("content, words", [
    ("{not json", ["cannot be read"]),
    ('{"format_version": 99, "key": {}, "entries": {}}', ["format_version 99"]),
    (json.dumps({"format_version": LATENCY_FORMAT_VERSION, "key": {"runtime": "torch"}}), ["key lacks"]),
])
def test_a_corrupt_table_gets_one_line(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_text(content)
    for call in (lambda: load_latency_table(path, TINY), lambda: load_latency_table(path, TINY, explicit=True)):
        with pytest.raises(ConfigError) as e:
            call()
        assert "\n" not in str(e.value) and str(path) in str(e.value)
        for w in words:
            assert w in str(e.value)


# ---- the CLI -------------------------------------------------------------------------
def test_cli_builds_then_shows_a_table(space_file, tmp_path, capsys):
    path = tmp_path / "cli.json"
    argv = [*CLI_TINY, "--latency-table", "--space", str(space_file), "--latency-table-file", str(path),
            "--models", "A0"]
    assert run_cli(main, argv) == 0
    out = capsys.readouterr().out
    assert f"# latency table {path}" in out and "measured" in out and "head 256>10 @1" in out
    assert "RepVGG-A0: not predicted" in out  # A0 is no net of this space
    table = load_latency_table(path, TINY)
    wanted = distinct_layers(space_specs(load_space(space_file), 10), 32)
    assert {layer.id for layer in wanted} == set(table.entries)
    # The CLI keeps the default max_other_load: on a busy CPU a layer may be contended, and the
    # next build measures exactly those again.
    contended = sum(e.contended for e in table.entries.values())
    assert run_cli(main, argv) == 0
    again = capsys.readouterr().out
    assert (f"measured {contended} layer(s) now" if contended else "complete: nothing to measure") in again
    assert not (tmp_path / "reports").exists()


def test_cli_latency_table_in_the_user_cache(space_file, cache_dir, capsys):
    assert run_cli(main, [*CLI_TINY, "--latency-table", "--space", str(space_file)]) == 0
    assert str(default_latency_table_path(TINY)) in capsys.readouterr().out
    assert default_latency_table_path(TINY).exists()


def test_cli_refuses_a_foreign_or_corrupt_table_in_one_line(table, space_file, tmp_path, capsys):
    base = [*CLI_TINY, "--space", str(space_file), "--latency-table-file"]
    rc = run_cli(main, [*base, str(tmp_path / "t.json"), "--batch-size", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "batch_size" in err
    bad = tmp_path / "bad.json"
    bad.write_text("][")
    rc = run_cli(main, [*base, str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "cannot be read" in err
    rc = run_cli(main, [*CLI_TINY, "--latency-table"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--space" in err


def test_cli_help_documents_the_table_flags(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--latency-table", "--latency-table-file", "--remeasure", "--space", "--runtime"):
        assert opt in text


def test_a_fresh_entry_is_never_replaced_by_an_older_one_on_disk(space, tmp_path):
    """--remeasure under load: the fresh (contended) figure stays, not the clean one it was meant to replace."""
    path = tmp_path / "t.json"
    first = build_latency_table(space, TINY, path, num_classes=10)
    k, old = next(iter(first.entries.items()))
    first.save(path)
    fresh = load_latency_table(path, TINY)
    fresh.entries[k] = old._replace(latency_ms=old.latency_ms * 3, contended=True)
    fresh.fresh.add(k)
    fresh.save(path)
    assert load_latency_table(path, TINY).entries[k].latency_ms == pytest.approx(old.latency_ms * 3)
    stale = load_latency_table(path, TINY)  # read back: nothing fresh, so a clean entry on disk wins again
    stale.entries[k] = old._replace(latency_ms=old.latency_ms * 5, contended=True)
    first.save(path)  # the clean one written meanwhile by another build
    stale.save(path)
    assert load_latency_table(path, TINY).entries[k].latency_ms == pytest.approx(old.latency_ms)


def test_the_key_names_the_cpu_isa(monkeypatch):
    """oneDNN held to AVX2 changes what a conv costs: such a table is another table."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    full = LatencyKey.from_settings(TINY)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    held = LatencyKey.from_settings(TINY)
    assert held.cpu_isa.endswith("oneDNN max AVX2") and full.difference(held)[0] == "cpu_isa"
    assert held.slug != full.slug
