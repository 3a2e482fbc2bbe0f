"""oneDNN convolutions on CPU, called from XLA through `jax.ffi` (optional).

    pip install -e ".[onednn]"          # oneDNN 3.2 (CPU, OpenMP) wheels; g++ must be on PATH
    python -c "from cnndsl.backends.jax import onednn; print(onednn.available())"

XLA:CPU's own convolutions are slower than oneDNN's, most of all the weight gradient
(benchmarks/RESULTS.md). `kernels/onednn_conv.cc` runs forward, input gradient and weight
gradient of a 2-D float32 convolution (NHWC activations, HWIO kernels, any stride, padding,
dilation and groups) in oneDNN; `conv_onednn` wraps them in a `jax.custom_vjp`, so `jax.grad`
and `jax.jit` work as with `lax.conv_general_dilated`, and `vmap` runs the calls once per
mapped element (`vmap_method="sequential"`). Other dtypes and 1-D/3-D convolutions stay with
XLA (`supports`).

The kernel is compiled with g++ on first use (about 10-20 s) into the private cache folder
(`cnndsl.config.cache_dir()`, owner and mode checked), under a name keyed by the source,
oneDNN's and jaxlib's versions; it is written to a temporary name and renamed, so a crash
never leaves half a library behind. Without g++ or oneDNN, `available()` says why and every
convolution stays with XLA.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).resolve().parent / "kernels" / "onednn_conv.cc"
TARGETS = {
    "fwd": ("cnndsl_onednn_conv_fwd", "CnndslOnednnConvForward"),
    "bwd_data": ("cnndsl_onednn_conv_bwd_data", "CnndslOnednnConvBackwardData"),
    "bwd_weights": ("cnndsl_onednn_conv_bwd_weights", "CnndslOnednnConvBackwardWeights"),
}


def _onednn_prefix() -> Path | None:
    """The prefix whose lib/ holds libdnnl.so.3 and include/ dnnl.hpp (the pip wheels install
    into the environment's prefix, which the dynamic loader does not search)."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, "/usr/local", "/usr")):
        p = Path(prefix)
        if (p / "lib" / "libdnnl.so.3").exists() and (p / "include" / "dnnl.hpp").exists():
            return p
    return None


@functools.cache
def _load() -> tuple[Any, str]:
    """Build (once per cache key) and load the kernel; register its FFI targets with JAX.

    Returns `(library, "")`, or `(None, reason)` when oneDNN, g++ or the build is missing."""
    prefix = _onednn_prefix()
    if prefix is None:
        return None, 'oneDNN is not installed (pip install -e ".[onednn]")'
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if compiler is None:
        return None, "no C++ compiler (g++) on PATH to build the oneDNN kernel"
    from ... import config
    from ...errors import CnnError

    try:
        folder = config.cache_dir()
    except CnnError as e:
        return None, e.message
    dnnl = prefix / "lib" / "libdnnl.so.3"
    key = hashlib.sha256(
        SOURCE.read_bytes() + str(dnnl.resolve()).encode() + str(os.stat(dnnl).st_size).encode()
        + jax.__version__.encode() + jax.ffi.include_dir().encode()
    ).hexdigest()[:16]  # fmt: skip
    lib = folder / f"onednn_conv-{key}.so"
    if not lib.exists():
        fd, tmp = tempfile.mkstemp(prefix=".onednn_conv-", suffix=".so", dir=folder)
        os.close(fd)
        cmd = [
            compiler, "-O2", "-shared", "-fPIC", "-std=c++17", f"-I{jax.ffi.include_dir()}", f"-I{prefix / 'include'}",
            str(SOURCE), f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}", "-o", tmp,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            os.unlink(tmp)
            return None, f"building the oneDNN kernel failed: {proc.stderr.strip().splitlines()[-1:]}"
        os.chmod(tmp, 0o700)
        os.replace(tmp, lib)
    st = os.lstat(lib)
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None, f"{lib} is not private to this user; remove it"
    ctypes.CDLL(str(dnnl), mode=ctypes.RTLD_GLOBAL)
    handle = ctypes.CDLL(str(lib))
    for name, symbol in TARGETS.values():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(handle, symbol)), platform="cpu")
    handle.cnndsl_onednn_version.restype = ctypes.c_char_p
    return handle, ""


def available() -> tuple[bool, str]:
    """(True, "oneDNN X.Y.Z") when the kernel is built and loaded, else (False, why not)."""
    handle, reason = _load()
    if handle is None:
        return False, reason
    return True, "oneDNN " + handle.cnndsl_onednn_version().decode()


def supports(x_ndim: int, dtype: Any) -> bool:
    """2-D float32 convolutions (x: (N, H, W, C)); the rest stays with XLA."""
    return x_ndim == 4 and np.dtype(dtype) == np.float32 and available()[0]


def _attrs(strides, padding, dilation, groups) -> dict[str, Any]:
    (sh, sw), ((pt, pb), (pl, pr)), (dh, dw) = strides, padding, dilation
    vals = {"sh": sh, "sw": sw, "pt": pt, "pb": pb, "pl": pl, "pr": pr, "dh": dh, "dw": dw, "groups": groups}
    return {k: np.int64(v) for k, v in vals.items()}


def _call(which: str, out_shape: tuple[int, ...], a: Any, b: Any, attrs: dict[str, Any]) -> Any:
    out = jax.ShapeDtypeStruct(out_shape, jnp.float32)
    return jax.ffi.ffi_call(TARGETS[which][0], out, vmap_method="sequential")(a, b, **attrs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv(x: Any, w: Any, strides, padding, dilation, groups: int, out_hw: tuple[int, int]) -> Any:
    return _call("fwd", (x.shape[0], *out_hw, w.shape[-1]), x, w, _attrs(strides, padding, dilation, groups))


def _conv_fwd(x, w, strides, padding, dilation, groups, out_hw):
    return _conv(x, w, strides, padding, dilation, groups, out_hw), (x, w)


def _conv_bwd(strides, padding, dilation, groups, out_hw, res, dy):
    x, w = res
    attrs = _attrs(strides, padding, dilation, groups)
    dy = dy.astype(x.dtype)
    return _call("bwd_data", x.shape, dy, w, attrs), _call("bwd_weights", w.shape, x, dy, attrs)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_onednn(x: Any, kernel: Any, strides, padding, dilation, groups: int, out_size) -> Any:
    """`x: (N, H, W, C)`, `kernel: (KH, KW, C/groups, F)` -> `(N, OH, OW, F)` by oneDNN.

    strides, padding (before, after), dilation and `out_size` in *written* order (width
    first), like `kernels.conv.conv_apply`; `out_size` is the IR's output size, never re-derived."""
    rev = lambda t: tuple(tuple(v) if isinstance(v, (tuple, list)) else int(v) for v in tuple(t)[::-1])  # noqa: E731
    return _conv(x, kernel, rev(strides), rev(padding), rev(dilation), int(groups), rev(out_size))
