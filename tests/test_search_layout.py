"""The shape of ``repvgg_nas/search/`` that keeps it readable, checked from the source (AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import repvgg_nas

SEARCH = Path(repvgg_nas.__file__).resolve().parent / "search"
MODULES = sorted(SEARCH.glob("*.py"))
MAX_FUNCTION_LINES = 60  # docstring included
MAX_CLI_LINES = 150


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_function_in_search_is_longer_than_a_screen(path):
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(_tree(path))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: {', '.join(long)}"


def test_the_search_cli_is_thin():
    lines = len((SEARCH / "__main__.py").read_text(encoding="utf-8").splitlines())
    assert lines < MAX_CLI_LINES, f"search/__main__.py has {lines} lines"


def _names(node: ast.expr) -> set[str]:
    return {t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "")
            for t in (node.elts if isinstance(node, ast.Tuple) else [node])}


def _handled(tree: ast.Module) -> set[str]:
    """Exception names the module catches (``except``) or tells apart (``isinstance``)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            out |= _names(node.type)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            out |= _names(node.args[1])
    return out


def test_one_module_maps_how_a_trial_ended():
    """Only the worker loop catches what ends a trial (Optuna's TrialPruned, Ctrl-C, a pause by the budget)."""
    ends = {"TrialPruned", "Stopped", "TimeBudgetPaused", "KeyboardInterrupt"}
    where = {p.name for p in MODULES if _handled(_tree(p)) & ends}
    assert where <= {"loop.py", "run.py", "workers.py", "__main__.py"}, where  # Ctrl-C of a whole run, not a trial
    assert {p.name for p in MODULES if _handled(_tree(p)) & {"TrialPruned", "Stopped", "TimeBudgetPaused"}} == {
        "loop.py"}


def test_no_code_reads_a_reason():
    """Reasons (``fail_reason``, ``prune_reason``) are text for people: no prefix test or split on them."""
    package = SEARCH.parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("startswith", "partition", "rpartition", "split"):
                text = ast.unparse(node.func.value)
                if "reason" in text:
                    found.append(f"{path.relative_to(package)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
