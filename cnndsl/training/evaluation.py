"""Using trained weights: `predict` (top-k classes of image files) and `evaluate`
(accuracy, top-5 and a confusion matrix on a data set's split).

Both repeat what training did to the pixels (the checkpoint's normalisation) and report
probabilities as the trained network defines them: softmax of the logits for crossentropy
and mse, a per-class sigmoid for bce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError, CnnError, DataError
from ..net import Net
from .config import TrainConfig
from .data import Normalization, check_labels, load_dataset, load_images, select_classes
from .weights import load_weights

PREDICT_BATCH = 256  # images per forward pass in `predict`


@dataclass(frozen=True, slots=True)
class Prediction:
    path: str
    top: tuple[tuple[int, str, float], ...]  # (class index, class name, probability), best first


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """Metrics of weights on one split. `confusion[i, j]` counts examples of class i
    predicted as j (single-label data only)."""

    split: str
    examples: int
    loss: float | None
    accuracy: float | None
    top5: float | None
    confusion: np.ndarray | None
    class_names: tuple[str, ...]
    source: str
    checkpoint: str
    epoch: int | None
    weights: WeightsUsed | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsUsed:
    """Which checkpoint `eval`/`predict` read, said as `train` says its own: the pointer
    (`best`, `latest`, or None for a step folder given as it is), its step and epoch, and
    the run's latest (final) checkpoint, so a best-vs-final difference is never silent."""

    checkpoint: str
    which: str | None
    step: int
    epoch: int | None
    batch: int
    val_acc: float | None
    latest_step: int | None
    latest_epoch: int | None

    @staticmethod
    def of(weights: str | Path, which: str | None, meta: dict[str, Any]) -> WeightsUsed:
        from .checkpoint import checkpoint_info
        from .weights import checkpoint_root

        root = checkpoint_root(weights)
        pointer = None
        if Path(weights).name in ("best", "latest") and Path(weights).is_file():
            pointer = Path(weights).name
        elif root.is_dir() and not (root / "meta.json").is_file():
            pointer = which or ("best" if (root / "best").is_file() else "latest")
        latest = None
        with contextlib.suppress(CnnError, OSError, ValueError):
            latest = checkpoint_info(root if pointer else Path(meta["checkpoint"]).parent, which="latest")
        return WeightsUsed(
            checkpoint=str(meta["checkpoint"]),
            which=pointer,
            step=int(meta["step"]),
            epoch=meta.get("epoch") if isinstance(meta.get("epoch"), int) else None,
            batch=meta.get("batch") if isinstance(meta.get("batch"), int) else 0,
            val_acc=meta.get("val_acc") if isinstance(meta.get("val_acc"), float) else None,
            latest_step=None if latest is None else latest.step,
            latest_epoch=None if latest is None else latest.meta.get("epoch"),
        )

    def describe(self) -> str:
        """One line: `run/checkpoints/step-00000080 (best by val accuracy 95.14%, the default) · step 80, after
        epoch 2 · also the final weights`."""
        why = {
            "best": "best by val accuracy" + (f" {100 * self.val_acc:.2f}%" if self.val_acc is not None else ""),
            "latest": "latest: the final weights",
        }.get(self.which or "", "the step folder given")
        where = _when(self.step, self.epoch, self.batch)
        text = f"{self.checkpoint} ({why}) · {where}"
        if self.which == "best" and self.latest_step is not None:
            if self.latest_step == self.step:
                text += " · also the final weights"
            else:
                final = _when(self.latest_step, self.latest_epoch, 0 if self.latest_epoch is not None else 1)
                text += f" · the final weights are {final}: `--which latest`"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "which": self.which,
            "step": self.step,
            "epoch": self.epoch,
            "final_step": self.latest_step,
        }


def _when(step: int, epoch: int | None, batch: int) -> str:
    """`step 80, after epoch 2` (or `step 85, epoch 3 batch 5` mid-epoch)."""
    if epoch is None:
        return f"step {step}"
    return f"step {step}, " + (f"epoch {epoch + 1} batch {batch}" if batch else f"after epoch {epoch}")


def _inference(net: Net, variables: dict, fold: bool) -> tuple[Net, dict]:
    """The network and variables to evaluate: `fold` applies the inference passes
    (`Net.for_inference`: BN and preprocessing folded into the weights, dropout dropped)."""
    return net.for_inference(variables) if fold else (net, variables)


def _probability_fn(net: Net, loss: str, dtype: str = "float32") -> Any:
    """`fn(variables, x) -> probabilities`, jitted once for every batch of a call."""
    import jax

    from ..backends.jax.model import final_activation, forward
    from . import engine

    kwargs = engine.Compute(dtype=dtype).kwargs(train=False)

    probabilities = loss == "bce" and final_activation(net.ir, ("sigmoid",)) is not None

    @jax.jit
    def run(v: dict, x: Any) -> Any:
        out = forward(net.ir, v, x, logits=True, **kwargs)[0]
        if loss == "bce":
            return out if probabilities else jax.nn.sigmoid(out)
        return jax.nn.softmax(out, axis=-1)

    return run


def _probabilities(net: Net, variables: dict, x: np.ndarray, loss: str, dtype: str = "float32") -> np.ndarray:
    return np.asarray(_probability_fn(net, loss, dtype)(variables, x))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True, slots=True)
class ImageError:
    """An image `predict` skipped, and why (the error that reading or fitting it raised)."""

    path: str
    error: CnnError


def expand_images(args: Sequence[str | Path]) -> tuple[list[str], list[ImageError]]:
    """Image paths from command-line arguments: a folder gives its image files (by suffix,
    sorted, not recursive), a glob pattern that names no file its matches (`**` recurses),
    anything else itself. A folder without images or a pattern without matches is an error
    of its own, so a typo is never silently nothing."""
    import glob

    paths: list[str] = []
    errors: list[ImageError] = []
    for arg in map(str, args):
        p = Path(arg)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                errors.append(
                    ImageError(arg, DataError(f"the folder `{arg}` holds no image files ({', '.join(IMAGE_SUFFIXES)})"))
                )
            paths += found
        elif not p.exists() and glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True) if Path(f).is_file())
            if not found:
                errors.append(ImageError(arg, DataError(f"no file matches `{arg}`")))
            paths += found
        else:
            paths.append(arg)
    return paths, errors


def net_from_checkpoint(weights: str | Path, which: str | None = None) -> Net:
    """The network a run was trained with, compiled from the spec text its checkpoint keeps
    (so `cnndsl predict --weights RUN IMAGE` needs no .cnn file)."""
    from ..net import loads
    from .checkpoint import checkpoint_info
    from .weights import checkpoint_root

    root = checkpoint_root(weights)
    choice = which or ("best" if (root / "best").is_file() else "latest")
    info = checkpoint_info(root, which=choice)  # type: ignore[arg-type]
    text, path = info.meta.get("spec"), info.meta.get("spec_path")
    if not isinstance(text, str):
        raise DataError(
            f"`{info.path}` does not keep the spec it was trained with",
            hints=["give the .cnn file: `cnndsl predict SPEC --weights RUN IMAGE`"],
        )
    return loads(text, f"{path if isinstance(path, str) else 'spec'} (as saved in {info.path})")


def _resize_hint(err: DataError, net: Net) -> DataError:
    """`load_images` suggests the training setting `resize`; `predict` has options for it."""
    w, h = net.input.spatial if net.input.rank == 2 else (0, 0)
    err.hints = [
        f"or resize it to {w}x{h} on loading: `--resize` (bilinear), or `--resize N --crop M` (torchvision's eval"
        " transform); in Python `predict(..., resize=True)`"
        if "(`resize`)" in hint
        else hint
        for hint in err.hints
    ]
    return err


def _load_one(path: str, net: Net, cfg: TrainConfig, resize: bool | int | None, crop: int | None) -> np.ndarray:
    """One image file as a (1, ...) float32 batch, fitted to the input (pixels 0..255)."""
    if isinstance(resize, bool) or (resize is None and crop is None):
        try:
            return load_images([path], net.input, grayscale=cfg.grayscale, resize=bool(resize) or cfg.resize)
        except DataError as e:
            raise _resize_hint(e, net) from None
    from ..interop.preprocess import transformed_files

    size = net.input.spatial if net.input.rank == 2 else None
    tmp, files = transformed_files([path], resize, crop, channels=net.input.depth, size=size)
    try:
        return load_images(files, net.input, grayscale=cfg.grayscale)
    finally:
        tmp.cleanup()


def predict(
    net: Net | None,
    weights: str | Path,
    images: Sequence[str | Path],
    *,
    top: int = 5,
    which: str | None = None,
    fold: bool = False,
    dtype: str = "float32",
    allow_changed_spec: bool = False,
    resize: bool | int | None = None,
    crop: int | None = None,
    errors: list[ImageError] | None = None,
) -> list[Prediction]:
    """The `top` most probable classes of each image file (fitted to `net.input` as in
    training: grayscale/resize per the run's settings, then its normalisation). `net=None`
    compiles the spec the checkpoint keeps. `resize=True` resizes any image to the input
    size (bilinear); `resize=N` / `crop=M` apply torchvision's eval transform (short side to
    N, centre M x M). `fold`: run the inference-compiled network (`Net.for_inference`);
    `dtype="bfloat16"`: convolutions and dense layers in bfloat16 with float32 accumulation.
    A spec that differs from the one the weights were trained with is refused unless
    `allow_changed_spec`. With an `errors` list, an image that cannot be read or fitted is
    appended there and skipped; without one, the first such image raises its `DataError`."""
    if resize is True and crop is not None:
        raise ArgumentError(
            "`--resize` without a size stretches to the input size, so there is nothing left to crop",
            hints=["give the short side: `--resize N --crop M` (e.g. `--resize 256 --crop 224`)"],
        )
    if net is None:
        net = net_from_checkpoint(weights, which)
    variables, meta = load_weights(net, weights, which, allow_changed_spec=allow_changed_spec)
    net, variables = _inference(net, variables, fold)
    cfg = TrainConfig.from_dict(meta.get("config", {}))
    if not images:
        raise DataError("no images given")
    kept, arrays = [], []
    for path in map(str, images):
        try:
            arrays.append(_load_one(path, net, cfg, resize, crop))
        except DataError as e:
            if errors is None:
                raise
            errors.append(ImageError(path, e))
            continue
        kept.append(path)
    if not kept:
        return []
    norm = Normalization.from_dict(meta["normalization"]) if "normalization" in meta else None
    names = list(meta.get("class_names") or [])
    run, out = _probability_fn(net, cfg.loss, dtype), []
    for i in range(0, len(kept), PREDICT_BATCH):  # fixed-size padded batches: one compilation
        x = np.concatenate(arrays[i : i + PREDICT_BATCH])
        n = len(x)
        size = min(PREDICT_BATCH, len(kept))
        x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)]) if n < size else x
        x = norm.apply(x) if norm is not None else x
        if net.input.is_flat:
            x = x.reshape(len(x), -1)
        p = np.asarray(run(variables, x))[:n]
        names += [str(j) for j in range(len(names), p.shape[-1])]
        for path, row in zip(kept[i : i + PREDICT_BATCH], p, strict=True):
            order = np.argsort(-row, kind="stable")[: max(1, min(top, len(row)))]
            out.append(Prediction(path, tuple((int(j), names[j], float(row[j])) for j in order)))
    return out


def evaluate(
    net: Net,
    weights: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    which: str | None = None,
    devices: int = 1,
    fold: bool = False,
    dtype: str = "float32",
    allow_changed_spec: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Evaluation:
    """Accuracy, top-5 and the confusion matrix of the weights on a split of `data` (default:
    the data the weights were trained on), normalised as in training. `fold`, `dtype` and
    `allow_changed_spec` as in `predict`. Without `data`, the data set named in the checkpoint
    is passed to `announce` (a line of text) before anything of it is read."""
    from . import engine
    from .loop import evaluate_arrays

    if split not in ("train", "val", "test"):
        raise ArgumentError(f"unknown split `{split}`", hints=["choose train, val or test"])
    variables, meta = load_weights(net, weights, which, allow_changed_spec=allow_changed_spec)
    net, variables = _inference(net, variables, fold)
    cfg = TrainConfig.from_dict(meta.get("config", {}))
    spec = data or cfg.data
    if data is None and announce is not None:
        announce(
            f"data    {spec}: the data these weights were trained on, as {meta['checkpoint']}/meta.json names it"
            " (choose other data with --data)"
        )
    ds = load_dataset(
        spec,
        net.input,
        val_fraction=cfg.val,
        seed=cfg.seed,
        normalize="none",
        grayscale=cfg.grayscale,
        resize=cfg.resize,
    )
    if cfg.classes is not None and data is None:
        ds = select_classes(ds, cfg.classes)
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    check_labels(y, net.output.size, what=f"{split} labels")
    if "normalization" in meta:
        x = Normalization.from_dict(meta["normalization"]).apply(x)
    task = engine.make_task(net.ir, cfg)
    placement = engine.Placement(devices)
    eval_fn = engine.make_eval_step(net.ir, task, placement, engine.Compute(dtype=dtype))
    m, out = evaluate_arrays(eval_fn, placement.state(variables), x, y, placement, outputs=True)
    summary = engine.summarize(m)
    confusion = None
    if y.ndim == 1 and out is not None:
        k = net.output.size
        confusion = np.zeros((k, k), np.int64)
        np.add.at(confusion, (y, out.argmax(-1)), 1)
    names = tuple(meta.get("class_names") or ds.class_names)
    return Evaluation(
        split=split,
        examples=len(x),
        loss=summary["loss"],
        accuracy=summary["acc"],
        top5=summary["top5"],
        confusion=confusion,
        class_names=names,
        source=ds.source,
        checkpoint=meta["checkpoint"],
        epoch=meta.get("epoch"),
        weights=WeightsUsed.of(weights, which, meta),
    )
