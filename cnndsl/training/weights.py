"""Finding and loading trained weights: a run folder, a checkpoint folder or a step folder.

    variables, meta = load_weights(net, "runs/LeNet5")     # best if there is one, else latest
    meta["class_names"], meta["normalization"]

`meta` is what `cnndsl train` saved with the checkpoint (config, normalisation, class names,
the spec text, ...), plus `checkpoint` (the step folder read) and `step`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint, restore_checkpoint
from ..errors import DataError
from ..net import Net
from ..transfer import transfer


def checkpoint_root(path: str | Path) -> Path:
    """`RUN` -> `RUN/checkpoints` when it is a training run's folder; else `path` itself."""
    p = Path(path)
    return p / "checkpoints" if (p / "checkpoints").is_dir() else p


def open_checkpoint(path: str | Path, which: str | None = None) -> Checkpoint:
    """Restore a checkpoint (every array). `which=None` takes `best` when the run has one,
    else `latest`; a pointer or step folder path is taken as it is."""
    root = checkpoint_root(path)
    if which is None:
        which = "best" if (root / "best").is_file() else "latest"
    return restore_checkpoint(root, which=which)  # type: ignore[arg-type]


def load_weights(net: Net, path: str | Path, which: str | None = None, *, key: Any = None) -> tuple[dict, dict]:
    """`(variables, meta)` for `net` from the checkpoint at `path`; every layer must match
    by name and shape (a `DataError` lists the differences otherwise)."""
    import jax

    ck = open_checkpoint(path, which)
    if not isinstance(ck.tree, dict) or "params" not in ck.tree:
        raise DataError(f"`{ck.path}` holds no network weights (no `params`)")
    fresh = net.init(jax.random.key(0) if key is None else key)
    variables, report = transfer(ck.tree, fresh)
    problems = [
        f"{m.layer}: {m.status}" + (f" ({m.detail()})" if m.status == "shape mismatch" else "")
        for m in report.layers
        if m.status != "loaded"
    ]
    if problems:
        spec = ck.meta.get("spec_path") or "another spec"
        raise DataError(
            f"the weights in `{ck.path}` do not fit `{net.name}`",
            notes=problems[:6]
            + ([f"and {len(problems) - 6} more"] if len(problems) > 6 else [])
            + [f"they were trained for `{spec}`"],
            hints=[
                "use the spec the weights were trained with",
                "to reuse some layers in a new spec, train it with `init=`",
            ],
        )
    return variables, {**ck.meta, "checkpoint": str(ck.path), "step": ck.step}
