"""`cnndsl.load(path)` -> `Net`: a checked network and everything you can do with it.

    net = cnndsl.load("examples/lenet5.cnn")   # parse + check; raises cnndsl.CnnError
    print(net.summary())                         # the `cnndsl compile` table
    model = net.build(rngs=nnx.Rngs(0))          # a flax.nnx.Module
    variables, apply = net.functional(key)       # pure pytree + jit-able apply

JAX is imported only by `build`, `functional` and `forward`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from . import ir
from .compiler import compile_file, compile_text
from .shape import Shape


class Net:
    """A compiled, fully shape-annotated network (wraps the IR, `net.ir`)."""

    def __init__(self, network: ir.Network) -> None:
        self.ir = network

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def input(self) -> Shape:
        return self.ir.input

    @property
    def output(self) -> Shape:
        out = self.ir.output
        assert out is not None
        return out

    @property
    def warnings(self) -> tuple:
        return self.ir.warnings

    def layers(self) -> list[ir.Layer]:
        """Every layer in execution order (block instances and branches flattened)."""
        return list(ir.layers(self.ir.body))

    @property
    def params(self) -> dict[str, int]:
        """`{"total", "trainable", "non_trainable"}` parameter counts."""
        from .report import totals

        t = totals(self.ir)
        return {"total": t.params, "trainable": t.trainable, "non_trainable": t.non_trainable}

    @property
    def macs(self) -> int:
        """Multiply-accumulates per example (1 MAC = 2 FLOPs)."""
        from .report import totals

        return totals(self.ir).macs

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def summary(self, depth: int | None = None, *, width: int | None = None) -> str:
        """The layer table and totals, as `cnndsl compile` prints them."""
        from .report import render_table

        return render_table(self.ir, depth, width=width)

    def to_json(self) -> dict[str, Any]:
        from .report import to_json

        return to_json(self.ir)

    def format(self) -> str:
        """The source as canonical `.cnn` text (parses back to the same network)."""
        from .syntax.fmt import format_module

        return format_module(self.ir.ast)  # type: ignore[arg-type]

    @property
    def train_settings(self) -> tuple:
        """The `train { ... }` settings as written (`ast.Setting`s), for `cnndsl train`."""
        return self.ir.ast.train if self.ir.ast is not None else ()  # type: ignore[attr-defined]

    # -- JAX --------------------------------------------------------------------------
    def build(self, rngs: Any = None) -> Any:
        """A `flax.nnx.Module` with every layer constructed eagerly (`rngs`: `nnx.Rngs`)."""
        self.check_memory()  # before importing the backend: refuse fast
        from .backends.jax.model import build

        return build(self.ir, rngs)

    def functional(
        self, key: Any, *, lowering: dict[str, str] | None = None, remat: bool = False, dtype: Any = None
    ) -> tuple[dict, Any]:
        """`(variables, apply)`: `apply(variables, x, *, train=False, key=None, logits=False)`.

        `variables = {"params": ..., "batch_stats": ..., "fixed": ...}` (nested by layer
        path, collections present only when non-empty). In eval mode `apply` returns the
        output; with `train=True` it returns `(output, new_batch_stats)`. `lowering` picks
        per-layer lowerings (see `autotune`); `remat` recomputes block activations in the
        backward pass instead of storing them; `dtype=jnp.bfloat16` computes convolutions
        and dense layers in bfloat16 with float32 accumulation.
        """
        self.check_memory()  # before importing the backend: refuse fast
        from .backends.jax.model import functional

        return functional(self.ir, key, lowering=lowering, remat=remat, dtype=dtype)

    def check_memory(self, *, batch: int = 1, train: bool = False, optimizer_slots: int = 0, devices: int = 1) -> None:
        """Raise `MemoryLimitError` (a `CnnError`) when the network's weights, activations at
        `batch` and, for training, gradients and `optimizer_slots` optimizer arrays per
        parameter cannot fit in this machine's memory (see `cnndsl.passes.memory`). `build`
        and `functional` check batch 1 inference; `train` checks its batch before loading data."""
        import jax

        from .passes.memory import check_memory, estimate

        dev = jax.devices()[0]
        stats = dev.memory_stats() if dev.platform != "cpu" else None
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0) if stats and "bytes_limit" in stats else None
        if free is not None:  # each accelerator holds one replica and its share of the batch
            est = estimate(self.ir, batch=-(-batch // devices), train=train, optimizer_slots=optimizer_slots)
        else:  # CPU "devices" share main memory: one replica each, the whole batch
            est = estimate(self.ir, batch=batch, train=train, optimizer_slots=optimizer_slots)
            k = devices
            est = dataclasses.replace(
                est, weights=est.weights * k, gradients=est.gradients * k, optimizer=est.optimizer * k
            )
        check_memory(self.ir, est, device_bytes=free, device_name=f"{dev.platform}:{dev.id}")

    def autotune(self, batch: int, *, train: bool = True) -> dict[str, str]:
        """`{name: lowering}` for this device at `batch`, measured on the whole network (cached);
        see `cnndsl.backends.jax.autotune`."""
        from .backends.jax.autotune import autotune

        return autotune(self.ir, batch, train=train)

    def for_inference(self, variables: dict) -> tuple[Net, dict]:
        """An equivalent network for eval mode (BN and preprocessing folded into the
        neighbouring conv/dense, dropout removed) and its variables."""
        from .backends.jax.inference import fold_for_inference

        folded, v = fold_for_inference(self.ir, variables)
        return Net(folded), v

    def to_onnx(
        self,
        variables: dict,
        path: str | Path | None = None,
        *,
        batch: int = 1,
        dynamic_batch: bool = False,
        layout: str = "nhwc",
    ) -> Any:
        """The network in inference mode as an `onnx.ModelProto` (written atomically to `path`
        if given). Input and output are channels last like `apply` (`layout="nchw"`: channels
        first); `dynamic_batch=True` leaves the batch size open. See docs/onnx.md."""
        from .backends.onnx import export, save

        model = export(self.ir, variables, batch=batch, dynamic_batch=dynamic_batch, layout=layout)
        if path is not None:
            save(model, path)
        return model

    def init(self, key: Any) -> dict:
        self.check_memory()  # before importing the backend: refuse fast
        from .backends.jax.model import init_variables

        return init_variables(self.ir, key)

    def load_state_dict(self, sd_or_path: Any, **options: Any) -> dict:
        """Variables from PyTorch weights: a `.safetensors`/`.pth` path, a state dict (name ->
        tensor) or a `torch.nn.Module`, mapped by execution order and shape. `options` are
        `cnndsl.interop.import_state_dict`'s (`map`, `ignore`, `new`); call that for the report."""
        from .interop import import_state_dict

        return import_state_dict(self, sd_or_path, **options)[0]

    def __repr__(self) -> str:
        return f"<Net {self.name}: {self.input} -> {self.output}, {self.params['total']:,} params>"


def loads(text: str, path: str = "<string>") -> Net:
    """Compile `.cnn` text. Raises `CnnError`."""
    return Net(compile_text(text, path))


def load(path: str | Path) -> Net:
    """Compile a `.cnn` file. Raises `CnnError`."""
    return Net(compile_file(path))
