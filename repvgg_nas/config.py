"""Up-front validation of TOML config files (DESIGN convention 7).

Every problem names the file, the dotted key, the bad value and what is
allowed, and is raised as :class:`ConfigError` before any work starts.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError, RepVGGNasError

__all__ = [
    "find_config", "find_study", "BUILTIN_CONFIG_ROOT", "load_toml", "Table", "Wording", "HOUSE_WORDING",
    "Override", "apply_overrides", "blame_override", "build_table",
]

_MISSING = object()

_PACKAGE = Path(__file__).resolve().parent


# The built-in studies/ and search_spaces/ (links to the repo's top-level folders,
# so a wheel ships them inside the package and a checkout reads them in place).
BUILTIN_CONFIG_ROOT = _PACKAGE / "builtin"


def find_config(name_or_path: str, folder: str, what: str) -> Path:
    """Resolve ``name`` to ``<folder>/<name>.toml`` or accept an explicit ``.toml`` path.

    A file in the current directory's ``<folder>/`` wins over the built-in one,
    so a user can shadow a shipped study. Names may not contain path separators or ``..``.
    """
    p = Path(name_or_path)
    if name_or_path.endswith(".toml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{what} file {name_or_path!r} does not exist")
        return p
    if not name_or_path or "/" in name_or_path or "\\" in name_or_path or ".." in name_or_path or name_or_path.startswith("."):
        raise ConfigError(f"{what} name {name_or_path!r} is invalid: use a plain name or a path to a .toml file")
    roots = [Path.cwd() / folder, BUILTIN_CONFIG_ROOT / folder]
    for root in roots:
        candidate = root / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({f.stem for r in roots if r.is_dir() for f in r.glob("*.toml")})
    close = difflib.get_close_matches(name_or_path, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known) or 'none'}"
    raise ConfigError(f"unknown {what} {name_or_path!r}; {hint}")


def find_study(name_or_path: str | os.PathLike) -> Path:
    """The study file ``studies/NAME.toml`` (or a path), its stem checked: the stem is the study's name and
    its folder ``reports/<name>/``, so it must stay inside ``reports/``.

    Here, below ``study`` and ``prune``, so the prune CLI can read a study's
    tables without the study package (which imports ``prune``).
    """
    path = find_config(str(name_or_path), "studies", "study")
    if path.stem in ("", ".", "..") or path.stem.startswith(".") or "\\" in path.stem:
        raise ConfigError(f"{path}: study name {path.stem!r} is invalid: rename the file to a plain name")
    return path


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


class Override(NamedTuple):
    """One setting given on the command line, applied to a raw config table before it is validated.

    ``key`` is dotted (``data.root``, ``seed``); ``flag`` is what set it
    (``--data``), named in the error when the value makes the config invalid.
    """

    key: str
    value: Any
    flag: str


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """A deep copy of ``raw`` with every override's dotted key set (sub-tables made as needed).

    The result is validated like the file itself, so a flag is held to the
    same rules as the key it sets. A key whose parent is not a table is left
    to that validation (the file's own error names it).
    """
    out = copy.deepcopy(dict(raw))
    for o in overrides:
        *parents, leaf = o.key.split(".")
        table: Any = out
        for p in parents:
            table = table.setdefault(p, {})
            if not isinstance(table, dict):
                break
        else:
            table[leaf] = o.value
    return out


def blame_override(error: ConfigError, overrides: Iterable[Override]) -> ConfigError:
    """``error`` led by the flag (and value) of the override whose key it names; else ``error`` itself."""
    msg = str(error)
    for o in overrides:
        if re.search(rf"(?<![\w.]){re.escape(o.key)}(?!\w)", msg):
            return ConfigError(f"{o.flag} {o.value!r}: {msg}")
    return error


def build_table(source: str, table: str, build: Callable[[Any], Any], raw: Any) -> Any:
    """``build(raw)``: a module's ``from_dict`` run on one table of a config file, its error led by the file
    (``source``, e.g. ``"studies/x.toml: "``) and, unless it names it already, the table."""
    try:
        return build(raw)
    except RepVGGNasError as e:
        msg = str(e)
        prefix = "" if msg.startswith(f"{table}.") or msg.startswith(table) else f"[{table}] "
        raise ConfigError(f"{source}{prefix}{msg}") from None


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a {...} table"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


class Wording(NamedTuple):
    """How a :class:`Table` words its errors: one ``str.format`` template per kind of problem.

    Every template may use ``{source}`` (the file, with its ``": "``),
    ``{key}`` (dotted), ``{value}`` (the bad value's repr) and ``{expected}``
    (what is allowed: a type, a bound, a phrase); ``not_allowed`` also gets
    ``{choices}`` (``a, b``) and ``{choices_list}`` (``['a', 'b']``),
    ``other`` gets ``{message}``, and ``unknown`` gets ``{table}``,
    ``{scope}``, ``{allowed}`` (``a, b``), ``{allowed_list}`` and
    ``{unknown_list}``. A package whose other messages (e.g. a registry's)
    take another form words its table the same way, so a user sees one form
    per table.
    """

    wrong_type: str
    not_finite: str
    out_of_range: str
    not_allowed: str
    invalid: str
    other: str
    unknown: str


HOUSE_WORDING = Wording(
    wrong_type="{source}{key}: must be {expected}, got {value}",
    not_finite="{source}{key}: must be a finite number, got {value}",
    out_of_range="{source}{key}: {value} is out of range; must be {expected}",
    not_allowed="{source}{key}: {value} is not allowed; choose from {choices_list}",
    invalid="{source}{key}: {value} is invalid; {expected}",
    other="{source}{key}: {message}",
    unknown="{source}{key}: unknown key; allowed keys {scope}: {allowed}",
)


def _bound(limit: float, open_: bool, below: bool) -> str:
    """``>= 1``, ``> 0``, ``<= 1``, ``< 1``: the bound a value broke."""
    return f"{('>' if below else '<') + ('' if open_ else '=')} {limit}"


class Table:
    """A view of one TOML table that tracks which keys were read.

    ``get`` validates type and range; ``finish`` rejects keys nobody read, so
    a typo such as ``epoch = 3`` is an error rather than a silent default.
    Every error names the file (``source``), the dotted key, the bad value
    and what is allowed, worded by ``wording`` (:data:`HOUSE_WORDING` unless a
    package words its table otherwise).
    """

    def __init__(
        self, data: Mapping[str, Any], where: str, source: str = "", wording: Wording = HOUSE_WORDING
    ) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}{where or 'top level'}: expected a table, got {data!r}")
        self.data = dict(data)
        self.where = where
        self.source = source
        self.wording = wording
        self._read: set[str] = set()

    @classmethod
    def of(cls, obj: Any, where: str) -> Table:
        """A view of a config dataclass's own fields, for its ``__post_init__`` to check with :meth:`get`.

        A field set to ``None`` reads as absent, so an optional one is checked
        as ``get(name, int, None, min=1)``.
        """
        return cls({f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}, where)

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def _say(self, template: str, name: str, value: Any = None, **parts: Any) -> ConfigError:
        return ConfigError(template.format(source=self.source, key=self.key(name), value=repr(value), **parts))

    def error(self, name: str, message: str) -> ConfigError:
        """A free-form problem with key ``name`` (e.g. one that involves two keys)."""
        return self._say(self.wording.other, name, self.data.get(name), message=message)

    def reject(self, name: str, value: Any, expected: str) -> ConfigError:
        """``value`` of key ``name`` is not allowed; ``expected`` says what is."""
        return self._say(self.wording.invalid, name, value, expected=expected)

    def has(self, name: str) -> bool:
        return name in self.data

    def get(
        self,
        name: str,
        types: type | tuple[type, ...],
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        min_open: bool = False,
        max_open: bool = False,
        choices: Iterable[Any] | None = None,
    ) -> Any:
        """The value of ``name``, checked; ints are taken as floats where ``float`` is allowed.

        ``min_open``/``max_open`` exclude the bound itself.
        """
        self._read.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        w = self.wording
        ts = types if isinstance(types, tuple) else (types,)
        ok = isinstance(value, ts) and not (isinstance(value, bool) and bool not in ts)
        if not ok and float in ts and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self._say(w.wrong_type, name, value, expected=_type_name(types))
        if isinstance(value, float) and not math.isfinite(value):
            raise self._say(w.not_finite, name, value, expected="a finite number")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self._say(
                    w.not_allowed, name, value, expected=f"one of {allowed}",
                    choices=", ".join(map(str, allowed)), choices_list=allowed,
                )
        if min is not None and (value <= min if min_open else value < min):
            raise self._say(w.out_of_range, name, value, expected=_bound(min, min_open, below=True))
        if max is not None and (value >= max if max_open else value > max):
            raise self._say(w.out_of_range, name, value, expected=_bound(max, max_open, below=False))
        return value

    def table(self, name: str, required: bool = False) -> Table:
        """A sub-table (empty when absent and not required), worded like this one."""
        value = self.get(name, dict, _MISSING if required else {})
        return Table(value, self.key(name), self.source, self.wording)

    def take(self, names: Iterable[str]) -> dict[str, Any]:
        """The present keys among ``names``, unchecked: for a dataclass that validates them itself."""
        out = {n: self.data[n] for n in names if n in self.data}
        self._read.update(out)
        return out

    def build(self, cls: type) -> Any:
        """The dataclass ``cls`` from this table: unknown keys refused here, types and ranges left to
        its ``__post_init__`` (which words them alike)."""
        names = [f.name for f in fields(cls)]
        kwargs = self.take(names)
        self.finish(names)
        return cls(**kwargs)

    def rest(self) -> dict[str, Any]:
        """Keys not read yet (handed to another validator such as a dataclass ``from_dict``)."""
        self._read.update(self.data)
        return {k: v for k, v in self.data.items()}

    def finish(self, allowed: Iterable[str] | None = None) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            known = sorted(allowed if allowed is not None else self._read)
            raise self._say(
                self.wording.unknown, unknown[0], self.data[unknown[0]],
                table=self.where, scope=f"in {self.where}" if self.where else "here",
                allowed=", ".join(known), allowed_list=known, unknown_list=unknown,
            )
