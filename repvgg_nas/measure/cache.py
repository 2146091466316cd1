"""Measured figures kept per architecture and setting: :class:`ThroughputCache`.

Keyed by (spec hash, form, device name + torch and runtime versions, settings
including the runtime), so a study
never measures one architecture twice: in memory, or persisted to a JSON file
(the study's :attr:`~repvgg_nas.layout.StudyPaths.throughput_cache`) for resumed studies.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace as _replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..files import atomic_write_text, read_versioned_json
from ..spec import RepVGGSpec
from .host import cpu_isa, device_name
from .runtimes import RUNTIMES, runtime_versions
from .settings import MeasureSettings
from .timing import Measurement

__all__ = ["CACHE_FORMAT_VERSION", "ThroughputCache"]

# The layout of the cache file and of its keys (settings with every field, the
# spec hash of its spec_version): written in the file, checked when it is read.
CACHE_FORMAT_VERSION = 2


class ThroughputCache:
    """Measurements keyed by (spec hash, form, device name + torch version, settings).

    In memory by default; with ``path`` it loads that JSON file (if present)
    and rewrites it atomically after every new entry, so a resumed study does
    not remeasure. A contended measurement (other processes held the device)
    is stored but never served as final: the next ``get`` misses and the net
    is measured again, and it never replaces a clean figure. Concurrent writers merge with what is on disk before each
    write; a lost race only costs a remeasurement.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None and self.path.exists():
            self._entries.update(self._load(self.path))

    @staticmethod
    def _load(path: Path) -> dict[str, dict[str, Any]]:
        data = read_versioned_json(path, f"throughput cache {path}", CACHE_FORMAT_VERSION,
                                   "delete it or pass another path")
        entries = data.get("entries", {})
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def key(spec: RepVGGSpec | str, settings: MeasureSettings, deploy: bool = True) -> str:
        """Cache key; ``settings`` are resolved first so ``auto`` names the real device.

        The runtime is in the settings, and the versions of its packages
        (onnxruntime; none for ``torch``) beside torch's.
        """
        s = settings.resolved()
        spec_hash = spec if isinstance(spec, str) else spec.hash
        hw = f"{device_name(s.device)} / {cpu_isa(s.device)} / torch {torch.__version__}"
        for package, version in runtime_versions(RUNTIMES.get(s.runtime)).items():
            hw += f" / {package} {version}"
        return json.dumps(
            [spec_hash, "deploy" if deploy else "train", hw, s.to_dict()],
            sort_keys=True, separators=(",", ":"),
        )

    def get(self, spec: RepVGGSpec | str, settings: MeasureSettings, deploy: bool = True) -> Measurement | None:
        entry = self._entries.get(self.key(spec, settings, deploy))
        if entry is None or entry.get("contended"):  # a contended figure is never final: measure again
            self.misses += 1
            return None
        self.hits += 1
        return _replace(Measurement.from_dict(entry), cached=True)

    def put(
        self, spec: RepVGGSpec | str, settings: MeasureSettings, m: Measurement, deploy: bool = True
    ) -> None:
        entry = _replace(m, cached=False).to_dict()
        key = self.key(spec, settings, deploy)
        old = self._entries.get(key)
        if m.contended and old is not None and not old.get("contended"):
            return  # keep the clean figure
        self._entries[key] = entry
        if self.path is not None:
            self.save()

    def save(self) -> None:
        """Atomic write (:func:`~repvgg_nas.files.atomic_write_text`), merged with entries others wrote."""
        if self.path is None:
            return
        if self.path.exists():
            try:
                merged = self._load(self.path)
            except ConfigError:
                merged = {}
            for key, entry in self._entries.items():  # ours win, except a contended one over a clean one
                old = merged.get(key)
                if not (entry.get("contended") and old is not None and not old.get("contended")):
                    merged[key] = entry
            self._entries = merged
        atomic_write_text(
            self.path, json.dumps({"format_version": CACHE_FORMAT_VERSION, "entries": self._entries})
        )

    def measurements(self) -> list[Measurement]:
        """Every stored measurement (``cached=True``), in storage order: what the report reads."""
        return [_replace(Measurement.from_dict(e), cached=True) for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """True for a key with a final (not contended) figure."""
        entry = self._entries.get(key) if isinstance(key, str) else None
        return entry is not None and not entry.get("contended")
