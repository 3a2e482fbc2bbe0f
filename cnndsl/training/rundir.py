"""The run folder (`train --out DIR`): what cnndsl may write, delete and lock there.

    DIR/.cnndsl-run.json   the manifest: every file and folder cnndsl wrote in DIR (rewritten atomically)
    DIR/.cnndsl.lock       `flock`ed for the whole run; names the holder's pid and start time

A folder is a cnndsl run when it has the manifest (or, for runs from before manifests, a
`checkpoints/latest` pointer naming a cnndsl checkpoint). A fresh run refuses a non-empty
folder that is not one; `--overwrite` removes only what the manifest lists, so another
tool's files are never deleted. The lock is an OS lock on an open file: a second run fails at
once, and a run that dies (even by SIGKILL) releases it. Only the writing process (process 0)
touches the folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import ArgumentError, DataError
from .checkpoint import FORMAT, META_FILE, strict_json, write_atomic

MANIFEST, LOCK = ".cnndsl-run.json", ".cnndsl.lock"
CHECKPOINTS, HISTORY, PLOT, SUMMARY = "checkpoints", "history.jsonl", "history.png", "summary.json"
RUN_FORMAT = "cnndsl-run"
# What a checkpoint folder of cnndsl's holds (cnndsl.training.checkpoint): step folders, pointers, temporaries.
_CHECKPOINT_ENTRY = re.compile(r"step-\d+(-\d+)?|latest|best|\.tmp-.*|\.(latest|best)\..*")
_PROBE_BYTES = 4096


class RunFolder:
    """`open()` checks and locks DIR; `record(name)` lists a file before cnndsl writes it;
    `close()` releases the lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: set[str] = set()
        self._fd: int | None = None

    # -- what is there ------------------------------------------------------------------------
    def _manifest(self) -> set[str] | None:
        """The manifest's entries; None when there is none; a `DataError` when it is damaged."""
        file = self.path / MANIFEST
        if not file.is_file():
            return None
        try:
            doc = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            raise DataError(
                f"the run folder `{self.path}` is damaged: cannot read {MANIFEST}: {e}",
                hints=["start the run in another `--out`"],
            ) from None
        files = doc.get("files") if isinstance(doc, dict) else None
        if doc.get("format") != RUN_FORMAT or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise DataError(
                f"the run folder `{self.path}` is damaged: {MANIFEST} is not a cnndsl run manifest",
                hints=["start the run in another `--out`"],
            )
        return {f for f in files if "/" not in f and f not in ("", ".", "..")}

    def _legacy(self) -> set[str] | None:
        """A run written before manifests: `checkpoints/latest` names a cnndsl checkpoint."""
        ck = self.path / CHECKPOINTS
        try:
            name = (ck / "latest").read_text().strip()
            info = json.loads((ck / name / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            return None
        return {n for n in (CHECKPOINTS, HISTORY, PLOT, SUMMARY) if (self.path / n).exists()}

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINTS / "latest").is_file()

    # -- open, lock, clear --------------------------------------------------------------------
    def open(self, *, fresh: bool, overwrite: bool) -> list[str]:
        """Check DIR, make it, probe that it takes writes, lock it. A fresh run then clears
        cnndsl's own files (refusing a run with a checkpoint unless `overwrite`); returns
        what it removed."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise ArgumentError(f"`--out {p}` is a file, not a folder", hints=["give a folder for the run"])
        listed = self._manifest() if p.is_dir() else None
        if listed is None and p.is_dir():
            listed = self._legacy()
        if listed is None and p.is_dir() and any(p.iterdir()):
            there = sorted(q.name + ("/" if q.is_dir() else "") for q in p.iterdir())
            what = ", ".join(there[:6]) + (f" and {len(there) - 6} more" if len(there) > 6 else "")
            if not fresh:
                raise DataError(
                    f"nothing to resume in `{p}`: it is not a cnndsl run (it holds {what})",
                    hints=["give the run's folder with `--out`", "or start a run without `--resume`"],
                )
            raise ArgumentError(
                f"`--out {p}` holds files that cnndsl did not write: {what}",
                hints=[
                    "pick another (new or empty) folder with `--out`; cnndsl never deletes other tools' files",
                    "`--overwrite` only replaces a previous cnndsl run",
                ],
            )
        if listed is None and not fresh:
            raise DataError(
                f"nothing to resume in `{p}`: " + ("it is empty" if p.is_dir() else "there is no such folder"),
                hints=["start the run without `--resume`", "or give the run's folder with `--out`"],
            )
        self._probe()
        self._lock()
        self.entries = (listed or set()) | {MANIFEST, LOCK}
        self._write_manifest()
        if not fresh:
            return []
        if self.has_checkpoint() and not overwrite:
            raise ArgumentError(
                f"`{p}` already holds a training run",
                hints=["continue it with `--resume`", "or start again with `--overwrite`, or pick another `--out`"],
            )
        return self._clear()

    def _probe(self) -> None:
        """Create, write and fsync a small file: a read-only or full folder fails here, before
        data loading and compilation, not at the first checkpoint."""
        p = self.path
        probe = p / f".cnndsl-probe-{os.getpid()}"
        try:
            p.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * _PROBE_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise DataError(
                f"cannot write the run to `{p}`: " + ("the disk is full" if full else (e.strerror or str(e))),
                hints=["free some space there" if full else "pick a writable folder with `--out`"],
            ) from None
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass

    def _lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ArgumentError(
                f"`{self.path}` is in use by another `cnndsl train` ({holder})",
                hints=["wait for that run to finish, or give this one another `--out`"],
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        doc = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.pwrite(fd, (json.dumps(doc) + "\n").encode(), 0)
        self._fd = fd

    def close(self) -> None:
        """Release the lock (the OS does it too when the process dies)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _clear(self) -> list[str]:
        """Remove what the manifest lists (never anything else): checkpoint folders only by
        the names cnndsl's checkpoints use; other files inside are left, and said."""
        removed = []
        for name in sorted(self.entries - {MANIFEST, LOCK}):
            q = self.path / name
            if name == CHECKPOINTS and q.is_dir():
                gone = [c for c in q.iterdir() if _CHECKPOINT_ENTRY.fullmatch(c.name)]
                for c in gone:
                    shutil.rmtree(c) if c.is_dir() and not c.is_symlink() else c.unlink()
                steps = sum(1 for c in gone if c.name.startswith("step-"))
                if not any(q.iterdir()):
                    q.rmdir()
                    self.entries.discard(name)
                if gone:
                    removed.append(f"{CHECKPOINTS}/ ({steps} checkpoint{'s' * (steps != 1)})")
            elif q.is_file() or q.is_symlink():
                q.unlink()
                self.entries.discard(name)
                removed.append(name)
            else:
                self.entries.discard(name)
        for q in self.path.iterdir():  # temporaries of cnndsl's atomic writes that a crash left
            m = re.fullmatch(r"\.(.+)\.tmp-\d+-[0-9a-f]+", q.name)
            if m and m.group(1) in (HISTORY, PLOT, SUMMARY, MANIFEST) and q.is_file():
                q.unlink()
        self._write_manifest()
        return removed

    # -- what cnndsl writes -------------------------------------------------------------------
    def record(self, name: str) -> None:
        """List `name` (a top-level entry of DIR) before it is first written."""
        if name not in self.entries:
            self.entries.add(name)
            self._write_manifest()

    def _write_manifest(self) -> None:
        doc = {"format": RUN_FORMAT, "version": 1, "files": sorted(self.entries)}
        write_atomic(self.path / MANIFEST, strict_json(doc, indent=1) + "\n")


def _read_holder(fd: int) -> str:
    """`pid 1234 on host, started 2026-12-01 21:03:07 UTC` from a held lock file."""
    try:
        doc: Any = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(doc["started"])))
        return f"pid {int(doc['pid'])} on {doc.get('host', '?')}, started {when}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid is not recorded yet"
