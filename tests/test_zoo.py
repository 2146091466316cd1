from __future__ import annotations

import math

import pytest

from repvgg_nas import UnknownNameError, complexity, zoo

WITH_PAPER_FIGURES = [n for n in zoo.list_names() if zoo.get_entry(n).paper_params_m is not None]


def test_zoo_lists_the_paper_configs():
    expected = {"A0", "A1", "A2", "B0", "B1", "B1g2", "B1g4", "B2", "B2g2", "B2g4", "B3", "B3g2", "B3g4", "D2se"}
    assert {n.removeprefix("RepVGG-") for n in zoo.list_names()} == expected
    assert len(WITH_PAPER_FIGURES) == 11


@pytest.mark.parametrize("name", WITH_PAPER_FIGURES)
def test_params_and_macs_equal_the_paper(name):
    entry = zoo.get_entry(name)
    c = complexity(zoo.get(name), resolution=224)
    # The paper truncates params to 2 decimals (A0: 8,309,384 -> 8.30) and rounds GMACs to 1.
    assert math.floor(c.params / 1e4) / 100 == pytest.approx(entry.paper_params_m)
    assert round(c.macs / 1e9, 1) == pytest.approx(entry.paper_gmacs)


@pytest.mark.parametrize("alias", ["A0", "RepVGG-A0", "repvgg_a0", "repvgg-a0"])
def test_aliases(alias):
    assert zoo.get(alias) == zoo.get("RepVGG-A0")


def test_unknown_name_names_close_matches():
    with pytest.raises(UnknownNameError) as e:
        zoo.get("B1g3")
    assert "RepVGG-B1g4" in str(e.value) and "'B1g3'" in str(e.value)


def test_groupwise_variants_have_fewer_params():
    assert complexity(zoo.get("B1g4")).params < complexity(zoo.get("B1g2")).params < complexity(zoo.get("B1")).params
