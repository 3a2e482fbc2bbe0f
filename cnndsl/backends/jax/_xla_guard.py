"""Guard against a jaxlib 0.10 CPU miscompilation before XLA starts.

On jaxlib 0.10.x, CPU, `jax.jit(lambda x: (x @ W).sum())` with `W` a constant (for instance
weights closed over by the jitted function) is fused into a YNNPACK kernel that returns NaN.
Turning YNNPACK fusions off (`--xla_cpu_experimental_ynn_fusion_type=`, an empty list)
gives the right answer, and is also faster for CNNs on x86-64 (`-dot,-eltwise,-reduce`
fixes the NaN too but leaves matmuls and convolutions in YNNPACK): with XLA's defaults,
hand-written Flax trains LeNet-5 1.4-1.9x and ResNet-18 1.1x slower, and runs ResNet-18
inference 1.5x slower (benchmarks/RESULTS.md, runs A and B).

`import cnndsl` adds the flag to `XLA_FLAGS` (without importing JAX) if XLA has not started
yet and the user did not set the flag; otherwise building a network warns. Set
`CNNDSL_NO_XLA_GUARD=1` to leave XLA_FLAGS alone. tests/backends/jax/test_model.py keeps the NaN case.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from importlib.util import find_spec

from ... import config

FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def affected(jaxlib_version: str) -> bool:
    parts = jaxlib_version.split(".")
    return len(parts) >= 2 and parts[0] == "0" and parts[1] == "10"


def jaxlib_version() -> str | None:
    """jaxlib's version, read from its `version.py` without importing it (importing jaxlib,
    or `importlib.metadata`, would cost `cnndsl compile` 40-500 ms of start-up)."""
    try:
        spec = find_spec("jaxlib")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = os.path.join(next(iter(spec.submodule_search_locations)), "version.py")
        with open(path, encoding="utf-8") as f:
            m = re.search(r'^_version\s*(?::\s*str\s*)?=\s*"([^"]+)"', f.read(), re.M)
    except (OSError, ImportError, ValueError):
        return None
    return m.group(1) if m else None


def install(*, warn: bool = False) -> bool:
    """Add FLAG to XLA_FLAGS if needed and still possible; returns whether it is in effect."""
    version = jaxlib_version()
    if version is None:
        return False
    if config.no_xla_guard() or not affected(version):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:  # the user's choice stands
        return FLAG in flags.split()
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is not None and getattr(bridge, "_backends", None):
        if warn:
            warnings.warn(
                f"jaxlib {version} can return NaN on CPU for a matmul + reduction with constant "
                f"weights, and XLA started before cnndsl could set XLA_FLAGS={FLAG}. Import cnndsl "
                "before running JAX code, set the flag yourself, or pass weights as jit arguments.",
                stacklevel=3,
            )
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + FLAG).strip()
    return True


def cpu_lowerings() -> bool:
    """Whether the CPU-measured lowerings apply: JAX runs on the CPU with YNNPACK fusions
    off. They were measured under this flag (benchmarks/RESULTS.md); with YNNPACK on, or on
    another backend, the ops keep XLA's own lowerings."""
    import jax

    return jax.default_backend() == "cpu" and FLAG in os.environ.get("XLA_FLAGS", "").split()
