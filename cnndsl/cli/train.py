"""`cnndsl train`, `cnndsl predict` and `cnndsl eval`.

    cnndsl train examples/digits.cnn --epochs 3 --lr 0.01 --out runs/digits
    cnndsl train examples/digits.cnn --out runs/digits --resume --epochs 6
    cnndsl predict examples/digits.cnn --weights runs/digits seven.png
    cnndsl predict --weights runs/digits --resize photos/ 'more/*.jpg'
    cnndsl eval examples/digits.cnn --weights runs/digits --split test

Every `train { ... }` setting is an option of `cnndsl train` (`label_smoothing` is
`--label-smoothing`); its text is read as it would be in the file. JAX is imported only
when a command runs, so `cnndsl compile` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..training.config import SETTINGS

BOOL_SETTINGS = ("grayscale", "resize")
# How an option's value is written on the command line, where it differs from the file.
CLI_FORMS = {
    "data": "SPEC",
    "classes": "C,C,...",
    "augment": "AUG[,AUG]",
    "freeze": "PATTERN[,PATTERN]",
    "init": "CKPT",
    "optimizer": "NAME(...)",
    "schedule": "NAME(...)",
    "normalize": "KIND",
    "loss": "NAME",
}


def register(sub: Any) -> None:
    """Add `train`, `predict` and `eval` to the `cnndsl` sub-command parser."""
    t = sub.add_parser(
        "train",
        help="train a network as its train section says",
        description="Train a .cnn network. Options override the file's `train { ... }` settings.",
    )
    t.add_argument("spec", metavar="FILE", help="the .cnn file")
    run = t.add_argument_group("the run")
    run.add_argument("--out", metavar="DIR", help="output folder (default runs/<network name>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out that holds a cnndsl run (removes only the files cnndsl wrote there)",
    )
    _spec_change_arg(run)
    run.add_argument(
        "--max-time", type=float, metavar="SECONDS", help="stop after the step that passes this time, and save"
    )
    run.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps in all, and save")
    run.add_argument("--devices", type=int, default=1, metavar="N", help="data parallel over the first N devices")
    multi = t.add_argument_group("several processes (jax.distributed; --devices then counts each process's devices)")
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same for every process")
    multi.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0 to N-1 (0 writes the run)")
    multi.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run from the environment JAX detects (SLURM, Open MPI, Kubernetes, TPU pods)",
    )
    multi.add_argument(
        "--join-timeout",
        type=int,
        default=300,
        metavar="SECONDS",
        help="how long a process waits for all the others to start (default 300)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal)",
    )
    run.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True, help="write history.png")
    run.add_argument("--quiet", action="store_true", help="print nothing")
    comp = t.add_argument_group("computation (how, not what: results agree within float tolerance)")
    comp.add_argument(
        "--remat", action="store_true", help="recompute block activations in the backward pass (less memory)"
    )
    comp.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32",
        help="compute convolutions and dense layers in bfloat16, accumulating in float32",
    )  # fmt: skip
    comp.add_argument(
        "--autotune", action="store_true", help="time the network's lowering choices once at this batch (cached)"
    )
    settings = t.add_argument_group("settings (override the file's train section)")
    for s in SETTINGS.values():
        flag = "--" + s.name.replace("_", "-")
        if s.name in BOOL_SETTINGS:
            settings.add_argument(
                flag, dest=f"set_{s.name}", nargs="?", const="true", metavar="true|false", help=s.help
            )
        else:
            settings.add_argument(flag, dest=f"set_{s.name}", metavar=CLI_FORMS.get(s.name, s.form), help=s.help)
    t.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict",
        help="top-k classes of image files",
        description="Top-k classes of image files, folders of images or glob patterns. The .cnn file is optional:"
        " a run's checkpoint keeps the spec it was trained with. Images that cannot be read or fitted are"
        " reported and skipped; the exit status is then 2.",
    )
    p.__class__ = _IntermixedParser  # `predict SPEC --weights RUN IMAGE`: positionals on both sides of options
    p.usage = "%(prog)s [SPEC] IMAGE [IMAGE ...] --weights RUN [options]"
    p.add_argument(
        "inputs", nargs="*", metavar="[SPEC] IMAGE", help="the .cnn file (optional), then images, folders, globs"
    )
    _weights_args(p)
    _spec_change_arg(p)
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON: one entry per image, with `top` or `error`")
    p.add_argument(
        "--resize",
        nargs="?",
        const="input",
        metavar="N",
        help="alone: resize each image to the input size (bilinear); with N: resize the short side to N first"
        " (bilinear), as torchvision",
    )
    p.add_argument("--crop", type=int, metavar="M", help="then centre-crop M x M (torchvision's eval transform)")
    _inference_args(p)
    p.set_defaults(func=cmd_predict)

    e = sub.add_parser("eval", help="accuracy and confusion matrix on a data set")
    e.add_argument("spec", metavar="FILE", help="the .cnn file")
    _weights_args(e)
    _spec_change_arg(e)
    e.add_argument("--data", metavar="SPEC", help="the data set (default: the one the weights were trained on)")
    e.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split (default test)")
    e.add_argument("--devices", type=int, default=1, metavar="N", help="data parallel over the first N devices")
    e.add_argument("--json", action="store_true", help="print JSON")
    _inference_args(e)
    e.set_defaults(func=cmd_eval)


class _IntermixedParser(argparse.ArgumentParser):
    """A sub-command parser whose positionals may sit before and after options (one
    `nargs="*"` positional otherwise takes only the first run of them)."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner:  # parse_known_intermixed_args calls back here
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fold",
        action="store_true",
        help="run the inference-compiled network: batch norm and preprocessing folded into the weights, dropout removed",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: convolutions and dense layers in bfloat16 with float32 accumulation",
    )


def _spec_change_arg(p: Any) -> None:
    p.add_argument(
        "--allow-changed-spec",
        action="store_true",
        help="use weights with a spec that differs from the one they were trained with, where the weights still fit",
    )


def _weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights", required=True, metavar="CKPT", help="a run folder, its checkpoints folder, or a step folder"
    )
    p.add_argument(
        "--which",
        choices=("best", "latest"),
        default=None,
        help="which checkpoint of a run (default: best, else latest)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.stop import StopRequest

    with StopRequest() as stop:  # before JAX loads: a signal from here on stops the run cleanly
        return _train(args, stop)


def _train(args: argparse.Namespace, stop: Any) -> int:
    from ..training import distributed

    # Before anything touches JAX: a multi-process run joins its peers first.
    launch = distributed.Launch(
        args.coordinator, args.num_processes, args.process_id, auto=args.distributed, timeout_s=args.join_timeout
    )
    distributed.initialize(launch)
    from ..net import load
    from ..training.loop import train

    overrides = {k: getattr(args, f"set_{k}") for k in SETTINGS if getattr(args, f"set_{k}") is not None}
    result = train(
        load(args.spec),
        overrides=overrides,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        max_time=args.max_time,
        max_steps=args.max_steps,
        devices=args.devices,
        progress=args.progress,
        quiet=args.quiet,
        plot=args.plot,
        remat=args.remat,
        dtype=args.dtype,
        autotune=args.autotune,
        allow_changed_spec=args.allow_changed_spec,
        stop=stop,
    )
    if not stop and result.stopped == "interrupted":  # a peer process's signal stopped this one too
        return 143
    return stop.exit_code  # 0, or 130 / 143 after SIGINT / SIGTERM (the run saved what it had)


def _predict_inputs(args: argparse.Namespace) -> tuple[str | None, list[str], bool | int | None]:
    """`(spec, images, resize)` from the positional arguments: a first argument ending in
    `.cnn` is the spec. `--resize` followed by an image (argparse took it as N) is `--resize`
    alone, and the image is given back."""
    from ..errors import ArgumentError

    inputs = list(args.inputs)
    resize: bool | int | None = None
    if args.resize == "input":
        resize = True
    elif args.resize is not None:
        try:
            resize = int(args.resize)
        except ValueError:
            if args.resize.startswith("-"):
                raise ArgumentError(f"`--resize {args.resize}`: N is a number of pixels") from None
            inputs.append(args.resize)  # `--resize seven.png`: an image, not a size
            resize = True
    spec = inputs.pop(0) if inputs and inputs[0].endswith(".cnn") else None
    if not inputs:
        raise ArgumentError(
            "no images given", hints=["name image files, folders or glob patterns after the spec: `seven.png`, `imgs/`"]
        )
    return spec, inputs, resize


def cmd_predict(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from ..net import load
    from ..training.checkpoint import strict_json
    from ..training.evaluation import ImageError, expand_images, predict

    spec, inputs, resize = _predict_inputs(args)
    images, errors = expand_images(inputs)
    preds = []
    if images:
        failed: list[ImageError] = []
        preds = predict(
            load(spec) if spec is not None else None,
            args.weights,
            images,
            top=args.top,
            which=args.which,
            fold=args.fold,
            dtype=args.dtype,
            allow_changed_spec=args.allow_changed_spec,
            resize=resize,
            crop=args.crop,
            errors=failed,
        )
        errors += failed
    if args.json:
        by_path = {p.path: p for p in preds}
        bad = {e.path: e for e in errors}
        doc = []
        for path in [*images, *(e.path for e in errors if e.path not in images)]:
            if path in by_path:
                top = [{"class": i, "name": n, "probability": q} for i, n, q in by_path[path].top]
                doc.append({"image": path, "top": top})
            elif path in bad:
                doc.append({"image": path, "error": bad[path].error.message})
        print(strict_json(doc, indent=2))
    else:
        for p in preds:
            print(p.path)
            width = max(len(n) for _, n, _ in p.top)
            for rank, (i, name, q) in enumerate(p.top, 1):
                label = name if name == str(i) else f"{name} ({i})"
                print(f"  {rank}. {label:<{width + 5}} {100 * q:6.2f}%")
    if not errors:
        return 0
    for e in errors:
        print(e.error.render(), file=sys.stderr)
    total = len(preds) + len(errors)
    raise DataError(
        f"{len(errors)} of {total} image{'s' * (total != 1)} skipped: "
        + ", ".join(f"`{e.path}`" for e in errors[:10])
        + (f" and {len(errors) - 10} more" if len(errors) > 10 else ""),
        notes=[f"the predictions above are for the other {len(preds)}"] if preds else [],
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ..net import load
    from ..training.checkpoint import strict_json
    from ..training.evaluation import evaluate

    ev = evaluate(
        load(args.spec),
        args.weights,
        data=args.data,
        split=args.split,
        which=args.which,
        devices=args.devices,
        fold=args.fold,
        dtype=args.dtype,
        allow_changed_spec=args.allow_changed_spec,
        announce=lambda line: print(line, file=sys.stderr),
    )
    if args.json:
        doc = {
            "weights": ev.checkpoint,
            "checkpoint": None if ev.weights is None else ev.weights.to_dict(),
            "data": ev.source,
            "split": ev.split,
            "examples": ev.examples,
            "loss": ev.loss,
            "accuracy": ev.accuracy,
            "top5": ev.top5,
            "class_names": list(ev.class_names),
            "confusion": None if ev.confusion is None else ev.confusion.tolist(),
        }
        print(strict_json(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    c = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.2f}%"

    used = ev.weights.describe() if ev.weights is not None else ev.checkpoint
    c.print(f"weights {used}", markup=False)
    c.print(f"data    {ev.source} · {ev.split} split · {ev.examples:,} examples", markup=False)
    loss = "–" if ev.loss is None else f"{ev.loss:.4f}"
    c.print(f"accuracy {pct(ev.accuracy)} · top-5 {pct(ev.top5)} · loss {loss}")
    if ev.confusion is None:
        return 0
    k = len(ev.confusion)
    if k > 30:
        c.print(f"(the confusion matrix has {k} classes: see --json)")
        return 0
    names = [str(n) for n in ev.class_names][:k] + [str(i) for i in range(len(ev.class_names), k)]
    title = "confusion matrix: rows are true classes, columns predicted classes (by index)"
    table = Table(title=title, title_justify="left")
    table.add_column("true class")
    for j in range(k):
        table.add_column(str(j), justify="right")
    table.add_column("recall", justify="right")
    for i, row in enumerate(ev.confusion):
        cells = [f"[bold]{v}[/]" if i == j and v else (str(v) if v else "[dim]·[/]") for j, v in enumerate(row)]
        recall = row[i] / row.sum() if row.sum() else None
        label = names[i] if names[i] == str(i) else f"{i} {names[i]}"
        table.add_row(escape(label), *cells, pct(recall))
    c.print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["train", *sys.argv[1:]]))
