"""Hypothesis strategies for random .cnn specs.

The shape-keeping layers come from the op registry (cnndsl/ops): every op that needs no
arguments, or whose `example` applies, and keeps any input's shape, so a new activation or
normalisation is fuzzed without being listed here.
"""

from __future__ import annotations

from hypothesis import strategies as st

import cnndsl
from cnndsl.ops import REGISTRY
from cnndsl.syntax.binder import REQUIRED


def _shape_keeping(module: str) -> list[str]:
    """`name` and `example` usages of the ops in `cnndsl.ops.<module>` that keep the shape of
    every input drawn here (depth 1-4, 1-D and 2-D)."""
    out: list[str] = []
    for op in {id(o): o for o in REGISTRY.values()}.values():
        if type(op).__module__ != f"cnndsl.ops.{module}":
            continue
        usages = ([] if any(p.default is REQUIRED for p in op.params) else [op.name]) + [op.example] * bool(op.example)
        for usage in dict.fromkeys(usages):
            shapes = ["1@6", "4@6", "1@6x7", "3@6x7", "4@7x6"]
            try:
                if all(str(cnndsl.loads(f"input {s}\n{usage}").output) == s for s in shapes):
                    out.append(usage)
            except cnndsl.CnnError:
                pass
    return sorted(out)


ACTIVATIONS = _shape_keeping("activation")  # relu, gelu, gelu tanh, hardswish, leakyrelu 0.1, ...
NORMS = _shape_keeping("norm")  # bn, layernorm, instancenorm, lrn 5, ...
CHANNEL = _shape_keeping("channel") + _shape_keeping("stochastic")  # layerscale, droppath


@st.composite
def chains(draw):
    """A random chain on a random (possibly non-square, 1-D or 2-D) input."""
    rank = draw(st.sampled_from([1, 2, 2, 2]))
    depth = draw(st.integers(1, 4))
    size = [draw(st.integers(6, 20)) for _ in range(rank)]
    text = f"input {depth}@{'x'.join(map(str, size))}"
    layers = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "dwconv", "deconv", "pool", "act", "bn", "dropout", "channel"]))
        k = (
            "x".join(str(draw(st.integers(1, 4))) for _ in range(rank))
            if draw(st.booleans())
            else str(draw(st.integers(1, 4)))
        )
        if kind == "conv":
            g = draw(st.sampled_from([1, 1, 2]))
            f = draw(st.integers(1, 4)) * g
            opts = [f"s{draw(st.integers(1, 2))}", draw(st.sampled_from(["p0", "p1", "same", "valid", "d2", ""]))]
            if g > 1:
                opts.append(f"g{g}")
                depth_fix = f"conv {2 * g}@1x1 -> " if rank == 2 else f"conv {2 * g}@1 -> "
                layers.append(depth_fix.rstrip(" ->"))
            layers.append(f"conv {f}@{k} " + " ".join(opts) + draw(st.sampled_from(["", " nobias"])))
        elif kind == "dwconv":
            layers.append(f"dwconv {k} p1" + draw(st.sampled_from(["", " s2", " nobias"])))
        elif kind == "deconv":
            layers.append(f"deconv {draw(st.integers(1, 4))}@{k} s{draw(st.integers(1, 2))}")
        elif kind == "pool":
            op = draw(st.sampled_from(["maxpool", "avgpool", "minpool", "sumpool"]))
            w = draw(st.integers(1, 3))
            layers.append(f"{op} {w} s{draw(st.integers(1, 2))}" + draw(st.sampled_from(["", " ceil", f" p{w // 2}"])))
        elif kind == "act":
            layers.append(draw(st.sampled_from(ACTIVATIONS)))
        elif kind == "bn":
            layers.append(draw(st.sampled_from(NORMS)))
        elif kind == "channel":
            layers.append(draw(st.sampled_from(CHANNEL)))
        else:
            layers.append(f"dropout {draw(st.sampled_from(['0', '0.5']))}")
    tail = draw(st.sampled_from(["", "-> flatten -> dense 3", "-> gap -> dense 2", "-> gmp"]))
    return text + "\n" + " -> ".join(layers) + " " + tail
