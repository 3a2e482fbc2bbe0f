"""Expressions wherever a number is written (sizes, short options, functions) and
`repeat N as i`: what they bind to, their errors, and that `cnndsl fmt` prints them back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import ir
from cnndsl.errors import CnnError
from cnndsl.syntax.fmt import format_module
from cnndsl.syntax.parse import parse
from cnndsl.syntax.values import make_divisible


def layers(text: str) -> list[ir.Layer]:
    return list(ir.layers(cnndsl.loads(text).ir.body))


def torchvision_make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision.models._utils._make_divisible, copied (torchvision is not installed)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


SIZES = """
block b(c, k, kw, kh, s, w) {
  conv c@(k)x1 p(k//2)x0 -> conv 8@(kw)x(kh) s(s) g(w/16) -> dwconv (k)x(k) p(k//2) -> maxpool 1x(k) s1 p(0)x(k//2)
}
input 16@20x12
b(16, 3, 5, 1, 2, 32)
"""


def test_expressions_in_sizes_and_short_options():
    c1, c2, dw, mp = layers(SIZES)
    assert (c1.args.filters, c1.args.pad) == ((16, (3, 1)), (1, 0))
    assert (c2.args.filters, c2.args.stride, c2.args.groups) == ((8, (5, 1)), (2,), 2)
    assert (dw.args.kernel, dw.args.pad) == ((3, 3), (1,))
    assert (mp.args.window, mp.args.pad) == ((1, 3), (0, 1))
    assert c1.text == "conv 16@3x1 p1x0" and c2.text == "conv 8@5x1 s2 g2"  # reports show values
    assert str(mp.y) == "8@8x6"


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("input 2@9x7\nconv 4@3x(5)", "4@7x3"),
        ("input 2@9x7x5\nconv 4@(3)x3x1", "4@7x5x5"),
        ("input 2@9x7x5\nconv 4@3x3x(1)", "4@7x5x5"),
        ("input 2@9x7\nconv 4@(9//2)x(7//2)", "4@6x5"),
        ("input 2@(3*3)x(14/2)\nrelu", "2@9x7"),
    ],
)
def test_size_forms(spec, shape):
    assert str(cnndsl.loads(spec).output) == shape


@pytest.mark.parametrize("v", [v / 4 for v in range(1, 400)] + [16 * m for m in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)])
def test_make_divisible_is_torchvisions(v):
    from fractions import Fraction

    assert make_divisible(Fraction(v), Fraction(8)) == torchvision_make_divisible(v, 8)
    assert make_divisible(Fraction(v), Fraction(4), Fraction(16)) == torchvision_make_divisible(v, 4, 16)


def test_functions_in_a_network():
    (c, d, e) = layers(
        "block b(c, w) { conv make_divisible(c*w, 8)@1x1 -> conv max(8, floor(c/3))@1x1 -> conv ceil(c*w/3)@1x1 }\n"
        "input 3@4x4\nb(32, 0.75)"
    )
    assert (c.args.filters[0], d.args.filters[0], e.args.filters[0]) == (24, 10, 8)


def test_repeat_index_is_zero_based_and_nests():
    ls = layers("input 1@8x8\nrepeat 3 as i { repeat 2 as j { conv (1 + i*10 + j)@1x1 } }")
    assert [x.args.filters[0] for x in ls] == [1, 2, 11, 12, 21, 22]
    # a rate growing with depth, as EfficientNet's stochastic depth: 0.2 * k / n
    ls = layers("block b(p) { dropout p }\ninput 4\nrepeat 4 as k { b(0.2*k/4) }")
    assert [x.args.rate for x in ls] == [0.0, 0.05, 0.1, 0.15]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("block b(k) { conv 4@(k)x1 p(k/2)x0 }\ninput 1@9x9\nb(3)", "the size must be a whole number, got 1.5"),
        ("input 1@9x9\nconv 4@3x3 q(2)", "`conv` does not take `q(2)`"),
        ("input 1@9x9\nconv 4@3x3 s(1, 2)", "a short option takes one expression"),
        ("input 1@9x9\nconv 4@3x3 -> relu basic(3)", "is an `->` missing before it?"),
        ("input 1@9x9\nconv rounded(3)@3x3", "unknown function `rounded`"),
        ("input 1@9x9\nconv make_divisible(3)@3x3", "needs a value for `divisor`"),
        ("input 1@9x9\nconv make_divisible(30, 0.5)@3x3", "the divisor must be a whole number"),
        ("input 1@9x9\nconv 4@3x3 stride:2", "options are written `name=value`"),
        ("block b(i) { repeat 2 as i { relu } }\ninput 1@9x9\nb(1)", "`i` is already a name here"),
        ("input 1@9x9\nconv 4@3x3 s(2//0)", "division by zero"),
        ("block b(k) { conv 4@3x3 p1x(k) }\ninput 1@9x9\nb(1)", "a short option's size is written with parentheses"),
    ],
)
def test_errors(spec, message):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(spec)
    assert message in e.value.message


@pytest.mark.parametrize("body, fix", [("conv 4@kx1", "`(k)x1`"), ("dwconv kxk", "`(k)x(k)`")])
def test_a_size_written_as_one_name_gets_the_parenthesised_form(body, fix):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(f"block b(k) {{ {body} }}\ninput 3@8x8\nb(3)")
    assert e.value.hints[0] == f"in a size, put names in parentheses: {fix}"


ROUND_TRIP = [
    SIZES,
    "input 2@9x7\nconv 4@3x(5) -> conv 4@(2*2)x3x(1) -> slice 0:c//2 -> mul { identity | relu }",
    "input 1@8x8\nrepeat 3 as i { conv (i+1)@1x1 s(1+i//2) } -> mul skip\ntrain { optimizer = sgd(lr=0.1) }",
    "input 1@8x8\nconv make_divisible(c*w, 8, min_value=16)@1x1 p(k//2)x(k//2)",
    (
        "input 4@8x8\ngelu tanh -> hardswish -> instancenorm affine -> lrn 5 alpha=1e-4 k=2 -> groupnorm 2"
        " -> shuffle 2 -> layerscale 1e-6 -> repeat 2 as i { residual { conv 4@3x3 p1 -> droppath 0.2*i/2 } }"
    ),
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_fmt_prints_new_syntax_back(text):
    m = parse(text)
    again = format_module(m)
    assert parse(again) == m, again


def test_integer_division_floors():
    (c,) = layers("input 1@9x9\nconv (7//2)@((0-7)//2+5)x1")
    assert c.args.filters == (3, (1, 1)) and math.floor(-7 / 2) == -4


TOKENS = [
    "conv", "8@", "(k)", "x1", "x(", "k", ")", "(", "s(", "p(", "g(", "2", "//", "/", ":", "slice", "0:4",
    "mul", "{", "}", "|", "identity", "->", "repeat", "as", "i", "make_divisible(", ",", "8", "max(", "gelu",
    "tanh", "shuffle", "lrn", "droppath", "0.5", "layerscale", "groupnorm", "instancenorm", "affine", "3x(k)",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14), st.sampled_from([" ", ""]))
def test_new_syntax_garbage_is_a_cnn_error(tokens, sep):
    """Random text from the new syntax's pieces compiles or is a `CnnError`, never a traceback."""
    text = "block b(k=3, c=8) { " + sep.join(tokens) + " }\ninput 8@9x9\nb()"
    try:
        cnndsl.loads(text)
    except CnnError:
        pass
