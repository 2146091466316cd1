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
