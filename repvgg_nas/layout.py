"""Where a study's results live: every path under ``reports/<study>/`` is named here.

The search writes these files, the report and the prune CLI read them, and
tests look for them; none of them spells a file name itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_REPORTS_DIR", "StudyPaths", "sqlite_url", "sqlite_file"]

DEFAULT_REPORTS_DIR = "reports"
_CHECKPOINT = re.compile(r"^trial_(\d+)\.pt$")


def sqlite_url(path: str | os.PathLike) -> str:
    """The Optuna/SQLAlchemy URL of an SQLite file."""
    return f"sqlite:///{Path(path).as_posix()}"


def sqlite_file(url: str) -> Path | None:
    """The database file of an ``sqlite:///`` URL (None for other URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


@dataclass(frozen=True)
class StudyPaths:
    """The files of one study in its folder ``root`` (``<reports_dir>/<name>/``).

    A report written elsewhere (``report --out DIR``) uses ``StudyPaths(DIR)``
    for its page and CSV files.
    """

    root: Path

    @classmethod
    def of(cls, name: str, reports_dir: str | os.PathLike = DEFAULT_REPORTS_DIR) -> StudyPaths:
        return cls(Path(reports_dir) / name)

    @property
    def database(self) -> Path:
        """The default single-process SQLite storage."""
        return self.root / "study.db"

    @property
    def default_storage(self) -> str:
        return sqlite_url(self.database)

    @property
    def journal(self) -> Path:
        """The suggested journal file for ``--workers`` on one machine."""
        return self.root / "journal.log"

    @property
    def throughput_cache(self) -> Path:
        return self.root / "throughput_cache.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, trial: int) -> Path:
        """Fused deploy checkpoint of a trial."""
        return self.checkpoints / f"trial_{trial:04d}.pt"

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

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def pareto_csv(self) -> Path:
        return self.root / "pareto.csv"

    @property
    def report_html(self) -> Path:
        return self.root / "index.html"

    def figure_csv(self, name: str) -> Path:
        """CSV of one report figure's data."""
        return self.root / f"report_{name}.csv"
