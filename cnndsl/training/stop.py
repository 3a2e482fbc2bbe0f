"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM. No JAX here: the CLI enters a
`StopRequest` before importing JAX, so a signal during start-up is not lost either."""

from __future__ import annotations

import signal
import threading
from typing import Any, Self

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report it


class StopRequest:
    """SIGINT and SIGTERM during a run ask it to stop after the current step, save and
    return, instead of raising at an arbitrary bytecode (a KeyboardInterrupt inside a donated
    step leaves no state to save). A second signal raises KeyboardInterrupt at once; saves are
    atomic, so the previous checkpoint stays. Only the main thread can take signals."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 143 after SIGTERM."""
        return EXIT_CODES.get(self.signum, 130) if self.signum is not None else 0
