"""Shared plumbing for the ``python -m repvgg_nas.*`` entry points.

CLIs stay thin (DESIGN convention 9): parse, call the library, print. This
module turns user errors into one line on stderr with exit code 2, and draws
the progress the library reports through callbacks (:class:`StepBar`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import ConfigError, RepVGGNasError
from .files import ensure_dir

if TYPE_CHECKING:
    from .train import TrainStep

__all__ = ["run_cli", "format_table", "StepBar", "EXIT_USAGE", "ArgumentParser", "check_output_file", "on_off"]

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``error: ...`` and exit code 2, no usage block.

    ``error`` (a bad or missing argument, an out-of-range value found by the
    CLI) raises :class:`ConfigError`, which :func:`run_cli` prints as every
    other user error; ``--help`` still prints the full usage.
    """

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise ConfigError(f"{message} (see {self.prog} --help)")


def on_off(text: str) -> bool:
    """argparse ``type`` of a switch written ``on`` or ``off``: unlike a bare flag, leaving it out leaves the config's value."""
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"must be on or off, got {text!r}")
    return text == "on"


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Refuse an output path that cannot be written (before any work), naming ``flag`` and the path.

    A folder where a file should go, a parent that is a file, or a folder
    without write permission is a one-line :class:`ConfigError`; nothing is created.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {str(path)!r} is a folder; give a file name")
    ensure_dir(path.parent, f"{flag} {str(path)!r}: folder", create=False)
    return path


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; user errors print ``error: ...`` and give exit code 2."""
    try:
        return int(main(argv) or 0)
    except RepVGGNasError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Plain fixed-width text table (numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.6g}" if abs(v) < 1e5 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


class StepBar:
    """A tqdm bar of training steps: pass it as ``train(..., progress=StepBar())``.

    One bar per training run (a new run starts at step 1), described
    ``"<desc> ep E/N"`` with the last checked loss and the learning rate;
    ``position`` places it below an outer bar. Disabled, it draws nothing.
    """

    def __init__(self, position: int = 0, enabled: bool = True) -> None:
        self.position, self.enabled = position, enabled
        self._bar: Any = None

    def __call__(self, s: TrainStep) -> None:
        if not self.enabled:
            return
        if self._bar is None or s.step == 1:
            from tqdm.auto import tqdm

            self.close()
            self._bar = tqdm(total=s.total, desc=s.desc, position=self.position, leave=False,
                             dynamic_ncols=True, unit="step")
        bar = self._bar
        if s.step_in_epoch == 1:
            bar.set_description(f"{s.desc} ep {s.epoch}/{s.epochs}")
        if s.loss is not None:
            bar.set_postfix(loss=f"{s.loss:.3f}", lr=f"{s.lr:.3g}", refresh=False)
        bar.update(1)
        if s.step >= s.total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
