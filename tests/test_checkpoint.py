from __future__ import annotations

import pickle

import pytest
import torch

from repvgg_nas import CheckpointError, build_model, reparameterize
from repvgg_nas.checkpoint import FORMAT_VERSION, load_checkpoint, load_model, save_checkpoint

from .helpers import randomize_bn


@pytest.mark.parametrize("block", ["repvgg", "qarepvgg"])
@pytest.mark.parametrize("deploy", [False, True])
def test_round_trip_gives_identical_outputs(tmp_path, tiny_spec, deploy, block):
    tiny_spec = tiny_spec.replace(block=block)
    model = randomize_bn(build_model(tiny_spec))
    if deploy:
        model = reparameterize(model)
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"accuracy": 0.5})
    loaded, ckpt = load_model(path)
    assert ckpt.spec == tiny_spec and ckpt.deploy == deploy and ckpt.meta == {"accuracy": 0.5}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp files left


def test_failed_write_leaves_nothing(tmp_path, tiny_spec, monkeypatch):
    model = build_model(tiny_spec)
    with pytest.raises(TypeError, match="meta.bad"):
        save_checkpoint(tmp_path / "m.pt", model, meta={"bad": object()})

    def half_write(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "m.pt", model)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_truncated_files(tmp_path, tiny_spec):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "m.pt", build_model(tiny_spec))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        load_checkpoint(cut)
    assert "\n" not in str(e.value)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path, tiny_spec):
    p = tmp_path / "sd.pt"
    torch.save(build_model(tiny_spec).state_dict(), p)
    with pytest.raises(CheckpointError, match="not a repvgg-nas checkpoint"):
        load_checkpoint(p)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "spec": {}, "payload": Evil()}, p)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(p)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_weights_that_do_not_fit_the_spec(tmp_path, tiny_spec):
    path = save_checkpoint(tmp_path / "m.pt", build_model(tiny_spec))
    data = torch.load(path, weights_only=True)
    data["spec"]["widths"][1] = 24
    data["spec"]["groups"][1] = 1
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"do not fit the stored spec: .*stages\.1\.0\..* has shape"):
        load_model(path)


def test_invalid_stored_spec(tmp_path, tiny_spec):
    path = save_checkpoint(tmp_path / "m.pt", build_model(tiny_spec))
    data = torch.load(path, weights_only=True)
    data["spec"]["depths"][0] = 0
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="stored spec is invalid"):
        load_checkpoint(path)
