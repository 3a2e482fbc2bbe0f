"""Using trained weights: `predict` (top-k classes of image files) and `evaluate`
(accuracy, top-5 and a confusion matrix on a data set's split).

Both repeat what training did to the pixels (the checkpoint's normalisation) and report
probabilities as the trained network defines them: softmax of the logits for crossentropy
and mse, a per-class sigmoid for bce.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Normalization, check_labels, load_dataset, load_images, select_classes
from ..errors import ArgumentError
from ..net import Net
from .config import TrainConfig
from .weights import load_weights


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


def _inference(net: Net, variables: dict, fold: bool) -> tuple[Net, dict]:
    """The network and variables to evaluate: `fold` applies the inference passes
    (`Net.for_inference`: BN and preprocessing folded into the weights, dropout dropped)."""
    return net.for_inference(variables) if fold else (net, variables)


def _probabilities(net: Net, variables: dict, x: np.ndarray, loss: str, dtype: str = "float32") -> np.ndarray:
    import jax

    from ..backends.jax import final_activation, forward
    from . import engine

    kwargs = engine.Compute(dtype=dtype).kwargs(train=False)

    probabilities = loss == "bce" and final_activation(net.ir, ("sigmoid",)) is not None

    @jax.jit
    def run(v: dict, x: Any) -> Any:
        out = forward(net.ir, v, x, logits=True, **kwargs)[0]
        if loss == "bce":
            return out if probabilities else jax.nn.sigmoid(out)
        return jax.nn.softmax(out, axis=-1)

    return np.asarray(run(variables, x))


def predict(
    net: Net,
    weights: str | Path,
    images: Sequence[str | Path],
    *,
    top: int = 5,
    which: str | None = None,
    fold: bool = False,
    dtype: str = "float32",
    allow_changed_spec: bool = False,
) -> list[Prediction]:
    """The `top` most probable classes of each image file (fitted to `net.input` as in
    training: grayscale/resize per the run's settings, then its normalisation). `fold`: run
    the inference-compiled network (`Net.for_inference`); `dtype="bfloat16"`: convolutions
    and dense layers in bfloat16 with float32 accumulation. A spec that differs from the
    one the weights were trained with is refused unless `allow_changed_spec`."""
    variables, meta = load_weights(net, weights, which, allow_changed_spec=allow_changed_spec)
    net, variables = _inference(net, variables, fold)
    cfg = TrainConfig.from_dict(meta.get("config", {}))
    x = load_images(images, net.input, grayscale=cfg.grayscale, resize=cfg.resize)
    x = Normalization.from_dict(meta["normalization"]).apply(x) if "normalization" in meta else x
    if net.input.is_flat:
        x = x.reshape(len(x), -1)
    p = _probabilities(net, variables, x, cfg.loss, dtype)
    names = list(meta.get("class_names") or [])
    names += [str(i) for i in range(len(names), p.shape[-1])]
    out = []
    for path, row in zip(images, p, strict=True):
        order = np.argsort(-row, kind="stable")[: max(1, min(top, len(row)))]
        out.append(Prediction(str(path), tuple((int(i), names[i], float(row[i])) for i in order)))
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
    )
