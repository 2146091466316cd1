"""``python -m repvgg_nas.zoo``: print the paper's configurations with params and MACs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..cli import ArgumentParser, format_table, run_cli
from . import table


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m repvgg_nas.zoo",
        description="List the RepVGG zoo: depths, width multipliers a/b, groupwise layers, "
        "deploy-model params and MACs (multiply-accumulates, the paper's 'FLOPs'), "
        "beside the figures the paper reports.",
    )
    parser.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier size (default 1000)")
    args = parser.parse_args(argv)
    if args.resolution <= 0 or args.num_classes <= 0:
        parser.error("--resolution and --num-classes must be positive")
    print(format_table(table(args.resolution, args.num_classes)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
