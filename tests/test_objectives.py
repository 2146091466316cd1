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
