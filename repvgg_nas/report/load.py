"""Opening the study a report is made of, without ever creating one."""

from __future__ import annotations

import os

import optuna

from ..errors import ConfigError
from ..layout import DEFAULT_REPORTS_DIR, StudyPaths, sqlite_file

__all__ = ["load_report_study"]


def load_report_study(
    name: str, storage: str | None = None, reports_dir: str | os.PathLike = DEFAULT_REPORTS_DIR
) -> tuple[optuna.Study, str]:
    """Open an existing study; never create a database or a study as a side effect.

    The default storage is the search's (``sqlite:///<reports_dir>/<name>/study.db``).
    Returns the study and the storage URL it came from.
    """
    hint = f"run the search first: python -m repvgg_nas.search --study {name}"
    if storage is None:
        storage = StudyPaths.of(name, reports_dir).default_storage
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        raise ConfigError(f"no study {name!r}: storage {db} does not exist; {hint}")
    if storage.startswith("sqlite:") and db is None:
        raise ConfigError(f"storage {storage!r} is not an sqlite file URL (sqlite:///path/to/study.db)")
    try:
        return optuna.load_study(study_name=name, storage=storage), storage
    except KeyError:
        try:
            names = optuna.get_all_study_names(storage)
        except Exception:
            names = []
        held = f" (it holds: {', '.join(names)})" if names else " (it holds no studies)"
        raise ConfigError(f"no study {name!r} in {storage}{held}; {hint}") from None
    except (ValueError, ImportError, RuntimeError) as e:
        raise ConfigError(f"cannot open storage {storage!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # SQLAlchemy's OperationalError and friends
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"cannot open storage {storage!r}: {type(e).__name__}: {first}") from None
