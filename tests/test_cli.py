from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from repvgg_nas import build_model
from repvgg_nas.checkpoint import load_model, save_checkpoint
from repvgg_nas.cli import run_cli
from repvgg_nas.convert.__main__ import main as convert_main
from repvgg_nas.zoo.__main__ import main as zoo_main

from .helpers import randomize_bn


def test_zoo_table(capsys):
    assert run_cli(zoo_main, []) == 0
    out = capsys.readouterr().out
    assert "RepVGG-A0" in out and "8.309" in out and "RepVGG-D2se" in out


def test_convert_train_checkpoint_to_deploy(tmp_path, tiny_spec, capsys):
    model = randomize_bn(build_model(tiny_spec))
    src = save_checkpoint(tmp_path / "train.pt", model)
    out = tmp_path / "deploy.pt"
    assert run_cli(convert_main, [str(src), str(out), "--resolution", "32"]) == 0
    assert "relative max error" in capsys.readouterr().out
    deploy, ckpt = load_model(out)
    assert ckpt.deploy and ckpt.spec == tiny_spec
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), model(x), rtol=1e-5, atol=1e-5)


def test_convert_onnx_mismatch_fails_before_anything_is_written(tmp_path, tiny_spec, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from repvgg_nas import export as export_mod
    from repvgg_nas.model import FUSION_TOLERANCE

    monkeypatch.setattr(export_mod, "_onnx_logits", lambda path, x: torch.full((x.shape[0], 10), 1e3))
    src = save_checkpoint(tmp_path / "train.pt", randomize_bn(build_model(tiny_spec)))
    argv = [str(src), str(tmp_path / "deploy.pt"), "--resolution", "32", "--onnx", str(tmp_path / "d.onnx"),
            "--torchscript", str(tmp_path / "d.ts")]
    assert run_cli(convert_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match the torch model" in err and f"> {FUSION_TOLERANCE:g}" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.pt"]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", ["{tmp}/missing.pt", "{tmp}/out.pt"], "no such file"),
        ("truncated", ["{tmp}/cut.pt", "{tmp}/out.pt"], "truncated or corrupt"),
        ("ckpt", ["{tmp}/train.pt", "{tmp}/out.pt", "--arch", "A9"], "unknown zoo model 'A9'; did you mean"),
        ("ckpt", ["{tmp}/train.pt", "{tmp}/out.pt", "--arch", "B0"], "not the requested architecture"),
    ],
)
def test_convert_bad_input_is_one_line_exit_2(tmp_path, tiny_spec, capsys, setup, args, message):
    if setup != "none":
        path = save_checkpoint(tmp_path / "train.pt", build_model(tiny_spec))
        (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:1500])
    argv = [a.format(tmp=tmp_path) for a in args]
    assert run_cli(convert_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out.pt").exists()


def test_python_m_entry_points_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = subprocess.run(
        [sys.executable, "-m", "repvgg_nas.convert", str(bad), str(tmp_path / "o.pt")],
        capture_output=True, text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


# ---- every CLI: argparse errors are one line, exit 2, no usage block -------------------------------------
def _mains():
    from repvgg_nas.bench.__main__ import main as bench_main
    from repvgg_nas.prune.__main__ import main as prune_main
    from repvgg_nas.report.__main__ import main as report_main
    from repvgg_nas.search.__main__ import main as search_main

    return {"search": search_main, "prune": prune_main, "report": report_main, "bench": bench_main,
            "convert": convert_main, "zoo": zoo_main}


CLI_ERRORS = [
    ("search", ["--study", "quick", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("search", [], "the following arguments are required: --study"),
    ("search", ["--study", "quick", "--n-trials", "0"], "--n-trials must be >= 1, got 0"),
    ("search", ["--study", "quick", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ("prune", ["x.pt"], "one of the arguments --ratio --target-speedup is required"),
    ("prune", ["x.pt", "--ratio", "half"], "argument --ratio: invalid float value: 'half'"),
    ("prune", ["--study", "quick", "--ratio", "0.2"], "--study needs --trial N"),
    ("report", ["--study"], "argument --study: expected one argument"),
    ("bench", ["--batch-size", "big"], "argument --batch-size: invalid int value: 'big'"),
    ("convert", ["only-one.pt"], "the following arguments are required: output"),
    ("convert", ["a.pt", "b.pt", "--resolution", "4"], "--resolution must be >= 8, got 4"),
    ("zoo", ["--resolution", "0"], "--resolution and --num-classes must be positive"),
]


@pytest.mark.parametrize("tool, argv, message", CLI_ERRORS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLI_ERRORS)])
def test_argument_errors_are_one_line_without_usage(tmp_path, monkeypatch, capsys, tool, argv, message):
    monkeypatch.chdir(tmp_path)
    assert run_cli(_mains()[tool], argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert "usage:" not in err and f"python -m repvgg_nas.{tool} --help" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", ["search", "prune", "report", "bench", "convert", "zoo"])
def test_help_still_prints_the_whole_usage(capsys, tool):
    with pytest.raises(SystemExit) as info:
        _mains()[tool](["--help"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith(f"usage: python -m repvgg_nas.{tool}")


def test_resolution_flags_say_which_resolution_they_are(capsys):
    for tool in ("search", "prune"):
        with pytest.raises(SystemExit):
            _mains()[tool](["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--data-resolution N TRAINING resolution" in text and "--measure-resolution N DEPLOYMENT resolution" in text
        assert "--resolution " not in text


@pytest.mark.parametrize("tool, argv, message", [
    ("convert", ["{src}", "{src}/out.pt"], "output '{src}/out.pt': folder '{src}' is a file, not a folder"),
    ("convert", ["{src}", "{tmp}/o.pt", "--onnx", "{tmp}"], "--onnx '{tmp}' is a folder; give a file name"),
    ("report", ["--study", "x", "--out", "{src}"], "--out '{src}' is a file, not a folder"),
    ("bench", ["--models", "A0", "--out", "{src}/b.csv"], "--out '{src}/b.csv': folder '{src}' is a file"),
])
def test_output_paths_that_cannot_be_written_are_one_line(tmp_path, tiny_spec, capsys, tool, argv, message):
    src = save_checkpoint(tmp_path / "train.pt", build_model(tiny_spec))
    args = [a.format(src=src, tmp=tmp_path) for a in argv]
    assert run_cli(_mains()[tool], args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message.format(src=src, tmp=tmp_path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.pt"]


def test_python_m_argument_error_is_one_line():
    r = subprocess.run([sys.executable, "-m", "repvgg_nas.search", "--study", "quick", "--n-trials", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --n-trials must be >= 1, got 0 (see python -m repvgg_nas.search --help)"]
