"""Reading and writing state-dict files: `.safetensors` (NumPy only) and `.pth`/`.pt` (PyTorch).

A `.pth` file is a pickle. It is opened only with `torch.load(weights_only=True)`, PyTorch's
restricted unpickler that rebuilds tensors and plain containers and refuses anything else;
nothing here unpickles any other way, and without PyTorch a `.pth` is refused with the
one-line conversion to run where PyTorch is installed. Neither reader imports JAX.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

# A state dict bigger than this is refused (the largest torchvision classifier, ViT-H/14,
# is 2.5 GB); `max_bytes=` raises it.
MAX_BYTES = 8 * 2**30
SAFETENSORS = (".safetensors",)
PICKLES = (".pth", ".pt", ".bin", ".ckpt")
# Where training scripts keep the model's state dict inside a bigger checkpoint dict.
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module")
ORDER_KEY = "cnndsl.order"  # safetensors metadata: the keys in execution order (JSON list)
CONVERT = (
    'python -c "import torch; from safetensors.torch import save_file; '
    "save_file(torch.load('FILE.pth', weights_only=True), 'FILE.safetensors')\""
)


@dataclass(frozen=True, slots=True)
class StateDict:
    """Tensors by key, as NumPy arrays, and where their order came from.

    `ordered` is True when `tensors` is in the order the file records (a `.pth` keeps the
    modules' registration order; a `.safetensors` file only when it was written with
    `cnndsl.order` metadata): mapping by execution order needs it, else names give the order.
    """

    tensors: dict[str, np.ndarray]
    path: str
    format: str
    ordered: bool
    notes: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


def read_state_dict(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> StateDict:
    """Read a `.safetensors` or `.pth`/`.pt` state dict. Raises `DataError` for a missing,
    oversized, damaged or non-tensor file, naming the fix."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no weights file `{p}`", hints=["give a .safetensors or .pth/.pt file"])
    size = p.stat().st_size
    if size > max_bytes:
        raise DataError(
            f"`{p}` is {size / 2**30:.1f} GiB, more than the {max_bytes / 2**30:.1f} GiB a state dict may be here",
            hints=["pass max_bytes= to read_state_dict to allow a larger file"],
        )
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS or _is_safetensors(p):
        return _read_safetensors(p)
    if suffix in PICKLES or suffix == "":
        return _read_pickle(p)
    raise DataError(
        f"`{p}`: unknown weights format `{suffix}`",
        hints=["give a .safetensors file, or a PyTorch .pth/.pt state dict"],
    )


def _is_safetensors(p: Path) -> bool:
    """A safetensors file starts with an 8-byte header length and then `{`."""
    with p.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100 * 2**20


def _read_safetensors(p: Path) -> StateDict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"`{p}` is not a readable safetensors file: {e}") from None
    except TypeError as e:  # bfloat16 has no NumPy dtype
        raise DataError(
            f"`{p}` holds a dtype NumPy cannot represent ({e})",
            hints=["save it as float32 (or float16): `{k: v.float() for k, v in sd.items()}` before save_file"],
        ) from None
    order = meta.get(ORDER_KEY)
    ordered = False
    if order:
        try:
            listed = json.loads(order)
        except ValueError:
            listed = None
        if isinstance(listed, list) and sorted(listed) == sorted(tensors):
            tensors = {k: tensors[k] for k in listed}
            ordered = True
    return StateDict(tensors, str(p), "safetensors", ordered, metadata=meta)


def _read_pickle(p: Path) -> StateDict:
    try:
        import torch
    except ImportError:
        raise DataError(
            f"reading `{p}` needs PyTorch: a .pth/.pt file is a pickle, and cnndsl opens pickles only "
            "with `torch.load(weights_only=True)`",
            hints=[
                "install PyTorch (CPU is enough): pip install torch --index-url https://download.pytorch.org/whl/cpu",
                f"or convert it once where PyTorch is installed: {CONVERT}",
            ],
        ) from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=_zipfile(p))
    except Exception as e:  # noqa: BLE001  (torch raises UnpicklingError, RuntimeError, EOFError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"`{p}` cannot be read as tensors: {first}",
            notes=["cnndsl loads .pth files with `torch.load(weights_only=True)`, which refuses Python objects"],
            hints=[
                "save only the state dict: torch.save(model.state_dict(), 'weights.pth')",
                "or convert it to safetensors where you trust the file: " + CONVERT,
            ],
        ) from None
    notes: list[str] = []
    obj = _unwrap(obj, notes, p)
    tensors: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise DataError(
                f"`{p}`: the value of `{k}` is a {type(v).__name__}, not a tensor",
                hints=["give a state dict: a mapping of names to tensors"],
            )
        t = v.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
            if "bfloat16 -> float32" not in notes:
                notes.append("bfloat16 -> float32")
        tensors[str(k)] = t.numpy()
    return StateDict(tensors, str(p), "pth", True, tuple(notes))


def _zipfile(p: Path) -> bool:
    """mmap works for the zip format torch.save has written since 1.6 (not for legacy files)."""
    with p.open("rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _unwrap(obj: Any, notes: list[str], p: Path) -> dict[str, Any]:
    """The state dict inside `obj`: itself, or under a training script's usual key; a common
    `module.` prefix (DataParallel) is removed."""
    import torch

    if not isinstance(obj, dict):
        raise DataError(
            f"`{p}` holds a {type(obj).__name__}, not a state dict",
            hints=["save the state dict: torch.save(model.state_dict(), 'weights.pth')"],
        )
    if obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = [k for k in WRAPPERS if isinstance(obj.get(k), dict)]
        if not inner:
            raise DataError(
                f"`{p}` holds no tensors at its top level",
                notes=["its keys: " + ", ".join(map(str, list(obj)[:10]))],
                hints=["save the state dict itself: torch.save(model.state_dict(), 'weights.pth')"],
            )
        notes.append(f"the state dict is the file's `{inner[0]}` entry")
        obj = obj[inner[0]]
    keys = [str(k) for k in obj]
    if keys and all(k.startswith("module.") for k in keys):
        notes.append("the `module.` prefix (DataParallel) was removed from every key")
        obj = {k[len("module.") :]: v for k, v in zip(keys, obj.values(), strict=True)}
    return dict(obj)


def write_safetensors(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """Write `tensors` (in their order, recorded in the `cnndsl.order` metadata) atomically."""
    from safetensors.numpy import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    meta = {"format": "pt", **metadata, ORDER_KEY: json.dumps(list(tensors))}
    try:
        save_file({k: np.ascontiguousarray(v).reshape(v.shape) for k, v in tensors.items()}, str(tmp), metadata=meta)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
