"""Test-wide JAX settings (as Equinox does): strict rank promotion, 4 CPU devices for the
sharding tests, and cnndsl imported first so its XLA guard applies before XLA starts."""

from __future__ import annotations  # noqa: I001  (cnndsl is imported before jax below, on purpose)

from pathlib import Path

import cnndsl  # noqa: F401  (first: installs the XLA_FLAGS guard before JAX starts)
import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 4)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def shared_data() -> Path | None:
    """`../shared/data` beside the checkout (present on the team's machines, not users')."""
    p = ROOT.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture
def examples_dir() -> Path:
    return EXAMPLES
