"""Pictures the tutorials draw: what each layer of a network does to one image.

`draw(net, variables, image)` runs the network on one picture and lays out, top to bottom,
the input, the kernels of its fixed filters and its first convolution, and the feature maps after every spatial layer
(a grid per layer, titled with the layer's name, its text and its output `D@WxH`), so a
student sees what `filter sobel` or a trained `conv 6@5x5` does to a picture.

Each map is scaled on its own (its minimum black, its maximum white), as the tutorials
show them; filters are drawn with a diverging map (negative blue, zero white, positive red)
or, for an RGB first layer, as colour patches. matplotlib runs with its Agg backend (no
display needed); JAX is imported only here, not by `cnndsl compile`.
"""

from __future__ import annotations

import fnmatch
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ir
from .errors import ArgumentError

MAX_LAYERS = 40  # more rows than this make a picture nobody reads; `layers=` picks others


@dataclass(frozen=True)
class Panel:
    """One row of the picture: a title and images `(n, H, W)` or `(n, H, W, 3)`."""

    title: str
    images: np.ndarray
    kind: str  # "input" | "filters" | "maps"
    total: int  # how many there are (`images` may show the first few)


def spatial_layers(net: ir.Network) -> list[ir.Layer]:
    """The layers whose output is a 2-D map (`D@WxH`), in execution order."""
    return [n for n in ir.layers(net.body) if n.y is not None and n.y.rank == 2]


def kernel_layers(net: ir.Network, variables: dict) -> list[tuple[ir.Layer, np.ndarray]]:
    """Kernels worth drawing, `(KH, KW, in, out)`: every fixed `filter` and the first learned
    convolution (`conv`, `dwconv`, `deconv`) with a 2-D kernel, in execution order."""
    out: list[tuple[ir.Layer, np.ndarray]] = []
    learned = False
    for n in ir.layers(net.body):
        fixed = n.op == "filter"
        if not fixed and learned:
            continue
        tree = variables.get("fixed" if fixed else "params", {})
        for part in n.path:
            tree = tree.get(part, {}) if isinstance(tree, dict) else {}
        k = tree.get("kernel") if isinstance(tree, dict) else None
        if k is not None and np.ndim(k) == 4 and n.op in ("filter", "conv", "dwconv", "deconv"):
            out.append((n, np.asarray(k, np.float64)))
            learned = learned or not fixed
    return out


def feature_maps(net: ir.Network, variables: dict, x: np.ndarray) -> list[tuple[ir.Layer, np.ndarray]]:
    """Each spatial layer's output `(H, W, D)` for one image `x: (1, H, W, D)` (eval mode)."""
    import jax.numpy as jnp

    from .backends.jax.model import forward

    wanted = {id(n) for n in spatial_layers(net)}
    seen: list[tuple[ir.Layer, np.ndarray]] = []

    def observe(node: ir.Node, y: Any) -> None:
        if id(node) in wanted:
            seen.append((node, np.asarray(y[0], np.float64)))  # type: ignore[arg-type]

    forward(net, variables, jnp.asarray(x, jnp.float32), observe=observe)
    return seen


def check_drawable(net: ir.Network) -> list[ir.Layer]:
    """The spatial layers, or an `ArgumentError` for a network with nothing to draw."""
    spatial = spatial_layers(net)
    if net.input.rank != 2 or not spatial:
        raise ArgumentError(
            f"`{net.source.path}` has no 2-D feature maps to draw (input {net.input})",
            hints=["`cnndsl viz` draws networks on images: an input like `3@64x64` and conv/pool/filter layers"],
        )
    return spatial


def select(layers: list[ir.Layer], patterns: list[str] | None) -> list[ir.Layer]:
    """The layers whose name (`conv1`, `stage2.block1.conv1`) matches one of `patterns`."""
    if not patterns:
        return layers
    chosen = [n for n in layers if any(fnmatch.fnmatchcase(n.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(n.name for n in layers[:12]) + (", ..." if len(layers) > 12 else "")
        raise ArgumentError(
            f"no spatial layer matches {', '.join(f'`{p}`' for p in patterns)}",
            notes=[f"the spatial layers are {names}"],
            hints=["patterns match layer names as `fnmatch` does: `conv*`, `stage2.*`"],
        )
    return chosen


def panels(
    net: ir.Network,
    variables: dict,
    x: np.ndarray,
    *,
    layers: list[str] | None = None,
    maps: int = 16,
) -> list[Panel]:
    """The picture's rows: the input, the first filters, then up to `maps` maps per layer."""
    chosen = select(check_drawable(net), layers)
    if len(chosen) > MAX_LAYERS:
        raise ArgumentError(
            f"{len(chosen)} spatial layers are too many to draw in one picture (at most {MAX_LAYERS})",
            hints=["pick some with `--layers`, e.g. `--layers 'conv*'` or `--layers 'stage2.*'`"],
        )
    out = [Panel(f"input · {net.input}", _input_image(x[0]), "input", 1)]
    for n, k in kernel_layers(net, variables):
        shown = _filters(k)
        what = "kernels" if n.op == "filter" else "filters"
        title = f"{n.name} {what} · `{n.text}` · {k.shape[1]}x{k.shape[0]} (blue < 0 < red)"
        out.append(Panel(title, shown[: maps * 2], "filters", len(shown)))
    keep = {id(n) for n in chosen}
    for n, y in feature_maps(net, variables, x):
        if id(n) in keep:
            imgs = np.moveaxis(y, -1, 0)  # (D, H, W)
            out.append(Panel(f"{n.name} · `{n.text}` · {n.y}", imgs[:maps], "maps", imgs.shape[0]))
    return out


def _input_image(im: np.ndarray) -> np.ndarray:
    """(H, W, D) pixels -> one picture scaled to 0..1 (RGB for 3 channels, else the first)."""
    a = im if im.shape[-1] == 3 else im[..., :1]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a[None] if a.shape[-1] == 3 else a[None, ..., 0]


def _filters(k: np.ndarray) -> np.ndarray:
    """Kernel `(KH, KW, in, out)` -> one image per filter: RGB patches (scaled together) for
    3 input channels, else one map per (input, output) pair of a depthwise layer or the
    input-channel mean."""
    if k.shape[2] == 3:
        m = np.abs(k).max() or 1.0
        return np.moveaxis(0.5 + 0.5 * k / m, -1, 0)  # (out, KH, KW, 3)
    return np.moveaxis(k.mean(axis=2), -1, 0)  # (out, KH, KW)


def figure(ps: list[Panel], *, columns: int = 8, title: str = "") -> Any:
    """A matplotlib figure of the panels (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    heights = [1 if p.kind == "input" else math.ceil(len(p.images) / columns) for p in ps]
    cell = 1.25
    fig = plt.figure(figsize=(columns * cell, sum(heights) * cell + 0.45 * len(ps)))
    if title:
        ps = [Panel(f"{title}: {ps[0].title}", ps[0].images, ps[0].kind, ps[0].total), *ps[1:]]
    subs = fig.subfigures(len(ps), 1, height_ratios=[h + 0.45 / cell for h in heights]) if len(ps) > 1 else [fig]
    for sub, p, h in zip(subs, ps, heights, strict=True):
        more = f" (first {len(p.images)} of {p.total})" if p.total > len(p.images) else ""
        sub.suptitle(p.title + more, fontsize=9, x=0.01, ha="left", fontweight="bold" if p.kind == "input" else None)
        cols = 1 if p.kind == "input" else columns
        axes = np.atleast_1d(sub.subplots(h, cols, squeeze=False).ravel())
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i >= len(p.images):
                continue
            im = p.images[i]
            if p.kind == "filters" and im.ndim == 2:
                m = float(np.abs(im).max()) or 1.0
                ax.imshow(im, cmap="bwr", vmin=-m, vmax=m, interpolation="nearest")
            elif im.ndim == 3:
                ax.imshow(np.clip(im, 0, 1), interpolation="nearest")
            else:
                ax.imshow(im, cmap="gray", interpolation="nearest")
            if p.kind != "input":
                ax.set_title(str(i), fontsize=6, pad=1)
    return fig


def png_bytes(fig: Any, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100)
    from matplotlib import pyplot as plt

    plt.close(fig)
    return buf.getvalue()
