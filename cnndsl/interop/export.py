"""`cnndsl export --torch`: a checkpoint's weights as a PyTorch state dict in safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ArgumentError
from .files import write_safetensors
from .mapping import export_state_dict


def export_torch(net: Any, weights: str | None, out: str | Path, *, which: str | None = None) -> str:
    """Write `weights` (a run or checkpoint folder) for `net` to `out` (`.safetensors`);
    a one-line summary. The names: those recorded by `import-weights` when the weights were
    imported, else torchvision's for a zoo network, else cnndsl's layer names."""
    from ..training.weights import load_weights

    if not weights:
        raise ArgumentError("`--torch` needs `--weights RUN`: the weights to export")
    if Path(out).suffix.lower() != ".safetensors":
        raise ArgumentError(
            f"`--torch {out}`: the state dict is written as safetensors",
            hints=[f"name it `{Path(out).with_suffix('.safetensors')}`; load it with safetensors.torch.load_file"],
        )
    variables, meta = load_weights(net, weights, which)
    sd, naming = export_state_dict(net, variables, names=meta.get("torch_modules"), alt=meta.get("torch_alt", ()))
    write_safetensors(out, sd, {"cnndsl.network": net.name, "cnndsl.naming": naming})
    values = sum(int(v.size) for v in sd.values())
    return f"wrote {out}: {net.name}, {len(sd)} tensors ({values:,} values), names {naming}, from {meta['checkpoint']}"
