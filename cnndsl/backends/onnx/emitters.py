"""The ONNX lowering table: op (registry name) -> emitter, in inference mode.

An emitter `fn(e: Emit) -> tensor` adds the nodes that compute one layer from `e.x` and
returns the tensor holding its output, channels first. It reads the layer's arguments, its
variables and the IR's shapes `e.xs`/`e.ys`; it never works a shape out again (an output
size, a `same` padding split or a pooling overhang comes from the IR's `x` and `y` and the
op's own geometry helpers). `export` records every layer's IR shape as value info, and
`onnx.checker.check_model(full_check=True)` fails if a node's inferred shape disagrees.

`UNSUPPORTED` maps an op to the reason ONNX cannot express it; `export` reports such a layer
as a located `CnnError`. tests/backends/onnx checks that every registered op is in exactly
one of the two tables, and that each emitter equals the JAX lowering on the op's example.

Inference mode: `bn` normalises with its running statistics, `dropout` is the identity,
fixed filter kernels and preprocessing (`scale`, `normalize`, `grayscale`, ...) are part of
the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...ops import REGISTRY
from ...ops.base import Window, bcast
from ...ops.conv import geometry, pads
from ...ops.resample import Bins, adaptive_bins, frac_bins
from .context import Emit, array_order

Emitter = Callable[[Emit], str]


# --- element-wise ----------------------------------------------------------------------------
def _unary(op_type: str, **attrs: object) -> Emitter:
    def emit(e: Emit) -> str:
        return e.out(op_type, [e.x], **attrs)

    emit.__doc__ = f"ONNX `{op_type}`."
    return emit


def relu6(e: Emit) -> str:
    return e.out("Clip", [e.x, e.const("min", 0.0), e.const("max", 6.0)])


def silu(e: Emit) -> str:
    return e.out("Mul", [e.x, e.node("Sigmoid", [e.x])])


def gelu(e: Emit) -> str:
    """Exact, `x/2 (1 + erf(x/sqrt 2))`; `gelu tanh`: `x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`
    (ONNX's own `Gelu` needs opset 20)."""
    x = e.x
    if e.a.approximate == "erf":
        erf = e.node("Erf", [e.node("Mul", [x, e.const("inv_sqrt_2", 1 / math.sqrt(2))])])
        half = e.node("Mul", [e.node("Add", [erf, e.const("one", 1.0)]), e.const("half", 0.5)])
        return e.out("Mul", [x, half])
    cube = e.node("Mul", [e.node("Mul", [x, x]), x])
    inner = e.node("Add", [x, e.node("Mul", [cube, e.const("c", 0.044715)])])
    t = e.node("Tanh", [e.node("Mul", [inner, e.const("sqrt_2_over_pi", math.sqrt(2 / math.pi))])])
    half = e.node("Mul", [e.node("Add", [t, e.const("one", 1.0)]), e.const("half", 0.5)])
    return e.out("Mul", [x, half])


def hardswish(e: Emit) -> str:
    return e.out("HardSwish", [e.x])


def mish(e: Emit) -> str:
    """`x * tanh(softplus(x))` (ONNX's own `Mish` needs opset 18)."""
    return e.out("Mul", [e.x, e.node("Tanh", [e.node("Softplus", [e.x])])])


def leakyrelu(e: Emit) -> str:
    return e.out("LeakyRelu", [e.x], alpha=float(e.a.slope))


def elu(e: Emit) -> str:
    return e.out("Elu", [e.x], alpha=float(e.a.alpha))


def prelu(e: Emit) -> str:
    return e.out("PRelu", [e.x, e.const("slope", e.var("slope").reshape(1))])


def glu(e: Emit) -> str:
    """Halves of the depth `a`, `b` -> `a * sigmoid(b)`."""
    half = e.xs.depth // 2
    a, b = e.node("Split", [e.x, e.ints("split", [half, half])], outputs=2, axis=1)
    return e.out("Mul", [a, e.node("Sigmoid", [b])])


def identity(e: Emit) -> str:
    """`identity`, and `dropout` in inference mode."""
    return e.out("Identity", [e.x])


def scale(e: Emit) -> str:
    if not e.a.offset:
        return e.out("Mul", [e.x, e.const("factor", e.a.factor)])
    y = e.node("Mul", [e.x, e.const("factor", e.a.factor)])
    return e.out("Add", [y, e.const("offset", e.a.offset)])


def normalize(e: Emit) -> str:
    """`(x - mean) / std`, per channel (a single value broadcasts)."""
    depth = e.xs.depth
    steps = [(op, v) for op, v in (("Sub", e.a.mean), ("Div", e.a.std)) if v is not None]
    x = e.x
    for i, (op_type, v) in enumerate(steps):
        c = e.channel("mean" if op_type == "Sub" else "std", bcast(tuple(v), depth))
        x = e.out(op_type, [x, c]) if i == len(steps) - 1 else e.node(op_type, [x, c])
    return x


def grayscale(e: Emit) -> str:
    """BT.601 luma as a 1x1 convolution with weights (0.299, 0.587, 0.114)."""
    from ...ops.preprocess import BT601

    w = np.asarray(BT601, np.float32).reshape((1, 3) + (1,) * e.xs.rank)
    return e.out("Conv", [e.x, e.const("weights", w)], kernel_shape=[1] * e.xs.rank)


# --- normalisation ---------------------------------------------------------------------------
def bn(e: Emit) -> str:
    """`BatchNormalization` with the running statistics (inference mode)."""
    inputs = [e.const(k, e.var(k)) for k in ("scale", "bias", "mean", "var")]
    return e.out("BatchNormalization", [e.x, *inputs], epsilon=float(e.a.eps))


def layernorm(e: Emit) -> str:
    """Over the depth axis (axis 1 here, so not ONNX's `LayerNormalization`, which takes the
    trailing axes): `(x - mean) / sqrt(var + eps) * scale + bias`."""
    mean = e.node("ReduceMean", [e.x], axes=[1], keepdims=1)
    d = e.node("Sub", [e.x, mean])
    var = e.node("ReduceMean", [e.node("Mul", [d, d])], axes=[1], keepdims=1)
    inv = e.node("Reciprocal", [e.node("Sqrt", [e.node("Add", [var, e.const("eps", e.a.eps)])])])
    y = e.node("Mul", [e.node("Mul", [d, inv]), e.channel("scale", e.var("scale"))])
    return e.out("Add", [y, e.channel("bias", e.var("bias"))])


def groupnorm(e: Emit) -> str:
    """`(N, D, ...)` viewed as `(N, G, rest)`, normalised over `rest`, back, then the affine
    (ONNX's own `GroupNormalization` needs opset 18)."""
    g = e.a.groups
    x = e.node("Reshape", [e.x, e.ints("grouped", [0, g, -1])])
    mean = e.node("ReduceMean", [x], axes=[2], keepdims=1)
    d = e.node("Sub", [x, mean])
    var = e.node("ReduceMean", [e.node("Mul", [d, d])], axes=[2], keepdims=1)
    y = e.node("Div", [d, e.node("Sqrt", [e.node("Add", [var, e.const("eps", e.a.eps)])])])
    y = e.node("Reshape", [y, e.ints("shape", e.static_dims(e.xs))])
    y = e.node("Mul", [y, e.channel("scale", e.var("scale"))])
    return e.out("Add", [y, e.channel("bias", e.var("bias"))])


def instancenorm(e: Emit) -> str:
    d = e.xs.depth
    scale, bias = (e.var("scale"), e.var("bias")) if e.a.affine else (np.ones(d, np.float32), np.zeros(d, np.float32))
    return e.out("InstanceNormalization", [e.x, e.const("scale", scale), e.const("bias", bias)], epsilon=float(e.a.eps))


def lrn(e: Emit) -> str:
    """PyTorch's window (channels `c - n//2 .. c + (n-1)//2`, which ONNX's `LRN` shifts by one
    for even n): the squares averaged by an `AveragePool` over a channel axis, as PyTorch does.
    The positions are merged into one axis first, `(N, 1, D, H*W...)`, so the pool is 2-D for
    any input rank (onnxruntime pools at most 3 axes)."""
    n = e.a.size
    sq = e.node("Reshape", [e.node("Mul", [e.x, e.x]), e.ints("as_image", [0, 1, e.xs.depth, -1])])
    avg = e.node("AveragePool", [sq], kernel_shape=[n, 1], pads=[n // 2, 0, (n - 1) // 2, 0], count_include_pad=1)
    avg = e.node("Reshape", [avg, e.ints("shape", e.static_dims(e.xs))])
    div = e.node("Add", [e.node("Mul", [avg, e.const("alpha", e.a.alpha)]), e.const("k", e.a.k)])
    return e.out("Div", [e.x, e.node("Pow", [div, e.const("beta", e.a.beta)])])


def layerscale(e: Emit) -> str:
    return e.out("Mul", [e.x, e.channel("scale", e.var("scale"))])


# --- convolutions and dense ------------------------------------------------------------------
def _bias(e: Emit) -> list[str]:
    return [e.const("bias", e.var("bias"))] if e.has("bias") else []


def conv(e: Emit) -> str:
    """`conv` and `dwconv`: the kernel `(*k[::-1], D/groups, F)` (HWIO) becomes `(F, D/groups,
    *k[::-1])` (OIHW); the padding is the op's rule applied to the IR's `x` and `y`."""
    kernel = e.var("kernel")
    rank = e.xs.rank
    k = kernel.shape[:rank][::-1]  # written order
    _, s, d, eff = geometry(e.a, k, rank)
    before, after = zip(*pads(e.a, e.xs, e.ys, eff, s))
    w = kernel.transpose(rank + 1, rank, *range(rank))
    return e.out(
        "Conv",
        [e.x, e.const("kernel", w), *_bias(e)],
        kernel_shape=array_order(k),
        strides=array_order(s),
        dilations=array_order(d),
        pads=array_order(before) + array_order(after),
        group=e.xs.depth // kernel.shape[-2],
    )


def deconv(e: Emit) -> str:
    """`ConvTranspose`: the kernel `(*k[::-1], D, F)` becomes `(D, F, *k[::-1])`, unflipped
    (ONNX's transposed convolution is the adjoint of a correlation, as ours is)."""
    kernel = e.var("kernel")
    rank = e.xs.rank
    k = kernel.shape[:rank][::-1]
    p = bcast(e.a.pad, rank)
    w = kernel.transpose(rank, rank + 1, *range(rank))
    return e.out(
        "ConvTranspose",
        [e.x, e.const("kernel", w), *_bias(e)],
        kernel_shape=array_order(k),
        strides=array_order(bcast(e.a.stride, rank)),
        pads=array_order(p) * 2,
        output_padding=array_order(bcast(e.a.outpad, rank)),
    )


def dense(e: Emit) -> str:
    kernel = e.var("kernel")
    if e.has("bias"):
        return e.out("Gemm", [e.x, e.const("kernel", kernel), e.const("bias", e.var("bias"))])
    return e.out("MatMul", [e.x, e.const("kernel", kernel)])


def filter_(e: Emit) -> str:
    """A fixed depthwise kernel `(*k[::-1], 1, D*M)` as a grouped `Conv`; the padding before
    is the op's window, the padding after what gives the IR's output size (stride 1)."""
    kernel = e.var("kernel")
    rank = e.xs.rank
    win = _window(e)
    before = [int(b) for b in win.pad]
    after = [o - 1 + k - w - b for o, k, w, b in zip(e.ys.spatial, win.kernel, e.xs.spatial, before)]
    return e.out(
        "Conv",
        [e.x, e.const("kernel", kernel.transpose(rank + 1, rank, *range(rank)))],
        kernel_shape=array_order(win.kernel),
        pads=array_order(tuple(before)) + array_order(tuple(after)),
        group=e.xs.depth,
    )


def _window(e: Emit) -> Window:
    """The op's receptive-field window for this layer: kernel, stride, padding before."""
    window = REGISTRY[e.layer.op].window(e.a, e.xs, e.ys)
    assert isinstance(window, Window), e.layer.op
    return window


# --- pooling ---------------------------------------------------------------------------------
def _pool_geometry(e: Emit) -> tuple[list[int], list[int], list[int], list[int]]:
    """Window, stride, padding and `ceil`-mode overhang per axis (written order), the last
    worked out from the IR's output size: `max((out - 1) * s + k - (in + 2p), 0)`."""
    win = _window(e)
    k = [int(v) for v in win.kernel]
    s = [int(v) for v in win.stride]
    p = [int(v) for v in win.pad]
    extra = [max((o - 1) * si + ki - (w + 2 * pi), 0) for o, w, ki, si, pi in zip(e.ys.spatial, e.xs.spatial, k, s, p)]
    return k, s, p, extra


def _pool_attrs(e: Emit) -> dict[str, list[int]]:
    k, s, p, extra = _pool_geometry(e)
    ends = [pi + ei for pi, ei in zip(p, extra)]
    return {
        "kernel_shape": array_order(tuple(k)),
        "strides": array_order(tuple(s)),
        "pads": array_order(tuple(p)) + array_order(tuple(ends)),
    }


def maxpool(e: Emit) -> str:
    return e.out("MaxPool", [e.x], **_pool_attrs(e))


def minpool(e: Emit) -> str:
    """`-maxpool(-x)` (ONNX has no min pooling; padding is ignored by both)."""
    y = e.node("MaxPool", [e.node("Neg", [e.x])], **_pool_attrs(e))
    return e.out("Neg", [y])


def sumpool(e: Emit) -> str:
    """The window mean counting every padded cell, times the window size."""
    k = _pool_geometry(e)[0]
    avg = e.node("AveragePool", [e.x], count_include_pad=1, **_pool_attrs(e))
    return e.out("Mul", [avg, e.const("window_size", float(math.prod(k)))])


def avgpool(e: Emit) -> str:
    """Zero padding counts in the divisor, the `ceil`-mode overhang does not (PyTorch): with an
    overhang the window sum is divided by a constant of per-position counts."""
    k, s, p, extra = _pool_geometry(e)
    if not any(extra):
        return e.out("AveragePool", [e.x], count_include_pad=1, **_pool_attrs(e))
    avg = e.node("AveragePool", [e.x], count_include_pad=1, **_pool_attrs(e))
    total = e.node("Mul", [avg, e.const("window_size", float(math.prod(k)))])
    counts = np.ones(())
    for n, o, ki, si, pi in zip(e.xs.spatial, e.ys.spatial, k, s, p):  # written order
        c = np.array([min(i * si + ki, n + 2 * pi) - i * si for i in range(o)], np.float64)
        counts = np.multiply.outer(c, counts) if counts.ndim else c  # array order: last written axis first
    return e.out("Div", [total, e.const("counts", counts[None])])


def gap(e: Emit) -> str:
    return e.out("ReduceMean", [e.x], axes=list(range(2, 2 + e.xs.rank)), keepdims=0)


def gmp(e: Emit) -> str:
    return e.out("ReduceMax", [e.x], axes=list(range(2, 2 + e.xs.rank)), keepdims=0)


def _reduce_bins(e: Emit, bins: tuple[Bins, ...], how: str) -> str:
    """Max or mean over per-axis bins (written order), one axis after another, as the JAX
    lowering does: a reshape where the bins tile the axis, else a gather of (out, k) blocks
    (short bins repeat their last index; a mean then masks them out)."""
    dims = [0, e.xs.depth, *e.xs.spatial[::-1]]  # 0: Reshape copies the batch
    x = e.x
    rank = len(bins)
    for i, b in enumerate(bins):
        axis = 2 + rank - 1 - i
        last = i == rank - 1
        starts = np.array([st for st, _ in b])
        lens = np.array([en - st for st, en in b])
        out, k = len(b), int(lens.max())
        split = [*dims[:axis], out, k, *dims[axis + 1 :]]
        reduce = "ReduceMax" if how == "max" else "ReduceMean"
        if (lens == k).all() and (starts == np.arange(out) * k).all() and out * k == dims[axis]:
            g = e.node("Reshape", [x, e.ints(f"split{i}", split)])
        else:
            idx = starts[:, None] + np.minimum(np.arange(k)[None, :], lens[:, None] - 1)
            g = e.node("Gather", [x, e.ints(f"bins{i}", idx.reshape(-1))], axis=axis)
            g = e.node("Reshape", [g, e.ints(f"split{i}", split)])
        emit = e.out if last else e.node
        if how == "max" or (lens == k).all():
            x = emit(reduce, [g], axes=[axis + 1], keepdims=0)
        else:
            trail = (1,) * (len(split) - axis - 2)
            mask = (np.arange(k)[None, :] < lens[:, None]).astype(np.float32).reshape(out, k, *trail)
            masked = e.node("Mul", [g, e.const(f"mask{i}", mask)])
            total = e.node("ReduceSum", [masked, e.ints(f"axes{i}", [axis + 1])], keepdims=0)
            x = emit("Div", [total, e.const(f"lens{i}", lens.astype(np.float32).reshape(out, *trail))])
        dims = [*dims[:axis], out, *dims[axis + 1 :]]
    return x


def adaptivepool(e: Emit) -> str:
    """`adaptiveavgpool` / `adaptivemaxpool`: PyTorch's bins between the IR's sizes."""
    bins = tuple(adaptive_bins(w, o) for w, o in zip(e.xs.spatial, e.ys.spatial))
    return _reduce_bins(e, bins, "max" if e.layer.op == "adaptivemaxpool" else "mean")


def fracmaxpool(e: Emit) -> str:
    """Graham's fixed pseudo-random regions, from the op's rule (`frac_bins`)."""
    bins = tuple(frac_bins(w, e.a.ratio, e.a.offset, e.a.overlap) for w in e.xs.spatial)
    return _reduce_bins(e, bins, "max")


# --- reshaping and resampling ----------------------------------------------------------------
def flatten(e: Emit) -> str:
    """Channels-last order, as cnndsl's `flatten`: transpose `(N, D, ...)` to `(N, ..., D)`."""
    x = e.x
    if e.xs.rank:
        x = e.node("Transpose", [x], perm=[0, *range(2, 2 + e.xs.rank), 1])
    return e.out("Flatten", [x], axis=1)


def slice_(e: Emit) -> str:
    start, stop = e.a.range
    return e.out("Slice", [e.x, e.ints("starts", [start]), e.ints("ends", [stop]), e.ints("axes", [1])])


def shuffle(e: Emit) -> str:
    """`(N, D, ...)` -> `(N, G, D/G, rest)`, swap the two group axes, back to the IR's shape."""
    g = e.a.groups
    x = e.node("Reshape", [e.x, e.ints("grouped", [0, g, e.xs.depth // g, -1])])
    x = e.node("Transpose", [x], perm=[0, 2, 1, 3])
    return e.out("Reshape", [x, e.ints("shape", e.static_dims(e.ys))])


def upsample(e: Emit) -> str:
    """Nearest neighbour by whole factors, exactly: reshape `(N, D, h, 1, w, 1)`, broadcast to
    `(N, D, h, kh, w, kw)` (`Expand`), merge back to the IR's output size."""
    sp = e.xs.spatial[::-1]
    k = bcast(e.a.factor, e.xs.rank)[::-1]
    split = [0, e.xs.depth, *(d for n in sp for d in (n, 1))]
    ones = [1, 1, *(d for ki in k for d in (1, ki))]
    x = e.node("Reshape", [e.x, e.ints("split", split)])
    x = e.node("Expand", [x, e.ints("factors", ones)])
    return e.out("Reshape", [x, e.ints("shape", e.static_dims(e.ys))])


def pad(e: Emit) -> str:
    p = array_order(bcast(e.a.size, e.xs.rank))
    mode = {"zeros": "constant", "reflect": "reflect", "edge": "edge"}[e.a.mode]
    return e.out("Pad", [e.x, e.ints("pads", [0, 0, *p, 0, 0, *p])], mode=mode)


# --- the table -------------------------------------------------------------------------------
EMITTERS: dict[str, Emitter] = {
    "relu": _unary("Relu"),
    "relu6": relu6,
    "gelu": gelu,
    "silu": silu,
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "softmax": _unary("Softmax", axis=1),
    "logsoftmax": _unary("LogSoftmax", axis=1),
    "identity": identity,
    "hardsigmoid": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "hardswish": hardswish,
    "mish": mish,
    "softplus": _unary("Softplus"),
    "leakyrelu": leakyrelu,
    "elu": elu,
    "prelu": prelu,
    "glu": glu,
    "conv": conv,
    "dwconv": conv,
    "deconv": deconv,
    "flatten": flatten,
    "slice": slice_,
    "shuffle": shuffle,
    "dense": dense,
    "dropout": identity,
    "droppath": identity,
    "bn": bn,
    "layernorm": layernorm,
    "groupnorm": groupnorm,
    "instancenorm": instancenorm,
    "lrn": lrn,
    "layerscale": layerscale,
    "maxpool": maxpool,
    "minpool": minpool,
    "sumpool": sumpool,
    "avgpool": avgpool,
    "gap": gap,
    "gmp": gmp,
    "scale": scale,
    "normalize": normalize,
    "grayscale": grayscale,
    "filter": filter_,
    "upsample": upsample,
    "pad": pad,
    "adaptiveavgpool": adaptivepool,
    "adaptivemaxpool": adaptivepool,
    "fracmaxpool": fracmaxpool,
}

# Merge kinds (`cnndsl.ops.MERGES`) -> the ONNX operator that joins two inputs: `Concat` on the
# depth axis; `Add` and `Mul` broadcast as the IR does (a `D@1x1` gate is `(N, D, 1, 1)`).
MERGE_OPS: dict[str, str] = {"add": "Add", "mul": "Mul", "concat": "Concat"}

# op -> why ONNX (opset 17, inference) cannot express it; `export` reports such a layer.
UNSUPPORTED: dict[str, str] = {}
