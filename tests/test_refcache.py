"""Trained references kept across studies (the cache; the search's use of it is in test_search)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from repvgg_nas import build_model
from repvgg_nas.layout import CACHE_DIR_ENV, user_cache_dir
from repvgg_nas.search import refcache
from repvgg_nas.search.refcache import ReferenceCache, reference_key
from repvgg_nas.train import TrainConfig

FIGURES = {"train_seconds": 12.5, "train_images_per_s": 800.0, "final_loss": 1.25, "fusion_error": 1e-6}


def test_a_kept_reference_comes_back_with_its_figures(tiny, tmp_path):
    cache = ReferenceCache(tmp_path)
    net = build_model(tiny, deploy=True).eval()
    key = reference_key(tiny, "data0", TrainConfig(epochs=2), 0, augment=True, hflip=True, device="cpu")
    assert cache.get(key, tiny) is None
    cache.put(key, net, tiny, FIGURES)
    got = cache.get(key, tiny)
    assert got is not None and got.train_seconds == 12.5 and got.fusion_error == 1e-6
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(got.model(x), net(x))


@pytest.mark.parametrize("change", ["epochs", "data", "seed", "spec", "augment", "hflip", "amp", "code"])
def test_the_key_changes_with_what_training_depends_on(tiny, tiny_spec, change, monkeypatch):
    base = dict(spec=tiny, data_fingerprint="data0", train=TrainConfig(epochs=2), seed=0, augment=True, hflip=True,
                device="cpu")
    other = dict(base)
    if change == "epochs":
        other["train"] = dataclasses.replace(base["train"], epochs=3)
    elif change == "data":
        other["data_fingerprint"] = "data1"
    elif change == "seed":
        other["seed"] = 1
    elif change == "augment":
        other["augment"] = False
    elif change == "hflip":
        other["hflip"] = False
    elif change == "amp":
        other["train"] = dataclasses.replace(base["train"], amp="on")
    elif change == "code":
        key = reference_key(**base)
        refcache.training_code.cache_clear()
        monkeypatch.setattr(refcache, "training_code", lambda: "another version of the training code")
        assert reference_key(**base) != key
        return
    else:
        other["spec"] = tiny_spec
    assert reference_key(**base) == reference_key(**dict(base))
    assert reference_key(**other) != reference_key(**base)


def test_the_key_holds_the_settings_as_they_train():
    """``auto`` is resolved for the device: on a CPU it trains exactly as ``off`` does, so both find the net."""
    from repvgg_nas.spec import RepVGGSpec

    spec = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=3)
    auto, off = TrainConfig(amp="auto", channels_last="auto"), TrainConfig(amp="off", channels_last="off")
    kw = dict(augment=True, hflip=True, device="cpu")
    assert reference_key(spec, "d", auto, 0, **kw) == reference_key(spec, "d", off, 0, **kw)
    assert reference_key(spec, "d", auto, 0, augment=False, hflip=True, device="cpu") == reference_key(
        spec, "d", auto, 0, augment=False, hflip=False, device="cpu")  # no augmentation: the flip plays no part


def test_a_damaged_or_foreign_entry_is_a_miss(tiny, tiny_spec, tmp_path):
    cache = ReferenceCache(tmp_path)
    key = reference_key(tiny, "d", TrainConfig(), 0, augment=True, hflip=True, device="cpu")
    cache.put(key, build_model(tiny, deploy=True), tiny, FIGURES)
    assert cache.get(key, tiny_spec) is None  # a key that names another spec's file
    cache.path(key).write_bytes(b"not a checkpoint")
    assert cache.get(key, tiny) is None
    with pytest.raises(ValueError, match="fusion_error"):
        cache.put(key, build_model(tiny, deploy=True), tiny, {"train_seconds": 1.0})


def test_the_default_folder_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "c"))
    assert ReferenceCache().root == tmp_path / "c" / "references" == user_cache_dir() / "references"


def test_the_data_fingerprint_follows_the_bytes():
    from repvgg_nas.data import DataConfig, load_data

    a = load_data(DataConfig(name="synthetic", resolution=8, train_size=20, val_size=10))
    b = load_data(DataConfig(name="synthetic", resolution=8, train_size=20, val_size=10))
    c = load_data(DataConfig(name="synthetic", resolution=8, train_size=20, val_size=10, seed=1))
    assert a.fingerprint == b.fingerprint != c.fingerprint
