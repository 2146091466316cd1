"""``python -m repvgg_nas.convert IN OUT``: train-form weights -> deploy checkpoint.

IN may be our checkpoint or a state_dict in the official RepVGG or timm layout
(train- or deploy-form, detected from the keys). The fused model is checked
against the train-form model before anything is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from .. import zoo
from ..checkpoint import save_checkpoint
from ..cli import ArgumentParser, check_output_file, run_cli
from ..export import export_checked_onnx, export_torchscript
from ..model import check_fusion, reparameterize
from ..weights import load_any

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m repvgg_nas.convert",
        description="Fuse a train-form RepVGG (our checkpoint, or official/timm weights) into "
        "a deploy checkpoint: one 3x3 conv + ReLU per block. The architecture is inferred "
        "from the weights unless --arch names a zoo config to check them against.",
    )
    parser.add_argument("input", type=Path, help="checkpoint or state_dict file (.pt/.pth)")
    parser.add_argument("output", type=Path, help="deploy checkpoint to write")
    parser.add_argument("--arch", help="zoo config the weights must match, e.g. A0 or RepVGG-B1g4")
    parser.add_argument("--onnx", type=Path, help="also export the deploy model to this ONNX file")
    parser.add_argument("--torchscript", type=Path, help="also export a TorchScript file")
    parser.add_argument(
        "--resolution", type=int, default=224, help="input size for checks and export (default 224)"
    )
    args = parser.parse_args(argv)
    if args.resolution < 8:
        parser.error(f"--resolution must be >= 8, got {args.resolution}")

    for flag, out in (("output", args.output), ("--onnx", args.onnx), ("--torchscript", args.torchscript)):
        if out is not None:
            check_output_file(out, flag)
    spec = zoo.get(args.arch) if args.arch else None
    loaded = load_any(args.input, spec)
    print(
        f"loaded {args.input} ({loaded.layout} layout, "
        f"{'deploy' if loaded.deploy else 'train'}-form): {loaded.spec.summary()}"
    )
    if loaded.deploy:
        deploy = loaded.model
        print("weights are already deploy-form; writing them as a deploy checkpoint")
    else:
        deploy = reparameterize(loaded.model)
        err = check_fusion(loaded.model, deploy, resolution=min(args.resolution, 64))  # FusionMismatchError
        print(f"fused: relative max error vs train-form {err:.2e}")
    # ONNX first, checked before it is moved into place: a failing export leaves no half output.
    onnx = export_checked_onnx(deploy, args.onnx, args.resolution) if args.onnx else None
    if args.torchscript:
        export_torchscript(deploy, args.torchscript, args.resolution)
    save_checkpoint(
        args.output, deploy, loaded.spec, meta={"source": str(args.input), "layout": loaded.layout}
    )
    print(f"wrote deploy checkpoint {args.output}")
    if args.torchscript:
        print(f"wrote TorchScript {args.torchscript}")
    if onnx is not None:
        print(f"wrote ONNX {args.onnx} ({onnx.describe()})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
