"""Pages a finished search run writes besides its CSVs, registered by the package that draws them.

The search sits below the report in the data flow and never imports it, yet
every run refreshes the study's report page. So the report registers its
page writer here when it is imported (``import repvgg_nas`` imports it), and
the search calls whatever is registered (:func:`write_study_outputs`). A
library caller that imports only :mod:`repvgg_nas.search` still gets the
page: importing a submodule imports the ``repvgg_nas`` package first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from .registry import Registry

__all__ = ["STUDY_OUTPUTS", "StudyWriter", "write_study_outputs"]

# writer(study, out_dir, storage=URL shown to people or None) -> the path it wrote
StudyWriter = Callable[..., Any]
STUDY_OUTPUTS: Registry[StudyWriter] = Registry("study output")


def write_study_outputs(study: optuna.Study, out_dir: str | Path, storage: str | None = None) -> list[Path]:
    """Run every registered writer on the study; return what they wrote, in registration order."""
    return [Path(write(study, out_dir, storage=storage)) for write in (STUDY_OUTPUTS.get(n) for n in STUDY_OUTPUTS)]
