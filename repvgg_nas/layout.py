"""Where results live: every path under ``reports/<study>/`` is named here, and the user's cache folder.

The search writes these files, the report and the prune CLI read them, and
tests look for them; none of them spells a file name itself. The cache
folder (:func:`user_cache_dir`) holds what outlives one study: latency
tables and trained references.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_DIR_ENV", "DEFAULT_REPORTS_DIR", "StudyPaths", "sqlite_url", "sqlite_file", "pruned_path", "user_cache_dir",
]

DEFAULT_REPORTS_DIR = "reports"
CACHE_DIR_ENV = "REPVGG_NAS_CACHE_DIR"  # overrides the cache folder (tests, shared machines)


def user_cache_dir() -> Path:
    """The user's cache folder: ``$REPVGG_NAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/repvgg-nas``, else
    ``~/.cache/repvgg-nas``. Not created here: writers create what they write."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "repvgg-nas"


_CHECKPOINT = re.compile(r"^trial_(\d+)\.pt$")


def sqlite_url(path: str | os.PathLike) -> str:
    """The Optuna/SQLAlchemy URL of an SQLite file."""
    return f"sqlite:///{Path(path).as_posix()}"


def sqlite_file(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def pruned_path(checkpoint: str | os.PathLike) -> Path:
    """Where ``python -m repvgg_nas.prune CHECKPOINT`` writes by default: ``<stem>_pruned.pt`` beside it.

    A study trial's pruned net goes to :meth:`StudyPaths.pruned_checkpoint` instead.
    """
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}_pruned.pt")


class _Entry:
    """A fixed file or folder name in the study folder, read as ``paths.<attr>`` (a Path)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, paths: StudyPaths | None, owner: type | None = None) -> Any:
        return self if paths is None else paths.root / self.name


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study in its folder ``root`` (``<reports_dir>/<name>/``).

    A report written elsewhere (``report --out DIR``) uses ``StudyPaths(DIR)``
    for its page and CSV files.
    """

    root: Path

    database = _Entry("study.db", "The default single-process SQLite storage.")
    journal = _Entry("journal.log", "The suggested journal file for ``--workers`` on one machine.")
    throughput_cache = _Entry("throughput_cache.json", "Measurements by spec, settings and device.")
    checkpoints = _Entry("checkpoints", "Fused deploy checkpoints of the front, references and pruned variants.")
    trials_csv = _Entry("trials.csv", "One row per trial.")
    pareto_csv = _Entry("pareto.csv", "The front beside the references.")
    report_html = _Entry("index.html", "The self-contained interactive report.")

    @classmethod
    def of(cls, name: str, reports_dir: str | os.PathLike = DEFAULT_REPORTS_DIR) -> StudyPaths:
        return cls(Path(reports_dir) / name)

    @property
    def default_storage(self) -> str:
        return sqlite_url(self.database)

    def checkpoint(self, trial: int) -> Path:
        """Fused deploy checkpoint of a trial."""
        return self.checkpoints / f"trial_{trial:04d}.pt"

    @property
    def rung_checkpoints(self) -> Path:
        """Train-form nets paused between rungs of a multi-fidelity search (deleted when the trial ends)."""
        return self.checkpoints / "rungs"

    def rung_checkpoint(self, slot: int) -> Path:
        """A paused candidate, by its slot (the first trial of its retry chain, so a retry finds it)."""
        return self.rung_checkpoints / f"slot_{slot:04d}.pt"

    def pruned_checkpoint(self, trial: int) -> Path:
        """Where ``python -m repvgg_nas.prune --trial N`` writes by default."""
        return self.checkpoints / f"pruned_trial_{trial:04d}.pt"

    def checkpoint_trials(self) -> dict[int, Path]:
        """Trial number -> checkpoint path, for every trial checkpoint on disk."""
        out: dict[int, Path] = {}
        if self.checkpoints.is_dir():
            for f in self.checkpoints.iterdir():
                m = _CHECKPOINT.match(f.name)
                if m:
                    out[int(m.group(1))] = f
        return out

    def figure_csv(self, name: str) -> Path:
        """CSV of one report figure's data."""
        return self.root / f"report_{name}.csv"
