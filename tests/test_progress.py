"""The progress bar (issue 13, item 12) counts the steps the device has finished, step by
step (it used to sit at 0/42 until a host sync, then jump to 34/42), shows an ETA, says
`1 epoch`, and history.png marks the best epoch."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import cnndsl
from cnndsl.training import loop, train

SPEC = """network Tiny
input 1@8x8
flatten -> dense 10 -> softmax
train {
  data = digits
  batch = 4
  epochs = 1
  seed = 0
}
"""


def test_the_bar_moves_every_step_and_shows_an_eta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.progress import Progress

    seen: list[tuple[float, int]] = []
    infos: list[str] = []
    shown: list[str] = []  # the bar as it reads after each update
    update = Progress.update
    screen = Console(file=io.StringIO(), width=160, color_system=None)

    def spy(self: Progress, task: Any, **kw: Any) -> None:
        if "completed" in kw:
            seen.append((time.monotonic(), kw["completed"]))
        if kw.get("info"):
            infos.append(kw["info"])
        update(self, task, **kw)
        with screen.capture() as cap:
            screen.print(self.get_renderable())
        shown.append(cap.get())

    monkeypatch.setattr(Progress, "update", spy)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, highlight=False, soft_wrap=True)
    net = cnndsl.loads(SPEC)
    r = train(net, out=tmp_path / "run", console=console, progress=True, plot=True)
    steps = r.step  # 1,294 training images / 4: 323 steps in the one epoch
    counts = [c for _, c in seen]
    assert counts == sorted(counts) and counts[-1] == steps
    jumps = [b - a for a, b in zip([0, *counts], counts, strict=False)]
    assert max(jumps) <= loop.PROGRESS_AHEAD + 1  # never more than the host may run ahead
    assert len(counts) >= steps // (loop.PROGRESS_AHEAD + 1)
    assert infos and re.fullmatch(r"loss \d+\.\d{4} · [\d,]+ img/s", infos[-1])
    mid = [t for t in shown if (m := re.search(r" (\d+)/323 ", t)) and 0 < int(m[1]) < 300]
    assert mid and all(re.search(r"epoch 1/1 .* eta \d:\d\d:\d\d", t) for t in mid[5:])  # an estimate, mid-epoch
    text = out.getvalue()
    assert "· 1 epoch · seed 0" in text and "1 epochs" not in text
    assert (tmp_path / "run" / "history.png").stat().st_size > 0


def test_best_epoch_is_marked_on_the_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    history = [
        {"epoch": e, "complete": True, "train_loss": 1 / e, "val_loss": 1 / e, "train_acc": a, "val_acc": a}
        for e, a in ((1, 0.5), (2, 0.9), (3, 0.8), (4, 0.9))
    ]
    assert loop.best_epoch(history)["epoch"] == 2  # the first of ties, as the best checkpoint keeps it
    lines: list[float] = []
    axvline = matplotlib.axes.Axes.axvline

    def spy(self: Any, x: float = 0, *a: Any, **kw: Any) -> Any:
        lines.append(x)
        return axvline(self, x, *a, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", spy)
    loop.plot_history(history, tmp_path / "h.png", title="t")
    assert lines == [2, 2]  # on the loss and the accuracy plot
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines.clear()
    loop.plot_history([{**h, "val_acc": None} for h in history], tmp_path / "h.png")
    assert lines == []  # no validation accuracy: no best epoch to mark
