"""The objective table: one row per optimized figure, read by every layer."""

from __future__ import annotations

import pytest

from repvgg_nas import attrs
from repvgg_nas.errors import UnknownNameError
from repvgg_nas.objectives import (
    ACCURACY, BASE_OBJECTIVES, EXTRA_OBJECTIVES, PEAK_MEMORY, THROUGHPUT, Objective, names, objectives_for,
)

ALL = list(BASE_OBJECTIVES) + [EXTRA_OBJECTIVES.get(n) for n in EXTRA_OBJECTIVES]


def test_base_objectives_come_first_in_optuna_value_order():
    assert objectives_for() == (ACCURACY, THROUGHPUT)
    assert objectives_for(["peak_memory_mb"]) == (ACCURACY, THROUGHPUT, PEAK_MEMORY)
    assert objectives_for(["PEAK_MEMORY_MB", "peak_memory_mb"]) == (ACCURACY, THROUGHPUT, PEAK_MEMORY)
    assert names(objectives_for(["peak_memory_mb"])) == ("accuracy", "throughput", "peak_memory_mb")


def test_unknown_extra_objective_names_the_close_match():
    with pytest.raises(UnknownNameError, match="peak_memory_mb"):
        objectives_for(["peak_memory"])


@pytest.mark.parametrize("obj", ALL, ids=lambda o: o.name)
def test_each_objective_has_its_own_attr_and_column(obj):
    assert obj.attr in vars(attrs).values()  # spelled through attrs, one home per key
    assert [o.column for o in ALL].count(obj.column) == 1
    assert [o.attr for o in ALL].count(obj.attr) == 1
    assert obj.sign * (2.0 if obj.direction == "maximize" else -2.0) == 2.0


def test_show_uses_the_format_and_unit():
    assert ACCURACY.show(0.71234) == "0.712"
    assert THROUGHPUT.show(1234.4) == "1234 img/s"
    assert PEAK_MEMORY.show(61.26) == "61.3 MB"


def test_direction_is_checked():
    with pytest.raises(ValueError, match="direction"):
        Objective("x", "x", "up", "", "x", "x", ".1f", "x")


def _energy_j(net) -> float:
    """A toy measured objective: joules per image at an assumed 15 W over the measured batch latency."""
    return net.measurement.latency_ms / 1000.0 * 15.0 / net.settings.batch_size


@pytest.fixture
def energy():
    """``energy_j`` registered as an extra objective for one test: one row plus its measurement function."""
    row = EXTRA_OBJECTIVES.register("energy_j", Objective(
        "energy_j", "energy J", "minimize", "J", "energy_j", "energy_j", ".4f", "energy per image",
        measure=_energy_j))
    yield row
    EXTRA_OBJECTIVES.unregister("energy_j")


def test_a_new_measured_objective_is_a_table_row(energy, tmp_path):
    """A row with a measure hook is optimized end to end: Optuna's values, the trial attrs, the CSVs, the
    front, the rung decisions, with no other code naming it."""
    import pandas as pd

    from repvgg_nas.search import load_study_config, rung_records, run_search

    from .helpers import write_tiny_study

    tail = '[objectives]\nextra = ["energy_j"]\n[fidelity]\nrungs = 2\nreduction_factor = 2\n'
    path = write_tiny_study(tmp_path, n=3, epochs=2, tail=tail)
    res = run_search(load_study_config(path), reports_dir=tmp_path / "reports", progress=False)
    study = res.study
    assert study.metric_names == ["accuracy", "images/s", "energy J"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done
    for t in done:
        assert t.values[2] == pytest.approx(t.user_attrs["energy_j"])
        assert t.values[2] == pytest.approx(t.user_attrs["latency_ms"] / 1000.0 * 15.0 / 2)  # batch_size 2
    assert all(len(rung_records(t)) >= 1 for t in study.trials if t.state.name in ("COMPLETE", "PRUNED"))
    trials = pd.read_csv(tmp_path / "reports" / "tiny" / "trials.csv")
    assert "energy_j" in trials.columns and trials["energy_j"].notna().sum() == len(done)
    pareto = pd.read_csv(tmp_path / "reports" / "tiny" / "pareto.csv")
    assert "energy_j" in pareto.columns


def test_a_rung_decision_reads_every_objective_in_the_table(energy):
    """Promotion takes the objectives from the table: a faster, more accurate result that costs more energy
    does not dominate."""
    from repvgg_nas.study.promotion import RungResult, dominating

    table = (ACCURACY, THROUGHPUT, energy)
    me = RungResult(1, (0.50, 100.0, 0.010))
    assert dominating(me, [RungResult(2, (0.60, 120.0, 0.020))], objectives=table) is None
    assert dominating(me, [RungResult(2, (0.60, 120.0, 0.005))], objectives=table).trial == 2
    assert dominating(me, [RungResult(2, (0.60, 120.0, 0.020))]) is not None  # without energy it would stop it
