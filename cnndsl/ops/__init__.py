"""The op registry. Importing this package registers every op (no JAX is imported)."""

from __future__ import annotations

from ..syntax.binder import Args
from . import activation, channel, conv, dense, filters, norm, pool, preprocess, resample, stochastic  # noqa: F401  (registration)
from .base import REGISTRY, Op, lookup
from .merge import MERGES

__all__ = ["MERGES", "REGISTRY", "Args", "Op", "lookup"]
