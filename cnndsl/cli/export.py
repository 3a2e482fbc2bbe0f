"""`cnndsl export`: a network and its weights in another format.

    cnndsl export examples/lenet5.cnn --onnx lenet5.onnx --weights runs/LeNet5
    cnndsl export examples/resnet18.cnn --onnx resnet18.onnx --dynamic-batch

Weights come from a run folder, its checkpoints folder or a step folder (`--weights`, read
by the checkpoint code as `predict` reads them); without `--weights` the network's initial
weights (seed 0) are exported, and a note says so. Files are written atomically. JAX is
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add `export` to the `cnndsl` sub-command parser."""
    p = sub.add_parser(
        "export",
        help="write the network and its weights in another format (ONNX)",
        description="Export a .cnn network with its weights (trained ones with --weights, else initial ones).",
    )
    p.add_argument("spec", metavar="SPEC", help="the .cnn file")
    p.add_argument(
        "--weights", metavar="RUN_OR_CHECKPOINT", help="a run folder, its checkpoints folder, or a step folder"
    )
    p.add_argument(
        "--which",
        choices=("best", "latest"),
        default=None,
        help="which checkpoint of a run (default: best, else latest)",
    )
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--onnx", metavar="OUT.onnx", help="an ONNX model (opset 17, inference mode)")
    out.add_argument(
        "--torch",
        metavar="OUT.safetensors",
        help="a PyTorch state dict (safetensors; torchvision's key names for zoo networks)",
    )
    onnx = p.add_argument_group("ONNX")
    size = onnx.add_mutually_exclusive_group()
    size.add_argument("--batch", type=int, default=1, metavar="N", help="a fixed batch size (default 1)")
    size.add_argument("--dynamic-batch", action="store_true", help="leave the batch size open (a symbolic N)")
    onnx.add_argument(
        "--layout",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="input/output layout: nhwc (channels last, as cnndsl's apply; default) or nchw",
    )
    p.set_defaults(func=cmd_export)


def _variables(net: Any, args: argparse.Namespace) -> tuple[dict, str]:
    """`(variables, where they came from)`."""
    if args.weights:
        from ..training.weights import load_weights

        variables, meta = load_weights(net, args.weights, args.which)
        return variables, f"weights from {meta['checkpoint']}"
    import jax

    print("note: no --weights given: exporting the initial weights (seed 0)", file=sys.stderr)
    return net.init(jax.random.key(0)), "initial weights (seed 0)"


def cmd_export(args: argparse.Namespace) -> int:
    from ..errors import ArgumentError
    from ..net import load

    if args.batch < 1:
        raise ArgumentError(f"--batch must be >= 1, got {args.batch}")
    net = load(args.spec)
    if args.onnx:
        from ..backends.onnx import check_supported, input_shape

        check_supported(net.ir)  # before reading any weights
        variables, origin = _variables(net, args)
        model = net.to_onnx(
            variables, args.onnx, batch=args.batch, dynamic_batch=args.dynamic_batch, layout=args.layout
        )
        shape = (
            ("N", *input_shape(net.ir, 1, args.layout)[1:])
            if args.dynamic_batch
            else input_shape(net.ir, args.batch, args.layout)
        )
        size = model.ByteSize() / 2**20
        print(
            f"wrote {args.onnx}: {net.name}, ONNX opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, "
            f"{size:.1f} MiB, {origin}; input `input` {tuple(shape)} float32 ({args.layout})"
        )
    if args.torch:
        from ..interop.export import export_torch

        print(export_torch(net, args.weights, args.torch, which=args.which))
    return 0
