"""`cnndsl compile --batch N` without `--xla` (issue 13, item 8): the batch's array shapes and
torchinfo's memory summary (activations kept for the backward pass, parameters, gradients,
optimizer state for the `train {}` optimizer), from `passes.memory`'s estimate, no JAX; and
that estimate checked against XLA's `memory_analysis()` of a real training step.

Measured here (jax 0.10.2, CPU; ours / XLA's arguments + outputs + temporaries - aliased):
training step digits b32 1.35, LeNet-5 b32 1.00, TextCNN b8 1.19, CIFAR ResNet-18 b8 1.14.
The forward column sums every layer's output (as torchinfo does), an upper bound: XLA
reuses buffers (LeNet-5 1.7x XLA's, CIFAR ResNet-18 13x)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.report import batch_json, batch_report

from .conftest import EXAMPLES, ROOT

TRAIN_FACTOR = 1.5  # our training-step estimate is within this factor of XLA's, either way


def test_the_batch_section_in_the_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--batch", "32", str(EXAMPLES / "lenet5.cnn")]) == 0
    out = capsys.readouterr().out
    section = out[out.index("\nbatch 32 ") + 1 :].splitlines()
    assert section[0] == "batch 32  input (32, 32, 32, 1) -> output (32, 10): float32 arrays (N, H, W, D)"
    assert section[1].split() == ["memory", "(estimate)", "forward", "training", "step"]
    assert section[2].split() == ["input", "128", "KiB", "128", "KiB"]  # 32 x 32 x 32 x 1 float32
    assert section[4].split() == ["parameters", "241", "KiB", "241", "KiB"]
    assert section[5].split() == ["gradients", "–", "241", "KiB"] and section[6].split()[-2:] == ["482", "KiB"]
    assert section[-1] == (
        "  optimizer: adam(lr=0.001), 2 slots per parameter (cnndsl train's default: the train section names none)"
    )
    assert main(["compile", str(EXAMPLES / "lenet5.cnn")]) == 0
    assert "\nbatch " not in capsys.readouterr().out  # only when asked


def test_the_figures_add_up_and_follow_the_train_section() -> None:
    net = cnndsl.load(EXAMPLES / "lenet5.cnn").ir
    doc = batch_json(net, 8)
    per_image = json.loads(json.dumps(cnndsl.report.to_json(net)))["activation_bytes"]
    fwd, tr = doc["forward_bytes"], doc["training_bytes"]
    assert fwd["input"] == 8 * 32 * 32 * 4 and fwd["activations"] == 8 * per_image  # every output, 8 images
    assert tr["parameters"] == tr["gradients"] == 4 * 61_706 and tr["optimizer_state"] == 2 * 4 * 61_706
    assert tr["activations"] > fwd["activations"]  # plus the gradient flowing through the widest layer
    assert fwd["total"] == sum(v for k, v in fwd.items() if k != "total")
    assert tr["total"] == sum(v for k, v in tr.items() if k != "total")
    for optimizer, slots in (("sgd(lr=0.1)", 0), ("sgd(lr=0.1, momentum=0.9)", 1), ("adamw", 2), ("rmsprop", 1)):
        spec = f"input 1@8x8\nflatten -> dense 10\ntrain {{\n  optimizer = {optimizer}\n}}\n"
        r = batch_report(cnndsl.loads(spec).ir, 4)
        assert r.training.optimizer == slots * 650 * 4 and r.optimizer.endswith("(the train section's)")


def test_compile_batch_json_and_no_jax() -> None:
    code = (
        "import io, json, sys, contextlib; from cnndsl.cli import main; buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        f"    rc = main(['compile', '--json', '--batch', '4', {str(EXAMPLES / 'digits.cnn')!r}])\n"
        "doc = json.loads(buf.getvalue()); assert rc == 0, rc\n"
        "assert doc['batch']['input_shape'] == [4, 8, 8, 1] and doc['batch']['output_shape'] == [4, 10]\n"
        "assert doc['batch']['optimizer'].startswith('adam(lr=0.003), 2 slots')\n"
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)[:5]"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _xla_train_step_bytes(net: cnndsl.Net, batch: int) -> int:
    """Peak bytes XLA assigns one Adam training step (gradients of a loss on the logits, the
    update; the state donated, as `cnndsl train` does): arguments + outputs + temporaries,
    less what outputs share with donated arguments."""
    import jax
    import jax.numpy as jnp
    import optax

    variables, apply = net.functional(jax.random.key(0))
    params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(1e-3)

    def step(p: dict, o: object, x: jax.Array) -> tuple[dict, object]:
        def loss(p: dict) -> jax.Array:
            out = apply({**rest, "params": p}, x, train=True, key=jax.random.key(1), logits=True)
            return jnp.mean(jnp.square(out[0] if isinstance(out, tuple) else out))

        u, o = tx.update(jax.grad(loss)(p), o, p)
        return optax.apply_updates(p, u), o

    x = jax.ShapeDtypeStruct(net.input.array_shape(batch), jnp.float32)
    m = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), x).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _xla_forward_bytes(net: cnndsl.Net, batch: int) -> int:
    import jax
    import jax.numpy as jnp

    variables, apply = net.functional(jax.random.key(0))
    x = jax.ShapeDtypeStruct(net.input.array_shape(batch), jnp.float32)
    m = jax.jit(apply).lower(variables, x).compile().memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def _check_against_xla(name: str, batch: int) -> None:
    net = cnndsl.load(EXAMPLES / f"{name}.cnn")
    r = batch_report(net.ir, batch)
    xla = _xla_train_step_bytes(net, batch)
    ratio = r.training.device / xla
    assert 1 / TRAIN_FACTOR <= ratio <= TRAIN_FACTOR, f"{name} b{batch}: ours {r.training.device:,} B, XLA {xla:,} B"
    assert r.inference.device >= _xla_forward_bytes(net, batch)  # the forward column is an upper bound


@pytest.mark.parametrize(("name", "batch"), [("lenet5", 32), ("digits", 32)])
def test_the_estimate_is_close_to_xla_memory_analysis(name: str, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnndsl.backends.jax import onednn

    # the lowerings XLA can see into: a custom call's (oneDNN's) own buffers are outside its analysis
    monkeypatch.setattr(onednn, "available", lambda: (False, "left out: XLA cannot see into its buffers"))
    _check_against_xla(name, batch)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "batch"), [("resnet18_cifar", 8), ("textcnn", 8)])
def test_the_estimate_is_close_to_xla_on_larger_nets(name: str, batch: int) -> None:
    _check_against_xla(name, batch)
