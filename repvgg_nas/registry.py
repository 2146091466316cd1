"""Small name -> object registries used for the zoo and every strategy.

Strategies are chosen by string (DESIGN convention 6); a lookup of an unknown
name fails with the close matches, so a typo is a one-line fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping of names to entries with helpful lookup errors.

    Lookups are case-insensitive, so ``repvgg-a0`` finds ``RepVGG-A0``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if self._key(name) in {self._key(n) for n in self._entries}:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` (a plugin's or a test's own entry) and return its entry."""
        return self._entries.pop(self.canonical(name))

    @staticmethod
    def _key(name: str) -> str:
        return name.lower()

    def list(self) -> list[str]:
        return list(self._entries)

    def canonical(self, name: str, shown: str | None = None) -> str:
        """Return the registered spelling of ``name`` or raise UnknownNameError.

        ``shown`` is the text the user typed, when ``name`` is a normalized form of it.
        """
        for registered in self._entries:
            if self._key(registered) == self._key(name):
                return registered
        keys = {self._key(n): n for n in self._entries}
        close = difflib.get_close_matches(self._key(name), list(keys), n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(keys[c] for c in close)}?"
            if close
            else f"known: {', '.join(self._entries)}"
        )
        raise UnknownNameError(f"unknown {self.kind} {(shown if shown is not None else name)!r}; {hint}")

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(
            self._key(n) == self._key(name) for n in self._entries
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
