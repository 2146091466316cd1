from __future__ import annotations

import pytest
import torch

from repvgg_nas import build_model, reparameterize
from repvgg_nas import export as export_mod
from repvgg_nas.export import ExportMismatchError, export_checked_onnx, export_onnx, export_torchscript, onnx_max_error
from repvgg_nas.model import FUSION_TOLERANCE

from .helpers import randomize_bn


@pytest.fixture
def deploy_model(tiny_spec):
    return reparameterize(randomize_bn(build_model(tiny_spec)))


def test_onnx_matches_torch_with_dynamic_batch(tmp_path, deploy_model):
    pytest.importorskip("onnxruntime")
    path = export_onnx(deploy_model, tmp_path / "m.onnx", resolution=32)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        assert onnx_max_error(path, deploy_model, x) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # single file, no temp left


def test_torchscript_matches_torch(tmp_path, deploy_model):
    path = export_torchscript(deploy_model, tmp_path / "m.ts", resolution=32)
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deploy_model(x))


def test_checked_onnx_export_writes_only_a_file_that_matches(tmp_path, deploy_model, monkeypatch):
    pytest.importorskip("onnxruntime")
    check = export_checked_onnx(deploy_model, tmp_path / "m.onnx", resolution=32, dynamo=False)
    assert check.relative_error <= FUSION_TOLERANCE and check.max_error < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    monkeypatch.setattr(export_mod, "_onnx_logits", lambda path, x: torch.full((x.shape[0], 10), 1e3))
    with pytest.raises(ExportMismatchError) as e:
        export_checked_onnx(deploy_model, tmp_path / "bad.onnx", resolution=32, dynamo=False)
    assert f"> {FUSION_TOLERANCE:g}" in str(e.value) and "\n" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # nothing at bad.onnx, no temp left


def test_onnx_has_dynamic_batch_height_and_width(tmp_path, deploy_model):
    pytest.importorskip("onnxruntime")
    import onnx

    for dynamo in (False, True):
        path = export_onnx(deploy_model, tmp_path / f"m{dynamo}.onnx", resolution=32, dynamo=dynamo)
        dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # channels fixed
        for batch, size in ((1, 32), (3, 48), (2, 20)):
            x = torch.randn(batch, 3, size, size)
            assert onnx_max_error(path, deploy_model, x) < 1e-4


def test_checked_export_runs_two_sizes_and_refuses_a_fixed_size(tmp_path, deploy_model, monkeypatch):
    pytest.importorskip("onnxruntime")
    assert export_mod.check_sizes(32) == ((2, 32), (1, 40))
    seen = []
    real = export_mod._onnx_logits
    monkeypatch.setattr(export_mod, "_onnx_logits", lambda path, x: seen.append(tuple(x.shape)) or real(path, x))
    export_checked_onnx(deploy_model, tmp_path / "m.onnx", resolution=32, dynamo=False)
    assert seen == [(2, 3, 32, 32), (1, 3, 40, 40)]
    static = export_mod.export_onnx
    monkeypatch.setattr(export_mod, "export_onnx",
                        lambda model, tmp, resolution, dynamo: static(model, tmp, resolution, dynamo=dynamo,
                                                                      dynamic_size=False))
    with pytest.raises(ExportMismatchError) as e:
        export_checked_onnx(deploy_model, tmp_path / "fixed.onnx", resolution=32, dynamo=False)
    assert "40x40" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "fixed.onnx").exists()
