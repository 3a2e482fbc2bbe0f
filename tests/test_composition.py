"""Composition: blocks, expressions, repeat, residuals, branches, saved tensors and names,
the errors raised through them, the report's nesting, and random graphs checked against JAX.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import jax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import ir
from cnndsl.report import render_table, rows
from cnndsl.shape import Shape

from .shapecheck import check_against_jax


def names(net: cnndsl.Net) -> list[str]:
    return [n.name for n in net.layers()]


def out(net: cnndsl.Net) -> dict[str, str]:
    """Every layer, merge and block instance by name -> its output shape as text."""
    return {
        n.name: str(n.y) for _, n in ir.walk(net.ir.body) if isinstance(n, (ir.Layer, ir.Merge, ir.MergeRef, ir.Group))
    }


def error(text: str) -> cnndsl.CnnError:
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads(text, "net.cnn")
    return e.value


# --- blocks: parameters, defaults, keywords, expressions ---------------------------------
BLOCK = "block b(c, s=1) { conv c@3x3 stride=s p1 -> relu }\ninput 3@16x16\n"


@pytest.mark.parametrize(
    ("call", "shape"),
    [
        ("b(8)", "8@16x16"),
        ("b(8, 2)", "8@8x8"),
        ("b(8, s=2)", "8@8x8"),
        ("b(s=2, c=4)", "4@8x8"),
        ("b(c=4)", "4@16x16"),
    ],
)
def test_block_defaults_and_keyword_arguments(call, shape):
    net = cnndsl.loads(BLOCK + call)
    assert str(net.output) == shape
    assert net.ir.body.items[0].text == f"b({shape.split('@')[0]}, {1 if shape.endswith('16x16') else 2})"


def test_a_default_may_use_an_earlier_parameter():
    net = cnndsl.loads("block b(c, d=c*2) { conv d@1x1 }\ninput 3@4x4\nb(3) -> b(3, 5)")
    assert [str(n.y) for n in net.layers()] == ["6@4x4", "5@4x4"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("b()", "`b` needs a value for `c`"),
        ("b(8, 2, 3)", "`b` takes 2 arguments, got 3"),
        ("b(8, c=3)", "`c` is given twice to `b`"),
        ("b(8, stride=2)", "`b` has no parameter `stride`"),
        ("basic(8)", "unknown block `basic`"),
    ],
)
def test_bad_calls(call, message):
    e = error(BLOCK + call)
    assert e.message == message
    assert (e.span.line, e.span.column) == (3, 1)


def test_bad_call_points_at_the_definition():
    e = error(BLOCK + "b(8, 2, 3)")
    assert e.notes == ["`block b(c, s=…)` is defined at 1:1"]


def test_block_and_layer_mixups_get_a_hint():
    assert "call it as `b(...)`" in str(error(BLOCK + "b 8"))
    assert "`conv` is a layer" in str(error(BLOCK + "conv(8)"))
    assert "has the name of a layer" in error("block relu(c) { conv c@1x1 }\ninput 3@4x4\nrelu(2)").message


@pytest.mark.parametrize(
    ("expr", "depth"), [("c*4", 32), ("c/2", 4), ("(c+1)*2", 18), ("c-1", 7), ("c*3/4", 6), ("2*c/4", 4)]
)
def test_integer_expressions(expr, depth):
    net = cnndsl.loads(f"block e(c) {{ conv {expr}@1x1 }}\ninput 3@4x4\ne(8)")
    assert net.output == Shape(depth, (4, 4))


def test_a_division_that_does_not_divide_is_an_error_at_the_block_and_the_call():
    e = error("block half(c) { conv c/2@1x1 }\ninput 3@32x32\nhalf(16) -> half(15)")
    assert isinstance(e, cnndsl.ArgumentError)
    assert e.message == "the filter count must be a whole number, got 7.5 (c/2 = 15/2)"
    assert (e.span.line, e.span.column) == (1, 22)
    assert e.notes == ["in `half(15)` called at 3:13"]
    assert e.hints == ["a division in a block must divide exactly"]


# --- repeat ------------------------------------------------------------------------------
def test_repeat_writes_the_body_n_times_with_running_names():
    net = cnndsl.loads("input 3@8x8\nrepeat 3 { conv 4@3x3 p1 -> relu }")
    assert names(net) == ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3"]


def test_repeat_counts_are_expressions_and_may_be_zero():
    net = cnndsl.loads("block r(n) { repeat n - 1 { relu } -> bn }\ninput 3@8x8\nr(1) -> r(3)")
    assert names(net) == ["r1.bn1", "r2.relu1", "r2.relu2", "r2.bn1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input 3@4x4\nrepeat 0-1 { relu }", "repeat count must be >= 0, got -1"),
        (
            "block r(n) { repeat n/2 { relu } }\ninput 3@4x4\nr(3)",
            "the repeat count must be a whole number, got 1.5 (n/2 = 3/2)",
        ),
    ],
)
def test_bad_repeat_counts(text, message):
    assert error(text).message == message


# --- residual ----------------------------------------------------------------------------
def test_residual_with_identity_shortcut():
    net = cnndsl.loads("input 8@8x8\nresidual { conv 8@3x3 p1 -> relu -> conv 8@3x3 p1 } -> relu")
    merge = net.ir.body.items[0]
    assert isinstance(merge, ir.Merge) and merge.residual and merge.name == "add1"
    assert merge.branches[1].items == ()
    assert names(net) == ["conv1", "relu1", "conv2", "relu2"]
    assert net.params["total"] == 2 * (8 * 8 * 9 + 8)


def test_residual_with_projection():
    net = cnndsl.loads("input 8@8x8\nresidual { conv 16@3x3 s2 p1 } project { conv 16@1x1 s2 nobias -> bn }")
    assert names(net) == ["conv1", "project.conv1", "project.bn1"]
    assert out(net) == {"conv1": "16@4x4", "project.conv1": "16@4x4", "project.bn1": "16@4x4", "add1": "16@4x4"}


def test_several_projections_in_one_scope_are_numbered():
    text = "input 3@8x8\n" + " -> ".join(["residual { conv 4@1x1 } project { conv 4@1x1 }"] * 3)
    assert names(cnndsl.loads(text)) == ["conv1", "project.conv1", "conv2", "project2.conv1", "conv3", "project3.conv1"]


def test_residual_mismatch_names_both_sides():
    e = error("input 3@32x32\nresidual { conv 8@3x3 p1 }")
    assert e.message == "add: the input (identity shortcut) is 3@32x32 but the residual body is 8@32x32"
    assert e.notes == ["the residual body outputs 8@32x32", "the input (identity shortcut) outputs 3@32x32"]
    assert "1x1 conv to 8" in e.hints[0]
    e = error("input 3@32x32\nresidual { conv 3@3x3 s2 p1 }")
    assert "project" in e.hints[0]


# --- branches ----------------------------------------------------------------------------
def test_concat_and_add_branches():
    net = cnndsl.loads(
        "input 3@16x16\n"
        "concat { conv 8@1x1 | conv 4@3x3 p1 -> relu | maxpool 3 s1 p1 } -> add { conv 5@1x1 | conv 5@3x3 p1 | conv 5@5x5 p2 }"
    )
    assert out(net)["concat1"] == "15@16x16"
    assert out(net)["add1"] == "5@16x16"
    assert names(net)[:4] == [
        "concat1.branch1.conv1",
        "concat1.branch2.conv1",
        "concat1.branch2.relu1",
        "concat1.branch3.maxpool1",
    ]
    assert names(net)[4:] == ["add1.branch1.conv1", "add1.branch2.conv1", "add1.branch3.conv1"]


def test_identity_branch_makes_a_dense_layer():
    net = cnndsl.loads(
        "block layer(k=4) { concat { identity | bn -> relu -> conv k@3x3 p1 } }\ninput 6@8x8\nrepeat 3 { layer() }"
    )
    assert [str(g.y) for g in net.ir.body.items] == ["10@8x8", "14@8x8", "18@8x8"]


def test_a_single_branch_is_an_error():
    assert "at least two branches" in error("input 3@4x4\nconcat { relu }").message


def test_merge_errors_list_every_branch():
    e = error("input 3@56x56\nconcat { conv 64@3x3 s2 | conv 128@3x3 s2 p1 }")
    assert e.message == "concat: branch 2 is 128@28x28 but branch 1 is 64@27x27"
    assert e.notes == ["branch 1 outputs 64@27x27", "branch 2 outputs 128@28x28"]
    e = error("input 3@8x8\nadd { conv 4@1x1 | conv 4@3x3 | conv 5@1x1 }")
    assert e.notes == ["branch 1 outputs 4@8x8", "branch 2 outputs 4@6x6", "branch 3 outputs 5@8x8"]


def test_merge_error_inside_a_block_names_the_call_site():
    e = error("block f(c) { concat { conv c@3x3 | conv c@3x3 p1 } }\ninput 3@8x8\nf(4)")
    assert (e.span.line, e.span.column) == (1, 14)
    assert e.notes[-1] == "in `f(4)` called at 3:1"


# --- saved tensors (U-Net skips) ----------------------------------------------------------
UNET = """block double(c) { conv c@3x3 p1 -> relu -> conv c@3x3 p1 -> relu }
input 3@32x32
double(8) -> save s1 -> maxpool 2
-> double(16) -> save s2 -> maxpool 2
-> double(32)
-> deconv 16@2x2 s2 -> concat s2 -> double(16)
-> deconv 8@2x2 s2 -> add s1 -> double(8)
-> conv 2@1x1
"""


def test_save_and_merge_by_name():
    net = cnndsl.loads(UNET)
    o = out(net)
    assert (o["concat1"], o["add1"]) == ("32@16x16", "8@32x32")
    assert net.output == Shape(2, (32, 32))
    assert [(r.kind, r.text) for r in rows(net.ir) if r.kind == "save"] == [("save", "save s1"), ("save", "save s2")]
    assert net.warnings == ()  # a 2x2 stride-2 deconv lands back on the grid the pool left


def test_unknown_saved_name_suggests_the_closest():
    e = error("input 3@4x4\nsave skip -> relu -> concat skp")
    assert e.message == "`concat skp` refers to no saved tensor"
    assert e.hints == ["did you mean `skip`?"]


@pytest.mark.parametrize(
    "text",
    [
        "input 3@8x8\nconcat { conv 3@3x3 p1 -> save x | identity } -> concat x",
        "input 3@8x8\nresidual { conv 3@3x3 p1 -> save x -> relu } -> concat x",
        "block f() { save x -> relu }\ninput 3@8x8\nf() -> concat x",
    ],
)
def test_saves_end_with_their_branch_or_block(text):
    assert error(text).message == "`concat x` refers to no saved tensor"


def test_branches_and_projections_see_earlier_saves():
    net = cnndsl.loads(
        "input 3@8x8\nsave x -> residual { conv 3@3x3 p1 -> add x } project { conv 3@1x1 -> add x } -> concat x"
    )
    assert out(net)["concat1"] == "6@8x8"
    check_against_jax(net)


def test_merge_by_name_shape_error():
    e = error("input 3@8x8\nsave x -> maxpool 2 -> concat x")
    assert e.message == "concat: `save x` is 3@8x8 but the current tensor is 3@4x4"


# --- names and parameter paths ------------------------------------------------------------
def test_as_names_layers_blocks_and_merges():
    net = cnndsl.loads(
        "block unit(c) { conv c@3x3 p1 as conv -> relu }\ninput 3@8x8\n"
        "conv 4@1x1 as stem -> unit(4) as stage1 -> unit(4) -> concat { relu | identity } as both -> conv 4@1x1"
    )
    assert names(net) == [
        "stem", "stage1.conv", "stage1.relu1", "unit1.conv", "unit1.relu1", "both.branch1.relu1", "both.branch2.identity1", "conv1"
    ]  # fmt: skip
    assert "both" in out(net)


def test_a_name_used_twice_in_one_scope_is_an_error():
    e = error("input 3@4x4\nrelu as a -> relu as a")
    assert e.message == "the name `a` is already used in this scope"
    assert e.notes == ["it was first used at 2:1"]


def test_an_alias_never_collides_with_derived_names():
    assert names(cnndsl.loads("input 3@4x4\nrelu as relu2 -> relu -> relu -> relu")) == [
        "relu2",
        "relu1",
        "relu3",
        "relu4",
    ]


def test_blocks_calling_blocks_nest_their_names():
    net = cnndsl.loads(
        "block inner(c) { conv c@3x3 p1 -> relu }\nblock outer(c) { inner(c) -> inner(c*2) }\ninput 3@8x8\nouter(4) -> outer(8)"
    )
    assert names(net)[:4] == [
        "outer1.inner1.conv1",
        "outer1.inner1.relu1",
        "outer1.inner2.conv1",
        "outer1.inner2.relu1",
    ]
    assert out(net)["outer2.inner2"] == "16@8x8"
    assert [g.text for g in net.ir.body.items] == ["outer(4)", "outer(8)"]


def test_parameter_paths_are_stable_and_readable():
    text = """block basic(c) { residual { conv c@3x3 p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn } -> relu }
block down(c) { residual { conv c@3x3 s2 p1 -> relu } project { conv c@1x1 s2 } }
input 3@16x16
conv 8@3x3 p1 -> basic(8) -> basic(8) -> down(16) -> gap -> dense 10"""
    v = jax.eval_shape(cnndsl.loads(text).init, jax.random.key(0))
    assert v["params"]["basic2"]["conv1"]["kernel"].shape == (3, 3, 8, 8)
    assert v["batch_stats"]["basic2"]["bn2"]["var"].shape == (8,)
    assert v["params"]["down1"]["project"]["conv1"]["kernel"].shape == (1, 1, 8, 16)
    assert sorted(v["params"]) == ["basic1", "basic2", "conv1", "dense1", "down1"]
    # Appending layers leaves every earlier path unchanged.
    longer = jax.eval_shape(cnndsl.loads(text + " -> relu -> dense 5").init, jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, longer["params"]["basic2"]) == jax.tree.map(
        lambda s: s.shape, v["params"]["basic2"]
    )


# --- recursion and errors through expansion ------------------------------------------------
def test_recursion_is_an_error():
    e = error("block a(c) { conv c@1x1 -> a(c) }\ninput 3@8x8\na(4)")
    assert e.message == "block `a` calls itself (a -> a)"
    e = error("block a(c) { b(c) }\nblock b(c) { conv c@1x1 -> a(c) }\ninput 3@8x8\na(4)")
    assert e.message == "block `a` calls itself (a -> b -> a)"
    assert (e.span.line, e.span.column) == (2, 28)
    assert e.notes == ["in `b(4)` called at 1:14", "in `a(4)` called at 4:1"]
    assert "repeat" in e.hints[0]


DOWN = """block down(c) {
  conv c@3x3 s2 p1 -> relu
  -> conv c@9x9
}
input 3@32x32
conv 8@3x3 p1
-> down(16)
-> down(32)
"""


def test_an_error_in_a_block_points_at_the_block_line_and_the_call_site():
    e = error(DOWN)
    assert isinstance(e, cnndsl.ShapeError)
    assert e.message == "conv 32@9x9 needs an input of at least 9x9, but gets 32@4x4"
    assert (e.span.line, e.span.column) == (3, 6)
    assert "in `down(32)` called at 8:4" in e.notes
    rendered = e.render().splitlines()
    assert rendered[0] == "net.cnn:3:6: error: conv 32@9x9 needs an input of at least 9x9, but gets 32@4x4"
    assert rendered[1:3] == ["    -> conv c@9x9", "       ^^^^^^^^^^"]
    # the partial network reaches into the failing block instance
    partial = e.partial
    assert [g.text for g in partial.body.items if isinstance(g, ir.Group)] == ["down(16)", "down(32)"]


def test_nested_call_sites_are_listed_innermost_first():
    e = error(
        "block inner(c) { conv c@3x3 }\nblock outer(c) { inner(c) -> inner(c*2) }\ninput 3@8x8\nouter(4) -> outer(8)"
    )
    assert e.notes[1:] == ["in `inner(16)` called at 2:30", "in `outer(8)` called at 4:13"]


def test_unknown_name_in_a_block():
    e = error("block b(c) { conv d@1x1 }\ninput 3@4x4\nb(2)")
    assert e.message == "unknown name `d`"
    assert e.notes == ["in `b(2)` called at 3:1"]


# --- receptive field across branches --------------------------------------------------------
def test_receptive_field_is_the_max_over_branches():
    net = cnndsl.loads("input 3@32x32\nconcat { conv 4@3x3 p1 | conv 4@5x5 p2 -> conv 4@3x3 p1 } -> conv 4@3x3 p1")
    merge = net.ir.body.items[0]
    assert merge.rf.size == (7, 7)
    assert net.layers()[-1].rf.size == (9, 9)
    assert net.warnings == ()


def test_misaligned_branch_grids_warn():
    net = cnndsl.loads("block m() { concat { maxpool 2 | conv 8@3x3 s2 p1 } }\ninput 3@32x32\nm()", "net.cnn")
    (w,) = net.warnings
    assert (
        w.message
        == "concat: the grids of branch 1 and branch 2 do not line up (jump 2x2 vs 2x2, centre 0.5x0.5 vs 0x0)"
    )
    assert (w.span.line, w.span.column) == (1, 13)
    assert w.notes == ["in `m()` called at 3:1"]


def test_deconv_receptive_field_centre():
    net = cnndsl.loads("input 1@16x16\nmaxpool 2 -> deconv 1@2x2 s2 -> deconv 1@4x4 s2 p1")
    pool, up, up2 = net.layers()
    assert (pool.rf.start, pool.rf.jump) == ((0.5, 0.5), (2, 2))
    assert (up.rf.start, up.rf.jump) == ((0, 0), (1, 1))  # back on the input grid
    assert (up2.rf.start, up2.rf.jump) == ((-0.25, -0.25), (0.5, 0.5))


# --- the report's nesting -----------------------------------------------------------------
NESTED = """block inner(c) { conv c@3x3 p1 -> relu }
block outer(c) { inner(c) -> residual { inner(c) } }
input 3@8x8
outer(4) -> outer(4) -> gap
"""


def test_report_rows_nest_blocks_and_collapse_with_depth():
    net = cnndsl.loads(NESTED)
    full = rows(net.ir)
    assert [(r.depth, r.kind, r.text) for r in full[:8]] == [
        (0, "block", "outer(4)"),
        (1, "block", "inner(4)"),
        (2, "layer", "conv 4@3x3 p1"),
        (2, "layer", "relu"),
        (2, "block", "inner(4)"),
        (3, "layer", "conv 4@3x3 p1"),
        (3, "layer", "relu"),
        (1, "merge", "residual add ← 4@8x8, input"),
    ]
    top = rows(net.ir, depth=0)
    assert [(r.kind, r.text, r.params) for r in top] == [
        ("block", "outer(4)", 112 + 148),
        ("block", "outer(4)", 2 * 148),
        ("layer", "gap", 0),
    ]
    assert [r.index for r in top] == [1, 2, 3]
    one = rows(net.ir, depth=1)
    assert [r.text for r in one if r.kind == "block"] == ["outer(4)", "inner(4)", "inner(4)"] * 2
    assert all(r.kind != "layer" or r.text == "gap" for r in one)
    table = render_table(net.ir, 0)
    assert "outer(4)" in table and "inner(4)" not in table and "params   556" in table


def test_cli_depth(tmp_path):
    f = tmp_path / "nested.cnn"
    f.write_text(NESTED)
    cli = "import sys; from cnndsl.cli import main; sys.exit(main())"
    run = subprocess.run(
        [sys.executable, "-c", cli, "compile", "--depth", "1", str(f)], check=False, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "outer1.inner2" in run.stdout and "outer1.inner1.conv1" not in run.stdout


# --- property: random graphs agree with JAX --------------------------------------------------
PRELUDE = """block conv_bn(c, s=1) { conv c@3x3 stride=s p1 nobias -> bn -> relu }
block basic(c) { residual { conv c@3x3 p1 -> relu -> conv c@3x3 p1 } -> relu }
block down(c, s=2) { residual { conv c@3x3 stride=s p1 -> relu -> conv c@3x3 p1 } project { conv c@1x1 stride=s } }
block mixed(c) { concat { conv c@1x1 | conv c/2@3x3 p1 | maxpool 3 s1 p1 } }
block pair(c) { conv_bn(c) -> conv_bn(c*2, s=2) }
block skip(c) { save t -> conv c@3x3 p1 -> concat t }
block sum3(c) { add { conv c@1x1 | conv c@3x3 p1 | conv c@5x5 p2 } }
"""


@dataclasses.dataclass
class Sim:
    """The expected shape and parameter counts, computed independently of the compiler."""

    d: int
    w: int
    h: int
    params: int = 0
    fixed: int = 0

    def conv(self, f: int, k: int = 3, s: int = 1, p: int | None = None, bias: bool = True) -> None:
        p = k // 2 if p is None else p
        self.params += f * self.d * k * k + (f if bias else 0)
        self.d, self.w, self.h = f, (self.w + 2 * p - k) // s + 1, (self.h + 2 * p - k) // s + 1

    def bn(self) -> None:
        self.params += 2 * self.d
        self.fixed += 2 * self.d

    def fork(self) -> Sim:
        return dataclasses.replace(self, params=0, fixed=0)

    def absorb(self, branch: Sim) -> None:
        self.params += branch.params
        self.fixed += branch.fixed


@st.composite
def graphs(draw):
    sim = Sim(draw(st.integers(1, 4)), draw(st.integers(6, 16)), draw(st.integers(6, 16)))
    head = f"input {sim.d}@{sim.w}x{sim.h}"
    aliases = iter(range(1, 100))
    saves: list[tuple[str, int, int, int]] = []
    items = []
    for _ in range(draw(st.integers(1, 7))):
        items.append(item(draw, sim, aliases, saves, top=True))
    if draw(st.booleans()):
        items.append("gap -> dense 3")
        sim.params += sim.d * 3 + 3
        sim.d, sim.w, sim.h = 3, 0, 0
    return PRELUDE + head + "\n" + "\n-> ".join(items), sim


def item(draw, sim: Sim, aliases, saves, top: bool = False, level: int = 0) -> str:
    small = min(sim.w, sim.h) < 4
    kinds = ["conv", "act", "call", "call", "repeat"]
    if level < 2:
        kinds += ["residual", "concat", "add"]
    if not small:
        kinds.append("pool")
    if top:
        kinds += ["save", "unet"]
        if any((w, h) == (sim.w, sim.h) for _, _, w, h in saves):
            kinds += ["merge", "merge"]
    kind = draw(st.sampled_from(kinds))
    f = draw(st.integers(1, 6))
    if kind == "conv":
        k = draw(st.sampled_from([1, 3]))
        s = 1 if small else draw(st.sampled_from([1, 2]))
        alias = f" as x{next(aliases)}" if draw(st.booleans()) else ""
        sim.conv(f, k, s)
        return f"conv {f}@{k}x{k} s{s} p{k // 2}{alias}"
    if kind == "act":
        op = draw(st.sampled_from(["relu", "bn", "identity"]))
        if op == "bn":
            sim.bn()
        return op
    if kind == "pool":
        sim.w, sim.h = sim.w // 2, sim.h // 2
        return "maxpool 2"
    if kind == "save":
        name = f"s{len(saves) + 1}"
        saves.append((name, sim.d, sim.w, sim.h))
        return f"save {name}"
    if kind == "unet":  # a skip across a down- and up-sampling, or across one conv
        name = f"s{len(saves) + 1}"
        saves.append((name, sim.d, sim.w, sim.h))
        d, merge = sim.d, draw(st.sampled_from(["concat", "add"]))
        if sim.w % 2 or sim.h % 2 or small:
            sim.conv(d if merge == "add" else f)
            mid = f"conv {sim.d}@3x3 p1"
        else:
            g = d if merge == "add" else draw(st.integers(1, 6))
            sim.w, sim.h = sim.w // 2, sim.h // 2
            sim.conv(f)
            sim.params += g * f * 4 + g
            sim.d, sim.w, sim.h = g, sim.w * 2, sim.h * 2
            mid = f"maxpool 2 -> conv {f}@3x3 p1 -> deconv {g}@2x2 s2"
        if merge == "concat":
            sim.d += d
        return f"save {name} -> {mid} -> {merge} {name}"
    if kind == "merge":
        name, d, _, _ = draw(st.sampled_from([s for s in saves if (s[2], s[3]) == (sim.w, sim.h)]))
        if d == sim.d and draw(st.booleans()):
            return f"add {name}"
        sim.d += d
        return f"concat {name}"
    if kind == "call":
        return call(draw, sim, f, aliases)
    if kind == "repeat":
        n = draw(st.integers(0, 2))
        body = f"basic({sim.d})" if draw(st.booleans()) else "conv_bn(4)"
        for _ in range(n):
            call_sim(sim, body)
        return f"repeat {n} {{ {body} }}"
    if kind == "residual":
        if draw(st.booleans()) or small:
            before = sim.fork()
            body = branch(draw, before, aliases, level + 1, depth=sim.d)
            sim.absorb(before)
            return f"residual {{ {body} }}"
        body, proj = sim.fork(), sim.fork()
        body.conv(f, 3, 2)
        proj.conv(f, 1, 2, bias=False)
        proj.bn()
        sim.absorb(body)
        sim.absorb(proj)
        sim.d, sim.w, sim.h = f, body.w, body.h
        return f"residual {{ conv {f}@3x3 s2 p1 }} project {{ conv {f}@1x1 s2 nobias -> bn }}"
    # concat / add: branches on the same input keeping its grid
    n = draw(st.integers(2, 3))
    forks = [sim.fork() for _ in range(n)]
    target = f if kind == "add" else None
    texts = [branch(draw, b, aliases, level + 1, depth=target) for b in forks]
    for b in forks:
        sim.absorb(b)
    sim.d = f if kind == "add" else sum(b.d for b in forks)
    alias = f" as x{next(aliases)}" if draw(st.booleans()) else ""
    return f"{kind} {{ " + " | ".join(texts) + f" }}{alias}"


def branch(draw, sim: Sim, aliases, level: int, depth: int | None) -> str:
    """A chain that keeps the grid (and ends at `depth` channels when given)."""
    parts = []
    for _ in range(draw(st.integers(0, 2))):
        choice = draw(st.sampled_from(["conv", "act", "pool3", "nested"] if level < 2 else ["conv", "act", "pool3"]))
        if choice == "conv":
            k = draw(st.sampled_from([1, 3]))
            f = draw(st.integers(1, 6))
            sim.conv(f, k)
            parts.append(f"conv {f}@{k}x{k} p{k // 2}")
        elif choice == "act":
            parts.append("relu")
        elif choice == "pool3":
            parts.append("maxpool 3 s1 p1")
        else:
            f = draw(st.integers(1, 6))
            ks = [draw(st.sampled_from([1, 3])) for _ in range(2)]
            start = sim.fork()
            for k in ks:
                b = start.fork()
                b.conv(f, k)
                sim.absorb(b)
            sim.d = 2 * f
            parts.append("concat { " + " | ".join(f"conv {f}@{k}x{k} p{k // 2}" for k in ks) + " }")
    if depth is not None and (sim.d != depth or not parts):
        sim.conv(depth, 1)
        parts.append(f"conv {depth}@1x1")
    return " -> ".join(parts) if parts else "identity"


def call(draw, sim: Sim, f: int, aliases) -> str:
    small = min(sim.w, sim.h) < 4
    options = [f"conv_bn({f})", f"basic({sim.d})", f"mixed({2 * f})", f"skip({f})", f"sum3({f})", f"conv_bn(c={f})"]
    if not small:
        options += [f"conv_bn({f}, 2)", f"conv_bn({f}, s=2)", f"down({f})", f"pair({f})", f"down(s=2, c={f})"]
    options.append(f"down({f}, s=1)")
    text = draw(st.sampled_from(options))
    call_sim(sim, text)
    return text + (f" as b{next(aliases)}" if draw(st.integers(0, 3)) == 0 else "")


def call_sim(sim: Sim, text: str) -> None:
    """What each PRELUDE block does to the shape and the parameter counts."""
    name, args = text.split("(")
    vals = {}
    pos = 0
    for a in args.rstrip(")").split(","):
        a = a.strip()
        if "=" in a:
            k, v = a.split("=")
            vals[k] = int(v)
        else:
            vals[["c", "s"][pos]] = int(a)
            pos += 1
    c, s = vals["c"], vals.get("s", 2 if name == "down" else 1)
    if name == "conv_bn":
        sim.conv(c, 3, s, bias=False)
        sim.bn()
    elif name == "basic":
        sim.conv(c)
        sim.conv(c)
    elif name == "down":
        proj = sim.fork()
        proj.conv(c, 1, s)
        sim.conv(c, 3, s)
        sim.conv(c)
        sim.absorb(proj)
    elif name == "mixed":
        d = sim.d
        sim.params += c * d + c + (c // 2) * d * 9 + c // 2
        sim.d = c + c // 2 + d
    elif name == "pair":
        call_sim(sim, f"conv_bn({c})")
        call_sim(sim, f"conv_bn({2 * c}, 2)")
    elif name == "skip":
        d = sim.d
        sim.conv(c)
        sim.d += d
    elif name == "sum3":
        d = sim.d
        sim.params += sum(c * d * k * k + c for k in (1, 3, 5))
        sim.d = c


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_random_graphs_agree_with_jax(case):
    text, expected = case
    net = cnndsl.loads(text)
    shape = Shape(expected.d, (expected.w, expected.h) if expected.w else ())
    assert net.output == shape, text
    assert (net.params["trainable"], net.params["non_trainable"]) == (expected.params, expected.fixed), text
    check_against_jax(net, batch=1)
