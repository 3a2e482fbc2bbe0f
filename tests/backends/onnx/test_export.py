"""ONNX export of whole networks: every example in examples/ equals JAX in onnxruntime (the
ImageNet-size ones, `slow`, at batch 1), merges and saved tensors, layouts, a dynamic batch,
node names and value info from the IR, and `cnndsl export`."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import onnx
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.cli import main
from cnndsl.training.checkpoint import save_checkpoint

from ...conftest import EXAMPLES
from .parity import TOLERANCE, compare, randomize, rel_diff, session

SLOW_MACS = 100e6  # examples above this (ResNet-18 on CIFAR and up) take over ~5 s here
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.cnn"))


def _big(net: cnndsl.Net) -> bool:
    """ImageNet-size (an axis of 224 or more) or over SLOW_MACS: `slow`, and run at batch 1."""
    return net.macs > SLOW_MACS or max(net.input.spatial, default=0) >= 224


def _example_params():
    for path in EXAMPLE_FILES:
        slow = _big(cnndsl.load(path))
        yield pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("path", list(_example_params()))
def test_example_matches_jax(path):
    net = cnndsl.load(path)
    batch = 1 if _big(net) else 2
    diff, _ = compare(net, batch=batch)
    assert diff <= TOLERANCE, f"{path.name}: ONNX differs from JAX by {diff:.2e} (relative)"


# Merges (residual with and without projection, add/concat of branches, save + add/concat by
# name) inside blocks, with a spatial output: what the examples hold, at a test's size.
MERGES = """network Merges
input 3@10x8
block unit(c, s=1) {
  residual { conv c@3x3 stride=s p1 nobias -> bn -> relu -> conv c@3x3 p1 -> bn } project { conv c@1x1 stride=s -> bn }
  -> relu
}
unit(4) -> save skip -> unit(6, s=2) -> concat { relu | conv 2@1x1 -> sigmoid | maxpool 3 s1 p1 }
-> deconv 4@2x2 s2 -> add skip -> residual { conv 4@3x3 p1 } -> concat skip -> dropout 0.5
-> mul { identity | adaptiveavgpool 1 -> conv 2@1x1 -> relu -> conv 8@1x1 -> sigmoid }
"""


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_merges_and_both_layouts_match_jax(layout):
    diff, model = compare(cnndsl.loads(MERGES), batch=2, layout=layout)
    assert diff <= TOLERANCE
    (inp,) = model.graph.input
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ([2, 8, 10, 3] if layout == "nhwc" else [2, 3, 8, 10])


def test_dynamic_batch_runs_any_batch():
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    variables, apply = net.functional(jax.random.key(0))
    variables = randomize(variables)
    model = net.to_onnx(variables, dynamic_batch=True)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    s, apply = session(model), jax.jit(apply)
    for batch in (1, 5):
        x = np.random.default_rng(batch).normal(size=net.input.array_shape(batch)).astype(np.float32)
        assert rel_diff(s.run(None, {"input": x})[0], np.asarray(apply(variables, x))) <= TOLERANCE


def test_node_names_are_layer_paths_and_every_layer_has_its_ir_shape():
    net = cnndsl.loads(MERGES, "merges.cnn")
    model = net.to_onnx(net.init(jax.random.key(0)), batch=3)
    nodes = {n.name: n for n in model.graph.node}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    for _, n in ir.walk(net.ir.body):
        if isinstance(n, (ir.Layer, ir.Merge, ir.MergeRef)):
            name = "/".join(n.path)
            assert name in nodes, f"no node named {name}"
            assert shapes[nodes[name].output[0]] == [3, n.y.depth, *n.y.spatial[::-1]]
    doc = nodes["unit1/relu1"].doc_string
    assert doc.startswith("relu  (merges.cnn:") and "in unit(4, 1) at 7:1" in doc, doc
    assert {p.key: p.value for p in model.metadata_props}["cnndsl.layout"] == "nhwc"


def test_wrong_arguments_are_cnn_errors():
    net = cnndsl.load(EXAMPLES / "digits.cnn")
    variables = net.init(jax.random.key(0))
    for kwargs in ({"batch": 0}, {"layout": "chw"}):
        with pytest.raises(cnndsl.CnnError):
            net.to_onnx(variables, **kwargs)
    del variables["params"]["conv1"]["kernel"]
    with pytest.raises(cnndsl.DataError, match="no `kernel` for layer `conv1`"):
        net.to_onnx(variables)


def test_cli_export_trained_weights(tmp_path, capsys):
    spec = EXAMPLES / "digits.cnn"
    net = cnndsl.load(spec)
    variables = randomize(net.init(jax.random.key(3)), seed=3)
    save_checkpoint(tmp_path / "run" / "checkpoints", variables, step=7, meta={"spec_path": str(spec)})
    out = tmp_path / "digits.onnx"
    assert main(["export", str(spec), "--onnx", str(out), "--weights", str(tmp_path / "run"), "--batch", "4"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnx", "run"]  # no temporary file left
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).normal(size=net.input.array_shape(4)).astype(np.float32)
    _, apply = net.functional(jax.random.key(0))
    want = np.asarray(jax.jit(apply)(variables, x))
    assert rel_diff(session(model).run(None, {"input": x})[0], want) <= TOLERANCE


def test_cli_export_without_weights_says_so(tmp_path, capsys):
    out = tmp_path / "lenet.onnx"
    assert main(["export", str(EXAMPLES / "lenet5.cnn"), "--onnx", str(out), "--dynamic-batch"]) == 0
    captured = capsys.readouterr()
    assert "initial weights" in captured.err and "('N', 32, 32, 1)" in captured.out
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch", "0"], "--batch must be >= 1"),
        (["--weights", "/nonexistent/run"], "no checkpoint"),
        (["--onnx-dir"], None),
    ],
)
def test_cli_export_mistakes_exit_2(tmp_path, capsys, extra, message):
    argv = ["export", str(EXAMPLES / "lenet5.cnn"), "--onnx", str(tmp_path / "x.onnx"), *extra]
    if message is None:  # an unknown option: argparse's own exit 2
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        return
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not Path(tmp_path / "x.onnx").exists()


def test_cli_export_reports_an_unsupported_layer(tmp_path, capsys, monkeypatch):
    from cnndsl.backends.onnx import EMITTERS, UNSUPPORTED

    monkeypatch.delitem(EMITTERS, "maxpool")
    monkeypatch.setitem(UNSUPPORTED, "maxpool", "declared unsupported for this test")
    assert main(["export", str(EXAMPLES / "lenet5.cnn"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "lenet5.cnn:6:29: error: `maxpool 2` (maxpool1) cannot be exported to ONNX" in err
    assert "^^^" in err and "declared unsupported for this test" in err


def test_a_model_over_the_protobuf_limit_is_a_cnn_error(monkeypatch):
    import importlib

    export_module = importlib.import_module("cnndsl.backends.onnx.export")  # the module, not the function
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    monkeypatch.setattr(export_module, "PROTOBUF_LIMIT", 10_000)
    with pytest.raises(cnndsl.DataError, match="over the 2 GiB that one ONNX file can hold"):
        net.to_onnx(net.init(jax.random.key(0)))


def test_the_full_checker_catches_an_emitter_whose_shape_leaves_the_irs():
    """The value info is the IR's shape, so strict shape inference is the trace-time check
    that each emitter's output shape equals the IR's."""
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    model = net.to_onnx(net.init(jax.random.key(0)))
    conv1 = next(v for v in model.graph.value_info if v.name == "conv1")
    conv1.type.tensor_type.shape.dim[2].dim_value += 1  # as if `conv1` had made a 29-row map
    with pytest.raises(Exception, match="Inferred shape and existing shape differ"):
        onnx.checker.check_model(model, full_check=True)
