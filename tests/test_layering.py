"""Import layering of the package, read from the source (AST), type-only and function-level imports included.

The graph has one node per module (a package is its ``__init__``). An edge
is an explicit import: ``from . import x`` and ``from .pkg import x`` point at
the submodule ``pkg.x`` when there is one, else at the module or package
named; a submodule does not implicitly import its parent packages (that
would make every module reach ``repvgg_nas/__init__``, which imports all).
Rules that follow edges transitively never pass through the top-level
``repvgg_nas`` package, which re-exports everything by design.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

import repvgg_nas

ROOT = Path(repvgg_nas.__file__).resolve().parent
TOP = "repvgg_nas"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _target(name: str) -> str | None:
    """The known module ``name`` names, or the longest known prefix of it (inside the package only)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        else:
            continue
        for name in names:
            if name == TOP or name.startswith(TOP + "."):
                target = _target(name)
                if target is not None and target != module:
                    out.add(target)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _outside_imports(path: Path) -> set[str]:
    """Top-level names of the packages outside ours a module imports (``optuna`` for ``optuna.trial``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.partition(".")[0])
    out.discard(TOP)
    return out


OUTSIDE = {m: _outside_imports(p) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(c)) for c in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)  # pragma: no cover - a component always has a cycle


def _in(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _chains_to(sources: Iterable[str], is_target: Callable[[str], bool], cli: bool = True) -> list[list[str]]:
    """For each module under ``sources``, the shortest import chain to a module ``is_target`` accepts (the
    source itself included). ``cli=False`` leaves out the sources' ``__main__`` modules: a CLI is a leaf above
    every package."""
    src = [f"{TOP}.{s}" for s in sources]
    found = []
    for start in sorted(m for m in GRAPH if _in(m, src) and (cli or not m.endswith(".__main__"))):
        paths = {start: [start]}
        frontier = [start]
        hit = [start] if is_target(start) else None
        while frontier and hit is None:
            nxt = []
            for v in frontier:
                for w in sorted(GRAPH[v]):
                    if w in paths or w == TOP:
                        continue
                    paths[w] = paths[v] + [w]
                    if is_target(w):
                        hit = paths[w]
                        break
                    nxt.append(w)
                if hit:
                    break
            frontier = nxt
        if hit:
            found.append(hit)
    return found


def _forbidden_chains(sources: Iterable[str], targets: Iterable[str], cli: bool = True) -> list[str]:
    """For each module under ``sources``, the shortest import chain to a module under ``targets``."""
    dst = [f"{TOP}.{t}" for t in targets]
    return [" -> ".join(c) for c in _chains_to(sources, lambda m: _in(m, dst), cli)]


def _outside_chains(sources: Iterable[str], package: str) -> list[str]:
    """For each module under ``sources``, the shortest import chain to a module that imports ``package``."""
    return [" -> ".join(c) + f" (imports {package})" for c in _chains_to(sources, lambda m: package in OUTSIDE[m])]


def test_the_graph_sees_type_only_and_function_level_imports():
    # measure.settings imports the runtime registry; objective imports runtime_accuracy's module.
    assert f"{TOP}.measure.runtimes" in GRAPH[f"{TOP}.measure.settings"]
    assert f"{TOP}.model" in GRAPH[f"{TOP}.train"]  # also imported inside identity_init
    assert all(isinstance(v, set) for v in GRAPH.values()) and len(GRAPH) > 40
    assert "optuna" in OUTSIDE[f"{TOP}.storage"] and "torch" in OUTSIDE[f"{TOP}.model"]


def test_no_import_cycle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# (rule, sources, targets, whether the sources' CLIs are held to it too)
RULES = [
    ("search never imports report (its CLI registers the page)", ["search"], ["report"], False),
    ("stats imports neither search nor report", ["stats"], ["search", "report"], True),
    ("stats imports neither the storage nor the study reader", ["stats"], ["storage", "study_frames"], True),
    ("prune imports neither search nor study", ["prune"], ["search", "study"], True),
    ("measure imports neither data nor train", ["measure"], ["data", "train"], True),
    ("train does not import measure", ["train"], ["measure"], True),
]


@pytest.mark.parametrize("rule, sources, targets, cli", RULES, ids=[r[0] for r in RULES])
def test_layer_rule(rule, sources, targets, cli):
    chains = _forbidden_chains(sources, targets, cli)
    assert not chains, f"{rule}, but:\n" + "\n".join(chains)


OUTSIDE_RULES = [
    # The statistics work on plain frames and arrays: reading a study is study_frames' job.
    ("stats does not import optuna", ["stats"], "optuna"),
]


@pytest.mark.parametrize("rule, sources, package", OUTSIDE_RULES, ids=[r[0] for r in OUTSIDE_RULES])
def test_outside_import_rule(rule, sources, package):
    chains = _outside_chains(sources, package)
    assert not chains, f"{rule}, but:\n" + "\n".join(chains)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_public_name_exists(module):
    """Each name a module lists in ``__all__`` is defined there (``from m import *`` would fail otherwise)."""
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names undefined {missing}"


_TEXT_PARSERS = frozenset({"startswith", "endswith", "partition", "rpartition", "split", "rsplit", "removeprefix"})


def _reason_parsing(path: Path) -> list[str]:
    """Calls that take a trial's reason apart: a string method that parses, on an expression naming a reason."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _TEXT_PARSERS:
            receiver = ast.unparse(node.func.value)
            if "reason" in receiver.lower():
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_parses_a_reason():
    """Reasons are text for people: what a trial is and how it ended are read from its role, outcome and rung
    records (lifecycle), never from the words of ``fail_reason``/``prune_reason``."""
    found = [hit for p in MODULES.values() for hit in _reason_parsing(p)]
    assert not found, "reasons parsed:\n" + "\n".join(found)
