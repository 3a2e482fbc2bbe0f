"""How much memory a network needs, estimated from the IR before anything is allocated.

`Net.build`, `Net.functional` and `train` call `check_memory` first, so that a network too
large for the machine is refused with the figures, instead of swapping for minutes or dying
in a `MemoryError` halfway through initialisation. The estimate counts, in float32:

    weights      every variable (trainable and fixed), once on the host as drawn and once
                 on the device (on a CPU both are main memory)
    scratch      initialisation draws the largest variable in float64 (plus a float64 copy)
    gradients    one array per trainable parameter (training only)
    optimizer    the optimizer's slots per trainable parameter (Adam 2, SGD momentum 1)
    host copy    training keeps a host copy of weights and optimizer state (checkpoints)
    activations  every layer's output per example x batch: the forward pass at batch 1 for
                 build/functional, and for training what the backward pass keeps, plus the
                 gradients flowing through the largest layer

It is an estimate of the order of magnitude (XLA fuses and reuses buffers), meant to refuse
what cannot fit, not to predict the peak. `cnndsl compile --batch N` prints its parts
(`report.render_batch`); for a training step it came within 1.35x of XLA's memory_analysis
(tests/test_compile_batch.py), while the forward figure, every output kept, is an upper bound. `CNNDSL_MEMORY_LIMIT` (read through `cnndsl.config`)
overrides the available figure (`64G`, `512M`, a number of bytes) or turns the check off
(`off`). No JAX here: the device's own memory, where JAX reports it, is passed in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .. import config, ir
from ..errors import CnnError

ENV = config.MEMORY_LIMIT
FLOAT_BYTES = 4
SCRATCH_BYTES = 16  # float64 draw + float64 scaled copy, per element of the largest variable
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class MemoryLimitError(CnnError):
    """The network (or a file being read) needs more memory than the machine has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """Bytes a network needs, by part (see the module docstring); `biggest` is the layer
    with the largest weights + activations, the one to point at."""

    what: str
    batch: int
    weights: int
    scratch: int
    gradients: int
    optimizer: int
    host_copy: int
    activations: int
    slots: int
    biggest: ir.Layer | None

    @property
    def host(self) -> int:
        return sum(b for _, b in self.host_parts())

    @property
    def device(self) -> int:
        return sum(b for _, b in self.device_parts())

    def host_parts(self) -> list[tuple[str, int]]:
        """What the host holds: the drawn weights, the draw's scratch and, for training, a
        copy of the training state."""
        return [
            ("weights as drawn", self.weights),
            ("initialisation scratch", self.scratch),
            ("host copy of the training state", self.host_copy),
        ]

    def device_parts(self) -> list[tuple[str, int]]:
        """What lives on the device: weights, gradients, optimizer state, activations."""
        return [
            ("weights on the device", self.weights),
            ("gradients", self.gradients),
            (f"optimizer state ({self.slots} slot{'s' * (self.slots != 1)})", self.optimizer),
            (f"activations at batch {self.batch}", self.activations),
        ]


def estimate(net: ir.Network, *, batch: int = 1, train: bool = False, optimizer_slots: int = 0) -> Estimate:
    """The memory `net` needs at `batch` for inference (`train=False`) or training, in bytes."""
    params = fixed = largest = kept = widest = 0
    biggest, biggest_bytes = None, -1
    for _, n in ir.walk(net.body):
        y = n.y.size if isinstance(n, (ir.Layer, ir.Merge, ir.MergeRef)) and n.y is not None else 0
        kept += y
        if isinstance(n, ir.Layer):
            params, fixed = params + n.params, fixed + n.fixed
            largest = max(largest, n.params + n.fixed)
            widest = max(widest, y + (n.x.size if n.x is not None else 0))
            own = (n.params + n.fixed) * (1 + 2 * train + optimizer_slots) + y * batch
            if own > biggest_bytes:
                biggest, biggest_bytes = n, own
    per_example = net.input.size + kept + (widest if train else 0)
    return Estimate(
        what="train" if train else "build",
        batch=batch,
        weights=(params + fixed) * FLOAT_BYTES,
        scratch=largest * SCRATCH_BYTES,
        gradients=params * FLOAT_BYTES if train else 0,
        optimizer=params * optimizer_slots * FLOAT_BYTES if train else 0,
        host_copy=(params * optimizer_slots + params + fixed) * FLOAT_BYTES if train else 0,
        activations=per_example * batch * FLOAT_BYTES,
        slots=optimizer_slots if train else 0,
        biggest=biggest,
    )


# --- what the machine has ----------------------------------------------------------------------
def memory_limit() -> tuple[int | None, str]:
    """`(bytes, where the figure comes from)`; `(None, ...)` when the user turned checks off.

    `CNNDSL_MEMORY_LIMIT` first, then MemAvailable from /proc/meminfo (free memory plus what
    the kernel can reclaim), then the free physical pages `os.sysconf` reports.
    """
    text = config.memory_limit()
    if text:
        if text.lower() in ("off", "none", "0"):
            return None, f"{ENV}={text}"
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
        if not m:
            raise MemoryLimitError(
                f"cannot read {ENV}={text!r}",
                hints=[f"write a size such as `{ENV}=64G`, `{ENV}=512M`, or `{ENV}=off` to skip the check"],
            )
        return int(float(m[1]) * _UNITS[m[2].upper()]), f"{ENV}={text}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available memory (MemAvailable in /proc/meminfo)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory (sysconf)"
    except (OSError, ValueError, AttributeError):
        return None, "unknown (the check is skipped)"


def check_memory(
    net: ir.Network,
    est: Estimate,
    *,
    device_bytes: int | None = None,
    device_name: str = "",
) -> None:
    """Raise `MemoryLimitError` when `est` exceeds what the machine has.

    `device_bytes` is an accelerator's own free memory (from JAX's `memory_stats`), None on
    a CPU, where host and device parts add up in one memory (the weights exist twice).
    """
    limit, source = memory_limit()
    if limit is None:
        return
    if device_bytes is None:
        checks = [(est.host_parts() + est.device_parts(), limit, source)]
    else:
        device = f"the free memory of {device_name or 'the device'}"
        checks = [(est.host_parts(), limit, source), (est.device_parts(), device_bytes, device)]
    for parts, have, where in checks:
        need = sum(b for _, b in parts)
        if need > have:
            raise _too_large(net, est, [(n, b) for n, b in parts if b], have, where)


def _too_large(net: ir.Network, est: Estimate, parts: list[tuple[str, int]], have: int, where: str) -> MemoryLimitError:
    need = sum(b for _, b in parts)
    doing = "training" if est.what == "train" else "building"
    notes = ["that is " + " + ".join(f"{name} {format_bytes(b)}" for name, b in parts)]
    hints = []
    b = est.biggest
    if b is not None:
        out = (b.y.size if b.y is not None else 0) * FLOAT_BYTES
        notes.append(
            f"the largest layer is `{b.text}` ({b.name}): {b.params + b.fixed:,} parameters "
            f"({format_bytes((b.params + b.fixed) * FLOAT_BYTES)}), output {b.y} ({format_bytes(out)} per example)"
        )
        if out * est.batch > (b.params + b.fixed) * FLOAT_BYTES:
            hints.append(f"make `{b.text}` output less: fewer filters, a stride, or pool before it")
        else:
            hints.append(f"give `{b.text}` fewer parameters: fewer filters or units, or a smaller input")
    if est.batch > 1 and 2 * est.activations > need:
        hints.append(f"or lower the batch size (`--batch`; {est.batch} now)")
    hints.append(f"if you know it fits, set {ENV} to the memory to assume (e.g. `{ENV}=256G`) or `off`")
    located = b is not None and b.span.line > 0
    err = MemoryLimitError(
        f"{doing} `{net.name}` needs about {format_bytes(need)}, but {where} is {format_bytes(have)}",
        b.span if located else None,  # type: ignore[union-attr]
        notes=notes,
        hints=hints,
    )
    return err.with_source(net.source) if located else err


def format_bytes(n: int) -> str:
    """`4 GiB`, `270 GiB`, `1.2 PiB` (as the `compile` table writes sizes: powers of 1024)."""
    for unit, k in (
        ("EiB", 1 << 60),
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ):
        if n >= k:
            return f"{n / k:.3g} {unit}" if n / k < 100 else f"{n / k:,.0f} {unit}"
    return f"{n} B"
