"""`cnndsl viz SPEC IMAGE [--weights RUN] -o maps.png`: draw what each layer does to a picture.

    cnndsl viz examples/filters_demo.cnn photo.png -o maps.png
    cnndsl viz examples/digits.cnn seven.png --weights runs/Digits --layers 'conv*' -o maps.png

Without `--weights` the learned layers keep their initial (random) values; fixed filters
(`filter sobel`, ...) need none. With them, the image is fitted and normalised as `predict`
does. JAX and matplotlib are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add `viz` to the `cnndsl` sub-command parser."""
    v = sub.add_parser(
        "viz",
        help="draw the feature maps of each spatial layer on an image, and the first filters",
        description="Run a .cnn network on one image and draw the feature maps after each spatial layer "
        "(a grid per layer, titled with its name and output D@WxH) and the first convolution's filters.",
    )
    v.add_argument("spec", metavar="SPEC", help="the .cnn file")
    v.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    v.add_argument(
        "-o",
        "--out",
        default="maps.png",
        metavar="FILE",
        help="the picture to write (default maps.png; .pdf, .svg work too)",
    )
    v.add_argument("--weights", metavar="RUN", help="a run folder or checkpoint (default: initial weights)")
    v.add_argument("--which", choices=("best", "latest"), default=None, help="which checkpoint of a run")
    v.add_argument("--layers", metavar="PATTERN[,PATTERN]", help="only these layers, by name (`conv*`, `stage2.*`)")
    v.add_argument("--maps", type=int, default=16, metavar="N", help="at most N maps per layer (default 16)")
    v.add_argument("--resize", action="store_true", help="resize the image to the input size")
    v.set_defaults(func=cmd_viz)


def cmd_viz(args: argparse.Namespace) -> int:
    from ..errors import ArgumentError
    from ..net import load
    from ..training.data import load_images
    from ..viz import check_drawable, figure, panels, png_bytes

    net = load(args.spec)
    check_drawable(net.ir)
    if args.maps < 1:
        raise ArgumentError(f"--maps must be 1 or more, got {args.maps}")
    fmt = Path(args.out).suffix.lower().lstrip(".") or "png"
    if fmt not in ("png", "pdf", "svg", "jpg", "jpeg"):
        raise ArgumentError(f"cannot write a `.{fmt}` picture", hints=["name the output .png, .pdf, .svg or .jpg"])
    if args.weights:
        from ..training.config import TrainConfig
        from ..training.weights import load_weights

        variables, meta = load_weights(net, args.weights, args.which)
        cfg = TrainConfig.from_dict(meta.get("config", {}))
        x = load_images([args.image], net.input, grayscale=cfg.grayscale, resize=cfg.resize or args.resize)
        if "normalization" in meta:
            from ..training.data import Normalization

            x = Normalization.from_dict(meta["normalization"]).apply(x)
        source = f"weights {meta['checkpoint']}"
    else:
        import jax

        variables = net.init(jax.random.key(0))
        x = load_images([args.image], net.input, resize=args.resize)
        source = "initial weights"
    layers = [p.strip() for p in args.layers.split(",") if p.strip()] if args.layers else None
    ps = panels(net.ir, variables, x, layers=layers, maps=args.maps)
    data = png_bytes(
        figure(ps, title=f"{net.name} on {Path(args.image).name} ({source})"), "jpeg" if fmt == "jpg" else fmt
    )
    _write_atomic(Path(args.out), data)
    kernels = sum(p.kind == "filters" for p in ps)
    print(
        f"wrote {args.out} ({source}): the input, {kernels} kernel panel{'s' * (kernels != 1)}, "
        f"{sum(p.kind == 'maps' for p in ps)} layers of feature maps",
        file=sys.stderr,
    )
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file beside `path`, then `os.replace`: a crash never leaves half a picture."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a picture is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
