"""`cnndsl compile --xla`: XLA's cost and memory analysis next to the compiler's counts."""

from __future__ import annotations

import subprocess
import sys

import cnndsl
from cnndsl.backends.jax.xla_report import analyse, render

from ...conftest import EXAMPLES


def test_xla_flops_agree_with_the_compilers_count() -> None:
    net = cnndsl.load(EXAMPLES / "lenet5.cnn").ir
    a = analyse(net, batch=4)
    ours, xla = a["ours"]["flops"], a["inference"]["flops"]
    assert ours == 2 * 416_520 * 4
    # XLA also counts bias additions, activations and pooling, and skips nothing in LeNet-5
    # (no zero padding): within a few percent above the compiler's convolution + dense count.
    assert 0.98 * ours <= xla <= 1.15 * ours, (xla, ours)
    # forward + backward of the same layers: about 3x the forward (the first layer has no
    # input gradient, hence less)
    assert 2.0 * xla <= a["train"]["flops"] <= 3.5 * xla
    assert a["train_remat"]["flops"] >= a["train"]["flops"]
    assert a["inference"]["temp_bytes"] > 0 and a["train"]["temp_bytes"] >= a["inference"]["temp_bytes"]
    assert a["ours"]["weight_bytes"] == 4 * 61_706
    text = render(net, a)
    assert "XLA analysis at batch 4" in text and f"ours {ours:,}" in text


def test_winograd_programs_report_their_fewer_flops(monkeypatch) -> None:
    from cnndsl.backends.jax._xla_guard import FLAG

    monkeypatch.setenv("XLA_FLAGS", FLAG)  # the CPU lowerings' condition
    net = cnndsl.loads("input 128@8x8\nconv 128@3x3 p1 -> relu -> conv 128@3x3 p1").ir
    a = analyse(net, batch=32)
    assert a["inference_default"]["flops"] < 0.6 * a["inference"]["flops"]  # Winograd: 4x fewer multiplies
    assert "with the default lowerings" in render(net, a)


def test_cli_compile_xla_prints_the_analysis() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cnndsl", "compile", "--xla", "--batch", "2", str(EXAMPLES / "lenet5.cnn")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "XLA analysis at batch 2" in out.stdout and "Traceback" not in out.stderr
