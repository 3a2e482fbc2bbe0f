"""Pretrained weights in and out: PyTorch (torchvision, timm) state dicts and safetensors.

    variables, report = import_state_dict(net, "resnet18.safetensors")   # or .pth
    print(report)                       # torch key -> cnndsl path, shapes, transform
    save_imported("runs/resnet18", net, variables, report)   # an ordinary checkpoint
    sd, naming = export_state_dict(net, variables)           # torchvision's key names

The checkpoint `save_imported` writes is what `cnndsl train` writes (without optimizer
state), so `predict`, `eval`, `export` and `train --init` take it. `.safetensors` needs only
NumPy; `.pth` needs PyTorch and is read with `torch.load(weights_only=True)` alone.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import DataError
from .files import StateDict, read_state_dict, write_safetensors
from .mapping import ImportReport, export_state_dict, import_state_dict, read_map
from .zoo import torchvision_modules

IMPORT_FILE = "import.json"
# ImageNet's statistics in 0..255 pixels (torchvision's 0..1 values times 255).
IMAGENET = {"kind": "standardize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}

__all__ = [
    "IMAGENET",
    "ImportReport",
    "StateDict",
    "export_state_dict",
    "import_state_dict",
    "read_map",
    "read_state_dict",
    "save_imported",
    "torchvision_modules",
    "write_safetensors",
]


def save_imported(
    run: str | os.PathLike[str],
    net: Any,
    variables: dict[str, Any],
    report: ImportReport,
    *,
    normalization: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `variables` as the checkpoint of run folder `run` (`run/checkpoints`, plus
    `run/import.json` with the mapping table). `normalization` (e.g. `IMAGENET`) is applied
    by `predict`/`eval` to 0..255 pixels; `class_names` name the outputs. Returns the step
    folder. A folder that holds a run is refused unless `overwrite`."""
    import shutil

    from ..training.checkpoint import save_checkpoint

    root = Path(run)
    ck = root / "checkpoints"
    if ck.exists() and any(ck.iterdir()):
        if not overwrite:
            raise DataError(
                f"`{root}` already holds a run (its checkpoints folder is not empty)",
                hints=["choose another -o folder, or pass --overwrite to replace it"],
            )
        shutil.rmtree(ck)
    if normalization is not None and len(normalization["mean"]) not in (1, net.input.depth):
        raise DataError(
            f"the normalisation has {len(normalization['mean'])} channels, `{net.name}`'s input {net.input} has "
            f"{net.input.depth}",
            hints=["ImageNet's statistics are for RGB input (3@WxH); leave out --normalize"],
        )
    if class_names is not None and len(class_names) != net.output.size:
        raise DataError(
            f"{len(class_names)} class names for {net.output.size} outputs of `{net.name}`",
            hints=["give one name per line, one line per output"],
        )
    meta: dict[str, Any] = {
        "network": net.name,
        "spec": net.ir.source.text,
        "spec_path": net.ir.source.path,
        "input": str(net.input),
        "imported_from": report.source,
        "torch_modules": report.modules,
        "torch_alt": list(report.alt),  # layers in their other torch layout (1x1 convs held as nn.Linear)
        "new_layers": list(report.new),
    }
    if normalization is not None:
        meta["normalization"] = normalization
    if class_names is not None:
        meta["class_names"] = list(class_names)
        meta["num_classes"] = len(class_names)
    tree = {k: variables[k] for k in ("params", "batch_stats") if k in variables}
    folder = save_checkpoint(ck, tree, step=0, meta=meta)
    doc = json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n"
    tmp = root / f".{IMPORT_FILE}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.write_text(doc)
    os.replace(tmp, root / IMPORT_FILE)
    return folder
