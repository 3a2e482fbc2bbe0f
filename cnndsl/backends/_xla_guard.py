"""Guard against a jaxlib 0.10 CPU miscompilation before XLA starts.

On jaxlib 0.10.x, CPU, `jax.jit(lambda x: (x @ W).sum())` with `W` a constant (for instance
weights closed over by the jitted function) is fused into a YNNPACK kernel that returns NaN.
Disabling those fusions (`--xla_cpu_experimental_ynn_fusion_type=-dot,-eltwise,-reduce`)
gives the right answer. `import cnndsl` adds the flag to `XLA_FLAGS` (without importing JAX)
if XLA has not started yet and the user did not set the flag; otherwise building a network
warns. Set
`CNNDSL_NO_XLA_GUARD=1` to leave XLA_FLAGS alone. tests/test_xla_guard.py keeps the case.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import metadata

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-dot,-eltwise,-reduce"


def affected(jaxlib_version: str) -> bool:
    parts = jaxlib_version.split(".")
    return len(parts) >= 2 and parts[0] == "0" and parts[1] == "10"


def install(*, warn: bool = False) -> bool:
    """Add FLAG to XLA_FLAGS if needed and still possible; returns whether it is in effect."""
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if os.environ.get("CNNDSL_NO_XLA_GUARD") or not affected(version):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:
        return FLAG in flags
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
