"""cnndsl's environment variables, read here and only here, and its private cache folder.

- `CNNDSL_DEBUG=1`: the CLI shows tracebacks of internal errors, and `compile_text` checks
  the IR with `ir.verify` after every pass.
- `CNNDSL_NO_XLA_GUARD=1`: leave `XLA_FLAGS` alone (see backends/_xla_guard.py).
- `CNNDSL_MEMORY_LIMIT`: the memory the refusal of too-large networks assumes (`64G`, `512M`,
  bytes, or `off`; see passes/memory.py).
- `CNNDSL_CACHE_DIR`: the private cache folder (default `$XDG_CACHE_HOME/cnndsl`, else
  `~/.cache/cnndsl`): the autotuner's choices and the compiled oneDNN kernel live there.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CnnError


def debug() -> bool:
    return bool(os.environ.get("CNNDSL_DEBUG"))


def no_xla_guard() -> bool:
    return bool(os.environ.get("CNNDSL_NO_XLA_GUARD"))


MEMORY_LIMIT = "CNNDSL_MEMORY_LIMIT"


def memory_limit() -> str:
    """The text of `CNNDSL_MEMORY_LIMIT` ("" when unset); passes/memory.py reads it."""
    return os.environ.get(MEMORY_LIMIT, "").strip()


class CacheError(CnnError):
    """The cache folder is not private to this user, so nothing in it may be trusted."""


def cache_root() -> Path:
    root = os.environ.get("CNNDSL_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cnndsl"


def cache_dir() -> Path:
    """The private cache folder, created with mode 0700; refused (a `CacheError`) when it is
    not a real folder owned by this user, or when others may write to it, since a compiled
    kernel loaded from it runs as this user."""
    root = cache_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(
            f"the cache folder {root} is not a folder (a link or a file)", hints=["remove it or set CNNDSL_CACHE_DIR"]
        )
    if st.st_uid != os.getuid():
        raise CacheError(
            f"the cache folder {root} belongs to user {st.st_uid}, not to you ({os.getuid()})",
            hints=["set CNNDSL_CACHE_DIR to a folder of your own"],
        )
    if st.st_mode & 0o022:
        raise CacheError(
            f"the cache folder {root} can be written by others (mode {stat.S_IMODE(st.st_mode):o})",
            hints=[f"make it private: chmod 700 {root}"],
        )
    return root
