"""Parser, binding, shape rules, costs and receptive fields — no JAX needed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings

import cnndsl
from cnndsl.shape import Shape
from cnndsl.syntax import ast
from cnndsl.syntax.fmt import format_module
from cnndsl.syntax.parse import parse

from ..conftest import EXAMPLES
from ..strategies import chains

LENET = (EXAMPLES / "lenet5.cnn").read_text()


def shapes(net: cnndsl.Net) -> list[str]:
    return [str(n.y) for n in net.layers()]


def test_lenet_shapes_params_macs_rf():
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    assert shapes(net) == [
        "6@28x28",
        "6@28x28",
        "6@14x14",
        "16@10x10",
        "16@10x10",
        "16@5x5",
        "400",
        "120",
        "120",
        "84",
        "84",
        "10",
        "10",
    ]
    assert net.params == {"total": 61_706, "trainable": 61_706, "non_trainable": 0}
    assert net.macs == 416_520 and net.flops == 833_040
    rf = [n.rf for n in net.layers()]
    assert [(int(r.size[0]), int(r.jump[0])) for r in rf[:6]] == [(5, 1), (5, 1), (6, 2), (14, 2), (14, 2), (16, 4)]
    assert all(r is None for r in rf[6:])


def test_positions_follow_the_source():
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    first = net.layers()[:3]
    line = next(i for i, s in enumerate(LENET.splitlines(), 1) if s.startswith("conv 6@5x5"))
    assert [(n.span.line, n.span.column) for n in first] == [(line, 1), (line, 21), (line, 29)]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("input 3@32x32\nconv 8@3x3 p1", "8@32x32"),
        ("input 3@32x32\nconv 8@3x3 s2 p1", "8@16x16"),
        ("input 3@32x32\nconv 8@3x3 same s2", "8@16x16"),
        ("input 3@33x33\nconv 8@3x3 same s2", "8@17x17"),
        ("input 3@32x32\nconv 8@3x3 d2", "8@28x28"),
        ("input 3@32x32\nconv 8@3x3 dilation=2 pad=2", "8@32x32"),
        ("input 3@32x32\nconv 8@5x3 p2x1", "8@32x32"),  # width x height
        ("input 3@40x20\nconv 8@5x3", "8@36x18"),
        ("input 3@40x20\nconv 8@5x3 s2x1", "8@18x18"),
        ("input 4@32x32\nconv 8@3x3 g2 p1", "8@32x32"),
        ("input 4@32x32\ndwconv 3x3 p1", "4@32x32"),
        ("input 4@16x16\ndeconv 8@2x2 s2", "8@32x32"),
        ("input 4@16x16\ndeconv 8@3x3 s2 p1 outpad=1", "8@32x32"),
        ("input 4@16x16\nmaxpool 2", "4@8x8"),
        ("input 4@15x15\nmaxpool 2", "4@7x7"),
        ("input 4@15x15\nmaxpool 2 ceil", "4@8x8"),
        ("input 4@112x112\nmaxpool 3 s2 p1", "4@56x56"),
        ("input 4@13x13\nmaxpool 3 s2 ceil", "4@6x6"),
        ("input 4@14x14\nmaxpool 3 s2 ceil", "4@7x7"),
        ("input 4@8x6\ngap", "4"),
        ("input 300@100\nconv 100@3 -> gmp", "100"),
        ("input 300@100\nconv 100@5 p2", "100@100"),
        ("input 2@8x8x8\nconv 4@3x3x3", "4@6x6x6"),
        ("input 6@4x4\nglu", "3@4x4"),
        ("input 120\ndense 10", "10"),
        ("input 1@28x28\nflatten -> fc 10", "10"),
    ],
)
def test_shape_rules(spec: str, expected: str):
    assert str(cnndsl.loads(spec).output) == expected


def test_pytorch_ceil_mode_drops_a_window_starting_in_padding():
    # PyTorch: MaxPool2d(2, 2, padding=1, ceil_mode=True) on 5 -> 3 (not 4)
    assert str(cnndsl.loads("input 1@5x5\nmaxpool 2 s2 p1 ceil").output) == "1@3x3"


def test_short_long_and_flag_forms_bind_alike():
    a = cnndsl.loads("input 3@32x32\nconv 8@3x3 s2 p1 d1 g1 nobias").layers()[0].args
    b = cnndsl.loads("input 3@32x32\nconv 8@3x3 stride=2 pad=1 dilation=1 groups=1 bias=false").layers()[0].args
    assert a == b
    assert a.bias is False and a.stride == (2,) and a.pad == (1,)


def test_bn_counts_running_stats_as_non_trainable():
    net = cnndsl.loads("input 3@8x8\nconv 16@3x3 nobias -> bn -> relu")
    assert net.params == {"total": 16 * 27 + 64, "trainable": 16 * 27 + 32, "non_trainable": 32}


def test_costs_convention():
    net = cnndsl.loads("input 3@10x10\nconv 4@3x3 -> flatten -> dense 5")
    conv, _, dense = net.layers()
    assert conv.macs == 4 * 8 * 8 * 27 and dense.macs == 256 * 5
    assert net.to_json()["flops"] == 2 * net.macs


def test_receptive_field_with_dilation_and_stride():
    net = cnndsl.loads("input 1@64x64\nconv 1@3x3 d2 -> conv 1@3x3 s2 -> conv 1@3x3")
    rf = [(int(n.rf.size[0]), int(n.rf.jump[0])) for n in net.layers()]
    assert rf == [(5, 1), (7, 2), (11, 2)]


def test_non_square_receptive_field_is_per_axis():
    net = cnndsl.loads("input 1@32x16\nconv 1@5x3 s2x1")
    rf = net.layers()[0].rf
    assert rf.size == (5, 3) and rf.jump == (2, 1)


def test_json_report_has_the_documented_keys():
    j = cnndsl.load(EXAMPLES / "lenet5.cnn").to_json()
    assert {"network", "input", "output", "params", "macs", "flops", "layers"} <= set(j)
    assert j["input"] == "1@32x32" and j["output"] == "10"
    assert j["params"] == {"total": 61706, "trainable": 61706, "non_trainable": 0}
    row = j["layers"][0]
    assert {"index", "op", "source", "line", "column", "output", "params", "macs", "receptive_field"} <= set(row)
    assert row["source"] == "conv 6@5x5 s1 p0" and row["output"] == "6@28x28" and row["params"] == 156


def test_format_round_trips_to_the_same_ast():
    text = """network T
block basic(c, s=1) {
  residual { conv c@3x3 stride=s p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn }
  project { conv c@1x1 s2 nobias -> bn } -> relu
}
input 3@32x32
conv 8@3x3 p1 as stem -> save a -> repeat 2 { basic(8) } -> concat a
-> concat { identity | conv 4@1x1 | maxpool 3 s1 p1 -> conv (16/4)*2@1x1 } -> scale 1/255
-> normalize mean=(0.5, 0.25) std=(1, 2) -> gap -> dense 10
train {
  epochs = 3
  data = "digits"
  optimizer = sgd(lr=0.1, momentum=0.9)
}
"""
    m = parse(text)
    again = parse(format_module(m))
    assert again == m
    assert format_module(again) == format_module(m)


def test_fmt_of_lenet_is_stable():
    m = parse(LENET)
    out = format_module(m)
    assert parse(out) == m
    assert "-> conv 16@5x5" in out


def test_expressions_are_exact():
    m = parse("block b(c) { conv c*3/2@3x3 }\ninput 1@8x8\nb(4)")
    body = m.blocks[0].body.items[0]
    assert isinstance(body, ast.Layer)
    net = cnndsl.loads("block b(c) { conv c*3/2@3x3 }\ninput 1@8x8\nb(4)")
    assert net.layers()[0].args.filters == (6, (3, 3))
    assert net.layers()[0].text == "conv 6@3x3"


def test_array_shape_is_channels_last_with_height_first():
    assert Shape(3, (640, 480)).array_shape(2) == (2, 480, 640, 3)
    assert Shape(5, (100,)).array_shape() == (100, 5)
    assert str(Shape(3, (640, 480))) == "3@640x480" and str(Shape(10)) == "10"


def test_compile_path_does_not_import_jax():
    code = (
        "import sys, cnndsl.cli\n"
        "cnndsl.cli.main(['compile', '--json', sys.argv[1]])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "lenet5.cnn")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cli_prints_the_table_and_totals():
    r = subprocess.run(
        [sys.executable, "-m", "cnndsl", "compile", str(EXAMPLES / "lenet5.cnn")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "params   61,706 (trainable 61,706, non-trainable 0)" in out
    assert "416,520 MACs = 833,040 FLOPs" in out
    assert "receptive field 16x16 at the last spatial layer, jump 4" in out
    assert "activations 58.6 KiB" in out


def test_cli_on_a_shape_error_prints_the_partial_table_and_exits_2(tmp_path):
    bad = tmp_path / "broken.cnn"
    bad.write_text("input 1@14x14\nconv 6@5x5 -> maxpool 2\n-> conv 16@7x7 -> relu\n")
    r = subprocess.run([sys.executable, "-m", "cnndsl", "compile", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "maxpool 2" in r.stdout and "6@5x5" in r.stdout and "conv 16@7x7" not in r.stdout
    assert "Traceback" not in r.stderr
    assert ":3:4: error: conv 16@7x7 needs an input of at least 7x7, but gets 6@5x5" in r.stderr
    assert "hint: pad it (`p3` keeps 5x5)" in r.stderr


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.cnn")), ids=lambda p: p.stem)
def test_every_example_formats_to_the_same_network(path):
    text = path.read_text()
    out = format_module(parse(text))
    assert parse(out) == parse(text)
    assert cnndsl.loads(out).ir == cnndsl.loads(text).ir


@settings(max_examples=80, deadline=None)
@given(chains())
def test_random_specs_format_to_the_same_network(text):
    out = format_module(parse(text))
    assert parse(out) == parse(text)
    try:
        net = cnndsl.loads(text)
    except cnndsl.CnnError as e:
        with pytest.raises(type(e)):
            cnndsl.loads(out)
        return
    assert cnndsl.loads(out).ir == net.ir
