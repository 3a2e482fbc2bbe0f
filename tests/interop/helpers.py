"""Shared by the interop tests: build a torch reference, save it both ways, import, compare."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import cnndsl
from cnndsl.interop import import_state_dict

from .torch_reference import MODELS, randomize

ROOT = Path(__file__).resolve().parents[2]
IGNORE = {"googlenet": ["aux1.*", "aux2.*"]}  # torchvision's published GoogLeNet file has the auxiliary heads


@dataclass
class Parity:
    model: str
    fmt: str
    max_abs: float
    rel: float  # max |cnndsl - torch| / max |torch|
    import_s: float
    variables: dict


def reference(name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, np.ndarray]:
    """`(module, x, torch output)` with random weights and statistics, eval mode, batch 2."""
    build, _, shape = MODELS[name]
    torch.manual_seed(seed)
    m = randomize(build(), seed)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return m, x, m(x).numpy()


def save_both(m: torch.nn.Module, folder: Path) -> dict[str, Path]:
    sd = m.state_dict()
    torch.save(sd, folder / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "w.safetensors"))
    return {"pth": folder / "w.pth", "safetensors": folder / "w.safetensors"}


def run_cnndsl(net: cnndsl.Net, variables: dict, x: torch.Tensor) -> np.ndarray:
    import jax

    from cnndsl.backends.jax.model import forward

    x_nhwc = x.numpy().transpose(0, 2, 3, 1)
    return np.asarray(jax.jit(lambda v, xx: forward(net.ir, v, xx, logits=True)[0])(variables, x_nhwc))


def parity(name: str, folder: Path, *, both: bool = True) -> list[Parity]:
    """Import from `.pth` and `.safetensors` and run torch's input through cnndsl (for the
    `.safetensors` import too only when `both`: callers check the arrays are identical)."""
    m, x, ref = reference(name)
    files = save_both(m, folder)
    net = cnndsl.load(ROOT / "examples" / f"{name}.cnn")
    out = []
    for fmt in ("pth", "safetensors"):
        t = time.perf_counter()
        variables, _ = import_state_dict(net, files[fmt], ignore=IGNORE.get(name, ()))
        dt = time.perf_counter() - t
        if fmt == "pth" or both:
            err = float(np.abs(run_cnndsl(net, variables, x) - ref).max())
        out.append(Parity(name, fmt, err, err / float(np.abs(ref).max()), dt, variables))
    return out
