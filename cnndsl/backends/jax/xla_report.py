"""`cnndsl compile --xla`: XLA's own cost and memory analysis next to the compiler's.

The compiler counts 2 FLOPs per MAC of convolutions and dense layers only; XLA's
`cost_analysis()` counts every floating-point operation of the compiled program
(activations, pooling, normalisation, bias additions too), so its figure is somewhat
higher. The compiler's activation estimate is the sum of all layer outputs; XLA's
`memory_analysis()` reports the temporary buffers its schedule really needs (less, since
buffers are reused) for inference, and for a training step (where activations are kept for
the backward pass; `remat` trades them for recomputation). The FLOPs cross-check compiles
the inference pass with XLA's own convolutions (`lowering={"*": "xla"}`), so it counts what
the compiler counts; the program that runs by default may do fewer multiplies (Winograd
convolutions), and its figure is reported next to it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ... import ir
from ...report import totals
from .model import forward, init_variables


def _compiled(fn: Any, *args: Any) -> Any:
    return jax.jit(fn).lower(*args).compile()


def _flops(compiled: Any) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX returned one dict per computation
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) if cost else None


def analyse(net: ir.Network, batch: int = 1) -> dict[str, Any]:
    """Compile the eval forward and a training gradient at `batch`; return both analyses."""
    variables = jax.eval_shape(lambda: init_variables(net, jax.random.key(0)))
    x = jax.ShapeDtypeStruct(net.input.array_shape(batch), jnp.float32)

    def infer(lowering: dict | None):
        def run(v: dict, x: jax.Array) -> jax.Array:
            return forward(net, v, x, lowering=lowering)[0]

        return run

    def grad(remat: bool):
        def loss(params: dict, rest: dict, x: jax.Array) -> jax.Array:
            # XLA's convolutions: a custom call (oneDNN) has no cost XLA could count
            y, _ = forward(
                net,
                {**rest, "params": params},
                x,
                train=True,
                key=jax.random.key(0),
                remat=remat,
                lowering={"*": "xla"},
            )
            return jnp.sum(y * y)

        return jax.grad(loss)

    rest = {k: v for k, v in variables.items() if k != "params"}
    params = variables.get("params", {})
    out: dict[str, Any] = {"batch": batch}
    t = totals(net)
    out["ours"] = {
        "flops": 2 * t.macs * batch,
        "activation_bytes": 4 * t.activations * batch,
        "weight_bytes": 4 * t.params,
    }
    c = _compiled(infer({"*": "xla"}), variables, x)
    m = c.memory_analysis()
    out["inference"] = {
        "flops": _flops(c),
        "temp_bytes": m.temp_size_in_bytes,
        "argument_bytes": m.argument_size_in_bytes,
    }
    out["inference_default"] = {"flops": _flops(_compiled(infer(None), variables, x))}
    for remat in (False, True):
        c = _compiled(grad(remat), params, rest, x)
        m = c.memory_analysis()
        out["train_remat" if remat else "train"] = {"flops": _flops(c), "temp_bytes": m.temp_size_in_bytes}
    return out


def render(net: ir.Network, a: dict[str, Any]) -> str:
    def mib(b: float) -> str:
        return f"{b / (1 << 20):,.2f} MiB"

    ours, inf = a["ours"], a["inference"]
    ratio = f" ({inf['flops'] / ours['flops']:.2f}x ours)" if inf["flops"] and ours["flops"] else ""
    default = a.get("inference_default", {}).get("flops")
    if default and inf["flops"] and abs(default - inf["flops"]) > 0.01 * inf["flops"]:
        ratio += f"; with the default lowerings {default:,.0f} ({default / inf['flops']:.2f}x)"
    lines = [
        f"XLA analysis at batch {a['batch']} ({jax.devices()[0].platform}, jax {jax.__version__})",
        f"  FLOPs      ours {ours['flops']:,} (convolutions and dense only)   XLA inference, XLA's convolutions {inf['flops'] or 0:,.0f}{ratio}",
        f"  memory     ours: activations {mib(ours['activation_bytes'])} (sum of outputs), weights {mib(ours['weight_bytes'])}",
        f"             XLA inference temp {mib(inf['temp_bytes'])}, arguments {mib(inf['argument_bytes'])}",
        f"             XLA training-gradient temp {mib(a['train']['temp_bytes'])}; with remat per block {mib(a['train_remat']['temp_bytes'])}",
        f"  train FLOPs (forward + backward, XLA's convolutions): {a['train']['flops'] or 0:,.0f}; with remat {a['train_remat']['flops'] or 0:,.0f}",
    ]
    return "\n".join(lines) + "\n"
