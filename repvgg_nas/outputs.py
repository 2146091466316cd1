"""Pages a finished search run writes besides its CSVs, registered explicitly by whoever wants them.

The search sits below the report in the data flow and never imports it, yet
a run from the command line refreshes the study's report page. So the search
calls whatever is registered here (:func:`write_study_outputs`), and the
caller that wants a page registers its writer before the run: the search CLI
calls :func:`repvgg_nas.report.register_report`. Importing a package
registers nothing, so a library caller of :func:`repvgg_nas.search.run_search`
gets only the CSVs unless it registers the report too.
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
