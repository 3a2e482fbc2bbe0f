"""`cnndsl import-weights SPEC FILE -o RUN`: PyTorch/torchvision/timm weights into a cnndsl run folder.

    cnndsl import-weights examples/resnet18.cnn resnet18-f37072fd.pth -o runs/resnet18-imagenet
    cnndsl predict examples/resnet18.cnn --weights runs/resnet18-imagenet --resize 256 --crop 224 cat.jpg

The result is an ordinary checkpoint (`predict`, `eval`, `export`, `train --init` take it)
plus `RUN/import.json`, the mapping table. JAX is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add `import-weights` to the `cnndsl` sub-command parser."""
    p = sub.add_parser(
        "import-weights",
        help="import a PyTorch state dict (.safetensors, .pth) as a cnndsl checkpoint",
        description="Map a PyTorch state dict onto a .cnn network by execution order and shape, convert the "
        "layouts (OIHW -> HWIO, (out, in) -> (in, out), BN statistics) and save it as a run folder.",
    )
    p.add_argument("spec", metavar="SPEC", help="the .cnn file")
    p.add_argument("file", metavar="FILE", help="a .safetensors file, or a .pth/.pt state dict (needs PyTorch)")
    p.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="the run folder to write")
    p.add_argument("--map", metavar="FILE", help='explicit pairs, a JSON object {"torch module": "cnndsl layer"}')
    p.add_argument(
        "--ignore", action="append", default=[], metavar="PATTERN",
        help="leave out torch tensors whose key matches this glob (e.g. 'aux1.*'); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--new", action="append", default=[], metavar="LAYER",
        help="keep this cnndsl layer (name or glob) at its initial values, e.g. a new head; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--normalize", choices=("none", "imagenet"), default="none",
        help="what predict/eval do to 0..255 pixels: imagenet = torchvision's mean/std (default none: "
        "the network's own `scale`/`normalize` layers, if any)",
    )  # fmt: skip
    p.add_argument("--class-names", metavar="FILE", help="a text file with one class name per line")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the mapping as JSON")
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from ..interop import IMAGENET, import_state_dict, read_map, save_imported
    from ..net import load

    net = load(args.spec)
    pairs = read_map(args.map) if args.map else None
    names = None
    if args.class_names:
        try:
            names = [line.strip() for line in Path(args.class_names).read_text().splitlines() if line.strip()]
        except OSError as e:
            raise DataError(f"cannot read the class names `{args.class_names}`: {e.strerror or e}") from None
    variables, report = import_state_dict(net, args.file, map=pairs, ignore=args.ignore, new=args.new)
    folder = save_imported(
        args.out,
        net,
        variables,
        report,
        normalization=IMAGENET if args.normalize == "imagenet" else None,
        class_names=names,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps({**report.to_json(), "checkpoint": str(folder)}, indent=1))
        return 0
    if not args.quiet:
        print(report.render())
    print(
        f"wrote {folder}: {net.name}, {len(report.rows)} tensors ({report.values:,} values) in "
        f"{report.seconds:.2f} s; mapping in {Path(args.out) / 'import.json'}",
        file=sys.stdout,
    )
    return 0
