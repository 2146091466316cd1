"""The pool sampler: its expected gain, what it never proposes, and a pooled search that uses it."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from repvgg_nas.attrs import SPEC, STUDY_POOL
from repvgg_nas.cli import run_cli
from repvgg_nas.prescreen import POOL_RANK, PoolSampler, macs_stand_in, prescreen
from repvgg_nas.search.__main__ import main as search_main
from repvgg_nas.stats import ehvi, improvement
from repvgg_nas.study import load_space

from .helpers import TINY_SPACE, write_tiny_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("d", [2, 3])
def test_the_closed_form_gain_equals_a_monte_carlo_estimate(d):
    """On random fronts, the exact expected improvement agrees with sampling the accuracy (within 1 %)."""
    rng = np.random.default_rng(d)
    checked = 0
    for _ in range(12):
        front = [(rng.uniform(0.3, 0.8), rng.uniform(50, 500), *(-rng.uniform(1, 3, d - 2))) for _ in range(5)]
        reference = (0.3, 0.0, *([-4.0] * (d - 2)))
        known = (rng.uniform(50, 600), *([-2.0] * (d - 2)))
        mean, sd = rng.uniform(0.4, 0.8), rng.uniform(0.01, 0.08)
        exact = ehvi(front, reference, known, mean, sd)
        ys = rng.normal(mean, sd, 20_000 if d == 2 else 4_000)
        mc = float(np.mean([improvement(front, reference, (y, *known)) for y in ys]))
        if mc > 1e-3 * (known[0] * 0.1):  # a gain too small to compare in relative terms is skipped
            se = float(np.std([improvement(front, reference, (y, *known)) for y in ys[:2000]])) / np.sqrt(len(ys))
            assert abs(exact - mc) <= max(0.01 * mc, 3 * se), (exact, mc, se)
            checked += 1
    assert checked >= 6
    assert ehvi([(0.7, 100.0)], (0.5, 0.0), (50.0,), 0.6, 0.0) == 0.0  # dominated for sure: nothing to gain
    assert ehvi([], (0.5, 0.0), (50.0,), 0.6, 0.0) == pytest.approx(0.1 * 50.0)


@pytest.fixture
def pooled(tmp_path):
    """An in-memory study holding the pool of the tiny space (speeds from a MACs stand-in)."""
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    space = load_space(tmp_path / "space.toml")
    pool = prescreen(space, predict_throughput=macs_stand_in(32), reference_throughput=0.0, num_classes=10,
                     in_channels=3, min_pool_size=16).pool
    study = optuna.create_study(directions=["maximize", "maximize"])
    study.set_user_attr(STUDY_POOL, pool.to_dict())
    return study, space, pool


def _draw(study, sampler, n):
    study.sampler = sampler
    trial = study.ask()
    return trial, trial.suggest_int(POOL_RANK, 0, n - 1)


def _finish(study, trial, space, pool, rank, rng):
    spec = space.build(pool.members[rank].params, 10, 3)
    trial.set_user_attr(SPEC, spec.to_dict())
    study.tell(trial, [float(rng.uniform(0.3, 0.6)), pool.members[rank].throughput])


def test_it_never_proposes_a_trained_or_pending_member(pooled):
    study, space, pool = pooled
    n, rng = len(pool), np.random.default_rng(0)
    a, b = PoolSampler(space, seed=1), PoolSampler(space, seed=2)  # two workers on one study
    drawn = []
    for step in range(n):
        trial, rank = _draw(study, a if step % 2 else b, n)
        assert rank not in drawn, (step, rank, drawn)
        drawn.append(rank)
        if step % 3 != 2:  # every third stays running while the next is drawn: pending, not free
            _finish(study, trial, space, pool, rank, rng)
    assert sorted(drawn) == list(range(n))
    choice = a.why(1)
    assert choice is not None and choice.rank == drawn[1] and choice.sd > 0 and choice.gain >= 0


def test_with_a_known_front_it_prefers_the_member_that_can_extend_it(pooled):
    """A member slower than a front net it cannot beat in accuracy gains nothing; the fastest free one does."""
    study, space, pool = pooled
    n, rng = len(pool), np.random.default_rng(0)
    sampler = PoolSampler(space, seed=0)
    for _ in range(3):
        trial, rank = _draw(study, sampler, n)
        _finish(study, trial, space, pool, rank, rng)
    trial, rank = _draw(study, sampler, n)
    assert sampler.why(trial.number).gain > 0


def test_a_pooled_search_with_the_pool_sampler_records_why(tmp_path):
    tail = "[prescreen]\nenabled = true\nn = 200\nmin_pool_size = 6\n[sampler]\nname = \"pool\"\n"
    path = write_tiny_study(tmp_path, 4, tail=tail)
    from repvgg_nas.search import load_study_config, run_search

    res = run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False)
    ranks = [t.params[POOL_RANK] for t in res.study.trials]
    assert len(set(ranks)) == len(ranks) == 4  # never the same member twice
    assert all(t.user_attrs["predicted_accuracy_sd"] > 0 for t in res.study.trials)
    assert res.trials["expected_hypervolume_gain"].notna().all()
    assert isinstance(res.study.sampler, PoolSampler)


def test_the_pool_sampler_needs_a_pool(tmp_path, capsys):
    path = write_tiny_study(tmp_path, 2, tail='[sampler]\nname = "pool"\n')
    assert run_cli(search_main, ["--study", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "name = 'pool'" in err and "[prescreen] enabled = true" in err and err.count("\n") == 1
