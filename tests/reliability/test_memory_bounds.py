"""Issue 9, section 5 "Memory": a network too large for the machine is refused before allocating.

`conv 100000000@3x3` used to reach 16 GB of RSS in `build`, and a `dense` of 10^11 weights
ended in an internal `MemoryError`. `build`, `functional`, `init` and `train` now estimate
from the IR (weights, initialisation scratch, gradients, optimizer slots, activations at the
batch size) and refuse with the figures, pointing at the largest layer.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cnndsl import loads
from cnndsl.passes.memory import ENV, FLOAT_BYTES, MemoryLimitError, check_memory, estimate, memory_limit
from cnndsl.report import totals

WIDE_CONV = "network Wide\ninput 1@28x28\nconv 100000000@3x3\n"
HUGE_DENSE = "network Huge\ninput 100000\ndense 1000000\n"  # 10^11 weights
LENET = (
    "network LeNet5\ninput 1@32x32\nconv 6@5x5 -> relu -> maxpool 2 -> conv 16@5x5 -> relu -> maxpool 2\n"
    "-> flatten -> dense 120 -> relu -> dense 84 -> relu -> dense 10\n"
)


@pytest.fixture(autouse=True)
def _machine_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same limit on every machine: 16 GiB, as if MemAvailable said so."""
    monkeypatch.setenv(ENV, "16G")


@pytest.mark.parametrize("how", ["build", "functional", "init"])
def test_wide_conv_is_refused_before_allocating(how: str) -> None:
    import jax

    net = loads(WIDE_CONV, "wide.cnn")
    t = time.monotonic()
    with pytest.raises(MemoryLimitError) as e:
        if how == "build":
            net.build()
        else:
            getattr(net, how)(jax.random.key(0))
    assert time.monotonic() - t < 10.0  # JAX's start-up included; it took minutes
    text = str(e.value)
    assert text.startswith(
        f"wide.cnn:3:1: error: building `Wide` needs about 274 GiB, but {ENV}=16G is 16 GiB\n    conv 100000000@3x3"
    )
    assert "weights as drawn 3.73 GiB" in text and "activations at batch 1 252 GiB" in text
    assert "the largest layer is `conv 100000000@3x3` (conv1): 1,000,000,000 parameters" in text
    assert "fewer filters, a stride, or pool before it" in text
    assert f"set {ENV} to the memory to assume" in text


def test_huge_dense_is_a_cnn_error_not_memory_error() -> None:
    import jax

    net = loads(HUGE_DENSE, "huge.cnn")
    with pytest.raises(MemoryLimitError) as e:
        net.functional(jax.random.key(0))
    assert "building `Huge` needs about 2.18 TiB" in e.value.message
    assert "weights as drawn 373 GiB + initialisation scratch 1.46 TiB" in e.value.notes[0]
    assert "give `dense 1000000` fewer parameters" in e.value.hints[0]


def test_train_refuses_before_loading_data(tmp_path) -> None:
    from cnndsl.training import train

    # data that does not exist: the memory check must come first
    spec = 'network T\ninput 1@8x8\nconv 1000000@3x3 -> flatten -> dense 10\ntrain {\n  data = "nowhere.npz"\n}\n'
    with pytest.raises(MemoryLimitError) as e:
        train(loads(spec, "t.cnn"), out=tmp_path / "run", quiet=True, plot=False)
    text = str(e.value)
    assert "training `T` needs about" in text
    assert "gradients" in text and "optimizer state (2 slots)" in text and "activations at batch 64" in text
    assert "lower the batch size (`--batch`; 64 now)" in text


def test_estimate_counts_what_the_report_counts() -> None:
    net = loads(LENET)
    t = totals(net.ir)
    est = estimate(net.ir, batch=1)
    assert est.weights == (t.params + t.non_trainable) * FLOAT_BYTES
    assert est.activations == (net.input.size + t.activations) * FLOAT_BYTES
    assert est.gradients == est.optimizer == est.host_copy == 0
    train = estimate(net.ir, batch=32, train=True, optimizer_slots=2)
    assert train.gradients == t.trainable * FLOAT_BYTES and train.optimizer == 2 * train.gradients
    assert train.activations > 32 * est.activations  # plus the backward pass through the widest layer


@pytest.mark.parametrize(
    ("optimizer", "slots"),
    [("sgd", 0), ("sgd(momentum=0.9)", 1), ("adam", 2), ("adamw", 2), ("rmsprop", 1), ("rmsprop(momentum=0.9)", 2)],
)
def test_optimizer_slots(optimizer: str, slots: int) -> None:
    from cnndsl.training.config import TrainConfig, apply_overrides

    assert apply_overrides(TrainConfig(), {"optimizer": optimizer}).optimizer_slots() == slots


def test_override_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    net = loads(LENET)
    monkeypatch.setenv(ENV, "1K")
    with pytest.raises(MemoryLimitError, match="needs about .* but CNNDSL_MEMORY_LIMIT=1K is 1 KiB"):
        net.build()
    monkeypatch.setenv(ENV, "off")
    assert memory_limit() == (None, f"{ENV}=off")
    net.build()  # the user knows better
    monkeypatch.setenv(ENV, "1.5GiB")
    assert memory_limit()[0] == 3 * 2**29
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(MemoryLimitError, match="cannot read CNNDSL_MEMORY_LIMIT='lots'"):
        memory_limit()


def test_meminfo_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    limit, source = memory_limit()
    assert limit is not None and limit > 0 and ("MemAvailable" in source or "sysconf" in source)


def test_device_memory_is_checked_separately() -> None:
    net = loads(LENET, "l.cnn")
    est = estimate(net.ir, batch=1024, train=True, optimizer_slots=2)
    check_memory(net.ir, est, device_bytes=est.device + 1, device_name="gpu:0")
    with pytest.raises(MemoryLimitError) as e:
        check_memory(net.ir, est, device_bytes=1 << 20, device_name="gpu:0")
    assert "but the free memory of gpu:0 is 1 MiB" in e.value.message
    assert "weights as drawn" not in e.value.notes[0]  # the host's share is checked against RAM


def test_memory_pass_imports_no_jax() -> None:
    code = "import sys, cnndsl.passes.memory, cnndsl.training.data; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cpu_devices_each_hold_a_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    net = loads("network W\ninput 1000\ndense 1000\n")  # 1,001,000 weights: 3.8 MiB each copy
    one = estimate(net.ir, batch=8, train=True, optimizer_slots=2)
    replicas = 3 * (one.weights + one.gradients + one.optimizer)  # three more devices
    monkeypatch.setenv(ENV, str(one.host + one.device + replicas // 2))
    net.check_memory(batch=8, train=True, optimizer_slots=2, devices=1)
    with pytest.raises(MemoryLimitError, match="training `W` needs about"):
        net.check_memory(batch=8, train=True, optimizer_slots=2, devices=4)
