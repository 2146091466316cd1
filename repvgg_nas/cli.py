"""Shared plumbing for the ``python -m repvgg_nas.*`` entry points.

CLIs stay thin (DESIGN convention 9): parse, call the library, print. This
module turns user errors into one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from .errors import RepVGGNasError

__all__ = ["run_cli", "format_table", "EXIT_USAGE"]

EXIT_USAGE = 2


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
