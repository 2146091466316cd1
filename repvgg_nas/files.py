"""Writing files so that a reader never sees half of one (DESIGN convention 10).

Every file the toolkit writes (checkpoints, CSV, the throughput cache, the
HTML report) goes through :func:`atomic_write`: the content is written to a
temp file beside the target, given the usual umask permissions, then moved
into place with ``os.replace``. An error leaves the old file (or nothing).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["atomic_write", "atomic_write_text", "ensure_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_dir(path: str | os.PathLike, what: str = "folder", create: bool = True) -> Path:
    """Create ``path`` (and parents) or raise a one-line ConfigError naming it and the problem.

    ``what`` says what the folder is for (e.g. ``--reports-dir``), so a user
    who named a file, or a folder they cannot write, is told which setting to change.
    ``create=False`` only checks that it exists as a writable folder or could
    be made (its nearest existing parent is a writable folder), writing nothing:
    a CLI checks its output folders this way before any work.
    """
    path = Path(path)
    if not create:
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(f"{what} {str(path)!r} is not writable")
            return path
        if path.exists():
            raise ConfigError(f"{what} {str(path)!r} is a file, not a folder")
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ConfigError(f"{what} {str(path)!r}: a part of the path is a file, not a folder")
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {str(path)!r} cannot be created: permission denied in {str(parent)!r}")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{what} {str(path)!r}: a part of the path is a file, not a folder") from None
    except PermissionError:
        raise ConfigError(f"{what} {str(path)!r} cannot be created: permission denied") from None
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be created: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(path)!r} is not writable")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then move the file into place; no partial file on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` for a UTF-8 text file."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_versioned_json(path: str | os.PathLike, what: str, version: int, remedy: str) -> dict[str, Any]:
    """A JSON file written with ``{"format_version": version, ...}``, or a one-line ConfigError naming
    ``what`` (e.g. ``latency table 'x.json'``): unreadable, not JSON, or another format (``remedy`` says
    what to do). The files of this project that outlive a run (caches, tables) are read through here."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise ConfigError(f"{what} cannot be read: {reason}") from None
    found = data.get("format_version") if isinstance(data, dict) else None
    if found != version:
        raise ConfigError(f"{what} has format_version {found!r}; this version reads format_version {version} "
                          f"only: {remedy}")
    return data
