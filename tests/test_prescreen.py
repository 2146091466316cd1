"""The zero-cost pre-screen: proxies by name, analytic counts, the pool and its guarantees."""

from __future__ import annotations

import hashlib
import json
import math
import random

import optuna
import pytest
import torch

from repvgg_nas import zoo
from repvgg_nas.counting import complexity
from repvgg_nas.errors import ConfigError
from repvgg_nas.prescreen import (
    PROXIES,
    Pool,
    ProxyInputs,
    deploy_macs,
    deploy_params,
    macs_stand_in,
    prescreen,
    select_pool,
)
from repvgg_nas.spec import RepVGGSpec
from repvgg_nas.stats import dominates
from repvgg_nas.study import load_space

TINY = RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.25, 0.5, groupwise="even", g=2, num_classes=4)


def _noisy_speed(seed: int):
    """A stand-in predictor that is not a function of MACs alone, so the front is not one line."""

    def predict(spec: RepVGGSpec) -> float:
        jitter = int(hashlib.sha256(f"{seed}{spec.hash}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return 1e9 / deploy_macs(spec, 224) * (0.5 + jitter)

    return predict


@pytest.mark.parametrize("name", PROXIES.list())
def test_every_proxy_scores_a_tiny_net(name):
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    inputs = ProxyInputs(resolution=16, images=images, seed=0)
    first = PROXIES.get(name)(TINY, inputs)
    assert isinstance(first, float) and math.isfinite(first)
    assert PROXIES.get(name)(TINY, inputs) == first  # seeded


def test_data_proxy_without_data_is_refused():
    with pytest.raises(ConfigError, match="naswot"):
        PROXIES.get("naswot")(TINY, ProxyInputs(resolution=16))


@pytest.mark.parametrize(
    "spec",
    [TINY, zoo.get("A0", num_classes=10), zoo.get("B1g4"), TINY.replace(use_se=True)],
    ids=["tiny", "A0", "B1g4", "se"],
)
@pytest.mark.parametrize("resolution", [32, 224])
def test_analytic_counts_equal_complexity(spec, resolution):
    ref = complexity(spec, resolution)
    assert (deploy_params(spec), deploy_macs(spec, resolution)) == (ref.params, ref.macs)


def test_space_values_are_what_optuna_would_suggest():
    space = load_space("a_family")
    all_values = list(space.enumerate_values())
    assert len(all_values) == space.size()
    rng = random.Random(0)
    for _ in range(20):
        values = space.sample_values(rng)
        assert set(values) == {d.name for d in space.dims() if not d.fixed}
        assert space.build(values, 10) == space.sample(optuna.trial.FixedTrial(values), 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_pool_size", [1, 12])
def test_pool_front_is_never_dominated_by_a_scored_net(seed, min_pool_size):
    space = load_space("quick")
    predict = _noisy_speed(seed)
    specs = {s.hash: s for s in (space.build(v, 10) for v in space.enumerate_values())}
    speeds = sorted(predict(s) for s in specs.values())
    ref = speeds[len(speeds) // 4]
    res = prescreen(space, predict_throughput=predict, reference_throughput=ref, num_classes=10,
                    min_pool_size=min_pool_size, seed=seed)
    assert res.scored == len(specs)
    scored = [{"accuracy": float(deploy_params(s)), "throughput": predict(s)} for s in specs.values()]
    front = [m for m in res.pool if m.layer == 0]
    assert len(front) == res.front_size >= 1
    for m in res.pool:
        assert m.throughput > ref
        assert space.build(m.params, 10).hash == m.spec_hash
    for m in front:
        point = {"accuracy": m.proxy, "throughput": m.throughput}
        assert not any(dominates(other, point) for other in scored)
    if min_pool_size == 1:
        assert len(res.pool) == res.front_size  # the whole front, nothing more
    else:
        assert len(res.pool) >= min(min_pool_size, res.faster_than_reference)


def test_select_pool_adds_layers_and_thins_the_last_evenly():
    # Three layers of 3 points each on the anti-diagonal; pool of 5: layer 0 whole, 2 of layer 1.
    proxy = [3, 2, 1, 2.5, 1.5, 0.5, 2, 1, 0]
    speed = [1, 2, 3, 1, 2, 3, 1, 2, 3]
    idx, layers = select_pool(proxy, speed, 5)
    assert sorted(idx[layers == 0]) == [0, 1, 2]
    assert sorted(idx[layers == 1]) == [3, 5]  # the two ends of the speed range


def test_a_family_is_scored_whole_in_seconds():
    space = load_space("a_family")
    predict = macs_stand_in(224)
    res = prescreen(space, predict_throughput=predict, reference_throughput=predict(zoo.get("A1", num_classes=10)),
                    num_classes=10)
    assert res.scored == len({space.build(v, 10).hash for v in space.enumerate_values()})  # all distinct nets
    assert res.seconds < 60
    assert res.pool.settings.speed_source == "macs_stand_in(224)"


def test_a_larger_space_is_sampled_to_n_distinct_nets():
    space = load_space("a_family")
    predict = macs_stand_in(224)
    res = prescreen(space, predict_throughput=predict, reference_throughput=0.0, num_classes=10, n=300, seed=3)
    assert res.scored == 300
    assert len({m.spec_hash for m in res.pool}) == len(res.pool)


def test_pool_json_round_trip():
    space = load_space("quick")
    res = prescreen(space, predict_throughput=_noisy_speed(0), reference_throughput=0.0, num_classes=10,
                    min_pool_size=8)
    stored = json.loads(json.dumps(res.pool.to_dict()))
    assert Pool.from_dict(stored) == res.pool
    assert [s.hash for s in Pool.from_dict(stored).specs(space)] == [m.spec_hash for m in res.pool]
    with pytest.raises(ConfigError, match="format"):
        Pool.from_dict({**stored, "format": 99})


def test_no_net_faster_than_the_reference_is_one_line():
    space = load_space("quick")
    predict = macs_stand_in(224)
    fastest = max(predict(space.build(v, 10)) for v in space.enumerate_values())
    with pytest.raises(ConfigError) as err:
        prescreen(space, predict_throughput=predict, reference_throughput=fastest, num_classes=10)
    msg = str(err.value)
    assert "\n" not in msg and "'quick'" in msg and f"{fastest:.4g}" in msg


def test_prescreen_refuses_a_data_proxy():
    with pytest.raises(ConfigError, match="needs data"):
        prescreen(load_space("quick"), predict_throughput=macs_stand_in(), reference_throughput=0.0,
                  num_classes=10, proxy="naswot")


@pytest.mark.parametrize("study, proxy, n, ok", [
    ("a_family", "synflow", 10_000, False), ("a_family", "synflow", 300, True), ("a_family", "synflow", 500, False),
    ("quick", "synflow", 10_000, True), ("a_family", "params", 1_000_000, True),
])
def test_a_proxy_too_slow_for_the_nets_it_scores_is_refused_up_front(study, proxy, n, ok):
    """A pre-screen runs before the search's budget: one that would take hours is refused in one line. It scores
    at most the space's nets: synflow over quick's few dozen is fine."""
    from repvgg_nas.errors import ConfigError
    from repvgg_nas.study import load_study_config

    overrides = {"prescreen.enabled": True, "prescreen.proxy": proxy, "prescreen.n": n}
    if ok:
        assert load_study_config(study, overrides).prescreen.proxy == proxy
    else:
        with pytest.raises(ConfigError, match=r"prescreen\.proxy.*would take about .* h; set prescreen\.n <="):
            load_study_config(study, overrides)
