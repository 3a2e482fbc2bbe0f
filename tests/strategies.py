"""Hypothesis strategies for random .cnn specs."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def chains(draw):
    """A random chain on a random (possibly non-square, 1-D or 2-D) input."""
    rank = draw(st.sampled_from([1, 2, 2, 2]))
    depth = draw(st.integers(1, 4))
    size = [draw(st.integers(6, 20)) for _ in range(rank)]
    text = f"input {depth}@{'x'.join(map(str, size))}"
    layers = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "dwconv", "deconv", "pool", "act", "bn", "dropout"]))
        k = "x".join(str(draw(st.integers(1, 4))) for _ in range(rank)) if draw(st.booleans()) else str(draw(st.integers(1, 4)))
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
            layers.append(draw(st.sampled_from(["relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "elu", "leakyrelu 0.2", "prelu", "softmax", "identity"])))
        elif kind == "bn":
            layers.append(draw(st.sampled_from(["bn", "layernorm"])))
        else:
            layers.append(f"dropout {draw(st.sampled_from(['0', '0.5']))}")
    tail = draw(st.sampled_from(["", "-> flatten -> dense 3", "-> gap -> dense 2", "-> gmp"]))
    return text + "\n" + " -> ".join(layers) + " " + tail


