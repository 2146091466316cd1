"""Proxy training: config validation, optimizer groups, schedules, determinism, divergence, evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from repvgg_nas import RepVGGSpec, build_model, reparameterize
from repvgg_nas.cli import StepBar
from repvgg_nas.data import DataBundle, load_data
from repvgg_nas.errors import ConfigError, RepVGGNasError
from repvgg_nas.model import RepVGGBlock
from repvgg_nas.train import (
    SCHEDULES,
    DivergenceError,
    TrainConfig,
    TrainResult,
    TrainState,
    evaluate,
    identity_init,
    init_model,
    lr_factors,
    param_groups,
    train,
)

torch.set_num_threads(2)

TINY = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10)
# Has identity blocks (stage depths > 1), still tiny.
SMALL = RepVGGSpec.from_paper((1, 2, 2, 2, 1), 0.25, 0.25, num_classes=10)


@pytest.fixture(scope="module")
def small_data() -> DataBundle:
    return load_data({"train_size": 160, "val_size": 60, "resolution": 16, "seed": 0})


def _colour_bundle(n: int = 320, classes: int = 4) -> DataBundle:
    """An easy task: the class is the tint of a noisy image."""
    g = torch.Generator().manual_seed(0)
    palette = torch.tensor([[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]], dtype=torch.float32)
    y = torch.arange(n) % classes
    x = palette[y][:, :, None, None] * 0.6 + torch.rand(n, 3, 16, 16, generator=g) * 100
    x = x.clamp(0, 255).to(torch.uint8)
    split = n * 3 // 4
    return DataBundle(
        name="colours",
        train_x=x[:split],
        train_y=y[:split],
        val_x=x[split:],
        val_y=y[split:],
        num_classes=classes,
        classes=tuple(str(i) for i in range(classes)),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def test_defaults_round_trip() -> None:
    cfg = TrainConfig()
    assert cfg.schedule == "onecycle" and cfg.amp == "auto" and cfg.channels_last == "auto"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict(None) == cfg


def test_unknown_key_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"train.epoch: unknown key; allowed keys in train: .*epochs"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"epochs": 0}, "train.epochs: 0 is out of range; must be >= 1"),
        ({"epochs": "3"}, "train.epochs: must be an integer"),
        ({"epochs": 2.5}, "train.epochs: must be an integer"),
        ({"batch_size": True}, "train.batch_size: must be an integer"),
        ({"lr": 0}, "train.lr: 0.0 is out of range; must be > 0"),
        ({"lr": float("nan")}, "train.lr: must be a finite number"),
        ({"momentum": 1.5}, "train.momentum"),
        ({"weight_decay": -1e-4}, "train.weight_decay"),
        ({"label_smoothing": 1.2}, "train.label_smoothing"),
        ({"warmup_epochs": 10}, "exceeds train.epochs"),
        ({"schedule": "cosin"}, r"train.schedule.*cosine"),
        ({"amp": "maybe"}, r"train.amp: 'maybe' is invalid; one of \['auto', 'on', 'off'\]"),
        ({"channels_last": 1}, "train.channels_last"),
        ({"max_grad_norm": -1.0}, "train.max_grad_norm"),
        ({"nesterov": True, "momentum": 0.0}, "train.nesterov: needs momentum"),
        ({"seed": -3}, "train.seed"),
    ],
)
def test_bad_values_name_the_key(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig.from_dict(kwargs)


def test_toml_friendly_spellings() -> None:
    cfg = TrainConfig.from_dict(
        {"amp": False, "channels_last": True, "max_grad_norm": 0, "schedule": "Cosine"}
    )
    assert cfg.amp == "off" and cfg.channels_last == "on"
    assert cfg.max_grad_norm is None and cfg.schedule == "cosine"
    assert isinstance(TrainConfig(lr=1).lr, float)


def test_replace_keeps_clipping_off() -> None:
    cfg = TrainConfig(max_grad_norm=None).replace(epochs=2)
    assert cfg.max_grad_norm is None and cfg.epochs == 2


def test_amp_on_without_cuda_is_config_error(small_data: DataBundle) -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        train(build_model(TINY), small_data, {"amp": "on", "epochs": 1}, device="cpu")


# ---------------------------------------------------------------------------
# optimizer groups and schedules
# ---------------------------------------------------------------------------


def test_no_weight_decay_on_bn_and_bias() -> None:
    model = build_model(SMALL)
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    assert groups["decay"]["weight_decay"] == 5e-4 and groups["no_decay"]["weight_decay"] == 0.0
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert not decay & no_decay
    assert decay | no_decay == {id(p) for p in model.parameters()}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert id(m.weight) in no_decay and id(m.bias) in no_decay
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert id(m.weight) in decay
            if m.bias is not None:
                assert id(m.bias) in no_decay
    assert all(p.ndim > 1 for p in groups["decay"]["params"])


def test_train_hands_the_groups_to_sgd(small_data: DataBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.optim.SGD] = []

    class Recording(torch.optim.SGD):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self)

    monkeypatch.setattr(torch.optim, "SGD", Recording)
    model = build_model(SMALL)
    train(model, small_data, {"epochs": 1, "batch_size": 32, "weight_decay": 1e-3})
    (opt,) = seen
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["decay"]["weight_decay"] == 1e-3 and by_name["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in by_name["no_decay"]["params"])
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_warm_up_then_decay(name: str) -> None:
    total, warmup = 100, 10
    values = lr_factors(name, total, warmup)
    assert max(values) == pytest.approx(1.0, abs=0.02)
    assert values[0] < 0.2
    assert values[-1] < 0.01
    peak = values.index(max(values))
    assert all(a <= b + 1e-12 for a, b in zip(values[:peak], values[1 : peak + 1]))
    assert all(a >= b - 1e-12 for a, b in zip(values[peak:], values[peak + 1 :]))


def _old_cosine(step: int, total: int, warmup: int) -> float:
    """The hand-written cosine schedule torch's schedulers replaced (linear warmup, cosine to 0)."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _old_onecycle(step: int, total: int, warmup: int) -> float:
    """The hand-written one-cycle schedule: linear ramp from peak/25, cosine down to peak/25/1e4."""
    start, end = 1 / 25, 1 / 25 / 1e4
    warmup = max(1, warmup)
    if step < warmup:
        return start + (1 - start) * step / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + (1 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


@pytest.mark.parametrize("name, old", [("cosine", _old_cosine), ("onecycle", _old_onecycle)])
@pytest.mark.parametrize("total, warmup", [(468 * 6, 468), (100, 10), (10, 0), (10, 1), (10, 2), (7, 7), (1, 0), (1, 1)])
def test_torch_schedules_give_the_hand_written_learning_rates(name, old, total, warmup) -> None:
    expected = [old(s, total, warmup) for s in range(total)]
    assert lr_factors(name, total, warmup) == pytest.approx(expected, rel=0, abs=1e-9)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_train_steps_the_learning_rate_of_the_schedule(small_data: DataBundle, schedule: str) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule=schedule, warmup_epochs=0.5)
    seen: list[float] = []
    train(build_model(TINY), small_data, cfg, progress=lambda s: seen.append(s.lr))
    steps = small_data.steps_per_epoch(32)
    old = {"cosine": _old_cosine, "onecycle": _old_onecycle}[schedule]
    expected = [0.05 * old(s, 2 * steps, round(0.5 * steps)) for s in range(2 * steps)]
    assert seen == pytest.approx(expected, rel=0, abs=1e-9)


# ---------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------


def test_init_model_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    a = init_model(SMALL, seed=1)
    assert torch.equal(torch.rand(2), expected)
    b = init_model(SMALL, seed=1)
    c = init_model(SMALL, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_identity_init_only_touches_identity_blocks() -> None:
    model = build_model(SMALL)
    changed = identity_init(model)
    blocks = [m for m in model.modules() if isinstance(m, RepVGGBlock)]
    with_id = [b for b in blocks if b.identity is not None]
    assert changed == len(with_id) == 3
    for b in blocks:
        if b.identity is not None:
            assert b.conv3x3.bn.weight.abs().sum() == 0 and b.conv1x1.bn.weight.abs().sum() == 0
            assert torch.all(b.identity.bias == 2.0)
        else:
            assert torch.all(b.conv3x3.bn.weight == 1)


def test_identity_init_blocks_start_as_affine_copies() -> None:
    # ReLU(standardized x + 2): nearly nothing is clipped, unlike the default init.
    model = init_model(SMALL, seed=0).train()
    block = model.stages[1][1]
    x = torch.relu(torch.randn(64, block.in_channels, 4, 4))
    y = block(x)
    assert (y == 0).float().mean() < 0.05


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def test_train_beats_chance_on_an_easy_task() -> None:
    data = _colour_bundle()
    model = init_model(TINY.with_num_classes(4), seed=0)
    res = train(model, data, {"epochs": 3, "batch_size": 32, "lr": 0.05})
    assert isinstance(res, TrainResult)
    assert res.epochs == 3 and len(res.history) == 3
    assert res.steps == 3 * data.steps_per_epoch(32)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.seconds > 0 and res.images_per_second > 0
    assert evaluate(model, data) > 0.6  # chance is 0.25


def test_train_reduces_loss_on_synthetic(small_data: DataBundle) -> None:
    model = init_model(TINY, seed=0)
    res = train(model, small_data, {"epochs": 4, "batch_size": 32, "lr": 0.05})
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert all(math.isfinite(h["loss"]) for h in res.history)


def test_train_is_deterministic_for_a_seed(small_data: DataBundle) -> None:
    def run(seed: int) -> tuple[TrainResult, dict[str, torch.Tensor]]:
        model = init_model(SMALL, seed=seed)
        cfg = {"epochs": 1, "batch_size": 32, "seed": seed}
        return train(model, small_data, cfg), model.state_dict()

    (r1, s1), (r2, s2), (r3, s3) = run(0), run(0), run(1)
    assert r1.final_loss == r2.final_loss
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1.final_loss != r3.final_loss
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)  # another seed, another net


@pytest.mark.parametrize("via_disk", [False, True])
def test_stopped_and_resumed_run_equals_one_run(small_data: DataBundle, tmp_path, via_disk: bool) -> None:
    """The rungs of a multi-fidelity search continue a run: pausing after epoch 1 (and 2) changes nothing."""
    cfg = {"epochs": 3, "batch_size": 32, "seed": 3, "warmup_epochs": 0.5}
    whole = init_model(SMALL, seed=3)
    r_whole = train(whole, small_data, cfg)
    assert r_whole.state is None
    model = init_model(SMALL, seed=3)
    r = train(model, small_data, cfg, stop_epoch=1)
    assert r.epochs == 1 and r.state is not None and r.state.epoch == 1
    for stop in (2, 3):
        state = r.state
        if via_disk:  # what a rung checkpoint stores, read back as a checkpoint is
            torch.save({"state": state.to_dict(), "model": model.state_dict()}, tmp_path / "rung.pt")
            back = torch.load(tmp_path / "rung.pt", weights_only=True)
            state = TrainState.from_dict(back["state"])
            model = init_model(SMALL, seed=99)
            model.load_state_dict(back["model"])
        r = train(model, small_data, cfg, resume=state, stop_epoch=stop)
    assert r.epochs == 3 and r.steps == r_whole.steps and r.state is None
    assert r.final_loss == r_whole.final_loss
    assert [h["loss"] for h in r.history] == [h["loss"] for h in r_whole.history]
    got, want = model.state_dict(), whole.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_resume_refuses_a_finished_piece(small_data: DataBundle) -> None:
    cfg = {"epochs": 2, "batch_size": 32}
    model = init_model(SMALL, seed=0)
    r = train(model, small_data, cfg, stop_epoch=1)
    with pytest.raises(ValueError, match="already did 1 epoch"):
        train(model, small_data, cfg, resume=r.state, stop_epoch=1)
    with pytest.raises(ValueError, match="stop_epoch must be in 1..2"):
        train(model, small_data, cfg, stop_epoch=3)


def test_huge_lr_raises_divergence_error(small_data: DataBundle) -> None:
    model = init_model(SMALL, seed=0)
    cfg = {"epochs": 2, "batch_size": 32, "lr": 1e6, "max_grad_norm": 0, "warmup_epochs": 0}
    with pytest.raises(DivergenceError, match=r"non-finite loss at epoch \d+ step \d+") as info:
        train(model, small_data, cfg)
    err = info.value
    assert isinstance(err, RuntimeError) and not isinstance(err, RepVGGNasError)
    assert err.reason == str(err) and err.epoch >= 1 and err.step >= 1


class _NaNAfter(nn.Module):
    """Wraps a model and returns NaN logits from the ``after``-th forward on (1-based)."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.inner(x)
        return out * float("nan") if self.calls >= self.after else out


def test_injected_nan_names_exact_epoch_and_step(small_data: DataBundle) -> None:
    steps = small_data.steps_per_epoch(32)  # 5
    model = _NaNAfter(build_model(TINY), after=steps + 2)  # epoch 2, step 2
    with pytest.raises(DivergenceError) as info:
        train(model, small_data, {"epochs": 3, "batch_size": 32})
    assert str(info.value) == "non-finite loss at epoch 2 step 2"
    assert (info.value.epoch, info.value.step) == (2, 2)
    assert len(info.value.history) == 1  # the completed first epoch is kept


def test_head_smaller_than_dataset_is_config_error(small_data: DataBundle) -> None:
    model = build_model(TINY.with_num_classes(5))
    with pytest.raises(ConfigError, match="5 classes"):
        train(model, small_data, {"epochs": 1})


def test_channel_mismatch_is_config_error(small_data: DataBundle) -> None:
    model = build_model(RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=10, in_channels=1))
    with pytest.raises(ConfigError, match="1 input channels"):
        train(model, small_data, {"epochs": 1})


def test_progress_bar_runs(small_data: DataBundle, capsys: pytest.CaptureFixture[str]) -> None:
    with StepBar(position=1) as bar:
        train(build_model(TINY), small_data, {"epochs": 1, "batch_size": 32}, progress=bar, desc="t")
    assert "t ep 1/1" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def test_evaluate_train_and_deploy_form_agree(small_data: DataBundle) -> None:
    model = init_model(SMALL, seed=0)
    train(model, small_data, {"epochs": 1, "batch_size": 32})
    model.train()
    acc = evaluate(model, small_data, batch_size=25)
    assert model.training  # mode restored
    fused = reparameterize(model)
    fused_acc = evaluate(fused, small_data, batch_size=64)
    assert fused_acc == pytest.approx(acc, abs=1 / small_data.val_size + 1e-9)
    assert 0.0 <= acc <= 1.0
    assert 0.0 <= evaluate(model, small_data, split="train") <= 1.0
    with pytest.raises(ConfigError):
        evaluate(model, small_data, split="test")
