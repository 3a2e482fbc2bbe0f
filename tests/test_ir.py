"""The IR's traversal API (`ir.walk`, `ir.rewrite`, `ir.children`/`ir.with_children`) and
its verifier (`ir.verify`), on hand-written, example and generated networks."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnndsl
from cnndsl import ir, passes
from cnndsl.shape import Shape

from .conftest import EXAMPLES, ROOT
from .strategies import ACTIVATIONS, CHANNEL, NORMS, chains

NESTED = """block b() { dwconv 3x3 p1 -> relu }
input 3@8x8
save s -> b() -> residual { gelu } -> add s as back -> concat { identity | b() }
-> add { relu | mul { identity | sigmoid } } -> dwconv 3x3 p1 -> b()
"""


def compiled(text: str = NESTED) -> ir.Network:
    return cnndsl.compile(text)


def _key(n: ir.Node) -> str:
    return n.key if isinstance(n, ir.Save) else n.name


def test_walk_is_execution_order_with_the_enclosing_nodes():
    got = [(".".join(_key(o) for o in outer), _key(n)) for outer, n in ir.walk(compiled())]
    assert got == [
        ("", "s"),
        ("", "b1"),
        ("b1", "b1.dwconv1"),
        ("b1", "b1.relu1"),
        ("add1", "gelu1"),  # a merge's branches come before it: they run first
        ("", "add1"),
        ("", "back"),
        ("concat1", "concat1.branch1.identity1"),
        ("concat1", "concat1.branch2.b1"),  # a block instance comes before its body
        ("concat1.concat1.branch2.b1", "concat1.branch2.b1.dwconv1"),
        ("concat1.concat1.branch2.b1", "concat1.branch2.b1.relu1"),
        ("", "concat1"),
        ("add2", "add2.branch1.relu1"),
        ("add2.add2.branch2.mul1", "add2.branch2.mul1.branch1.identity1"),
        ("add2.add2.branch2.mul1", "add2.branch2.mul1.branch2.sigmoid1"),
        ("add2", "add2.branch2.mul1"),
        ("", "add2"),
        ("", "dwconv1"),
        ("", "b2"),
        ("b2", "b2.dwconv1"),
        ("b2", "b2.relu1"),
    ]


def test_walk_takes_a_network_a_chain_or_a_node():
    net = compiled()
    assert list(ir.walk(net)) == list(ir.walk(net.body))
    group = net.body.items[1]
    assert isinstance(group, ir.Group)
    assert [(len(o), _key(n)) for o, n in ir.walk(group)] == [(0, "b1"), (1, "b1.dwconv1"), (1, "b1.relu1")]
    assert [n.name for n in ir.layers(group)] == ["b1.dwconv1", "b1.relu1"]
    assert [n.name for n in ir.layers(net)] == [n.name for _, n in ir.walk(net) if isinstance(n, ir.Layer)]


def test_children_and_with_children():
    net = compiled()
    group, merge = net.body.items[1], net.body.items[2]
    assert ir.children(group) == (group.body,) and ir.children(merge) == merge.branches
    assert ir.children(net.body.items[0]) == ()
    assert ir.with_children(merge, list(merge.branches)) is merge  # the same chains: shared
    swapped = ir.with_children(merge, merge.branches[::-1])
    assert swapped.branches == merge.branches[::-1] and swapped.path == merge.path
    with pytest.raises(ValueError, match="has 1 child chains, got 2"):
        ir.with_children(group, (ir.Chain(), ir.Chain()))


def test_rewrite_shares_what_it_does_not_change():
    net = compiled()
    assert ir.rewrite(net) is net
    assert ir.rewrite(net, node=lambda n: n, chain=lambda items: items) is net

    def no_sigmoid(n: ir.Node) -> ir.Node:
        return dataclasses.replace(n, op="hardsigmoid") if isinstance(n, ir.Layer) and n.op == "sigmoid" else n

    out = ir.rewrite(net, node=no_sigmoid)
    assert [n.op for n in ir.layers(out)] == ["hardsigmoid" if n.op == "sigmoid" else n.op for n in ir.layers(net)]
    assert "sigmoid" in [n.op for n in ir.layers(net)]  # the input is never modified
    # only the merge holding the sigmoid is rebuilt, and in it only the branch holding it
    assert [_key(old) for old, new in zip(net.body.items, out.body.items) if old is not new] == ["add2"]
    (old,) = (n for n in net.body.items if _key(n) == "add2")
    (new,) = (n for n in out.body.items if _key(n) == "add2")
    assert new.branches[0] is old.branches[0] and new.branches[1] is not old.branches[1]


def test_rewrite_goes_innermost_first_and_may_drop_nodes():
    net = compiled()
    seen: list[tuple[str, ...]] = []

    def chain(items: tuple[ir.Node, ...]) -> list[ir.Node]:
        seen.append(tuple(_key(n) for n in items))
        return [n for n in items if not (isinstance(n, ir.Layer) and n.op == "identity")]

    out = ir.rewrite(net, chain=chain)
    assert seen.index(("b1.dwconv1", "b1.relu1")) < seen.index(tuple(_key(n) for n in net.body.items))
    assert seen[-1] == tuple(_key(n) for n in net.body.items)  # the outermost chain is last
    assert ("add2.branch2.mul1.branch1.identity1",) in seen
    assert "identity" not in {n.op for n in ir.layers(out)}
    assert len(list(ir.layers(out))) == len(list(ir.layers(net))) - 2


def test_count_costs_runs_on_rewrite():
    text = "input 3@8x8\nconv 4@3x3 -> residual { conv 4@3x3 p1 } -> flatten -> dense 2"
    bare = cnndsl.compile(text, passes=(passes.infer_shapes,))
    assert all(n.params == 0 for n in ir.layers(bare))
    costed = passes.count_costs(bare)
    assert [n.params for n in ir.layers(costed)] == [3 * 9 * 4 + 4, 4 * 9 * 4 + 4, 0, 4 * 6 * 6 * 2 + 2]
    assert costed == cnndsl.compile(text, passes=(passes.infer_shapes, passes.count_costs))


# -- compile(text, passes=...) -------------------------------------------------------------


def test_compile_runs_the_passes_it_is_given():
    text = "input 3@8x8\nconv 4@3x3 -> relu"
    assert cnndsl.compile(text) == cnndsl.compile(text, passes=passes.PASSES) == cnndsl.loads(text).ir
    bare = cnndsl.compile(text, passes=())
    assert all(n.y is None and n.params == 0 for n in ir.layers(bare))
    ir.verify(bare)  # no shapes anywhere is consistent
    with pytest.raises(ir.IRError, match="has no shape"):
        ir.verify(bare, shapes=True)
    shaped = cnndsl.compile(text, passes=(passes.infer_shapes,))
    assert [str(n.y) for n in ir.layers(shaped)] == ["4@6x6", "4@6x6"]
    assert all(n.rf is None and n.macs == 0 for n in ir.layers(shaped))


def test_debug_verifies_after_every_pass(monkeypatch):
    def corrupt(net: ir.Network) -> ir.Network:
        return ir.rewrite(
            net, node=lambda n: dataclasses.replace(n, y=Shape(9, (9, 9))) if isinstance(n, ir.Layer) else n
        )

    text = "input 3@8x8\nconv 4@3x3 -> relu"
    monkeypatch.delenv("CNNDSL_DEBUG", raising=False)
    cnndsl.compile(text, passes=(*passes.PASSES, corrupt))  # unchecked without the variable
    monkeypatch.setenv("CNNDSL_DEBUG", "1")
    cnndsl.compile(text)
    with pytest.raises(ir.IRError, match=r"`conv` conv1: its output shape `y` is 9@9x9, but 4@6x6 flows there"):
        cnndsl.compile(text, passes=(*passes.PASSES, corrupt))


# -- verify ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.cnn")), ids=lambda p: p.stem)
def test_every_example_verifies(path):
    net = cnndsl.load(path).ir
    assert ir.verify(net, shapes=True) is net


def _leaf(draw) -> str:
    return draw(st.sampled_from([*ACTIVATIONS, *NORMS, *CHANNEL, "dwconv 3x3 p1", "identity", "b()"]))


@st.composite
def _items(draw, depth: int = 0) -> str:
    """A chain that keeps its input's shape on any 2-D input, but `concat`s (more depth)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(["leaf", "leaf", "residual", "add", "concat", "mul", "save"] if depth < 3 else ["leaf"])
        )
        if kind == "leaf":
            out.append(_leaf(draw))
        elif kind == "residual":
            out.append("residual { " + draw(_items(depth + 1)).replace("concat", "add") + " }")
        elif kind in ("add", "mul", "concat"):
            inner = [draw(_items(depth + 1)) for _ in range(draw(st.integers(2, 3)))]
            if kind != "concat":
                inner = [i.replace("concat", "add") for i in inner]
            out.append(kind + " { " + " | ".join(inner) + " }")
        else:
            name = f"s{depth}x{len(out)}"
            out.append(f"save {name} -> {_leaf(draw)} -> add {name}")
    return " -> ".join(out)


@st.composite
def nested_nets(draw) -> str:
    depth, h, w = draw(st.integers(1, 4)), draw(st.integers(4, 9)), draw(st.integers(4, 9))
    return f"block b() {{ dwconv 3x3 p1 -> relu }}\ninput {depth}@{h}x{w}\n{draw(_items())}"


@settings(max_examples=60, deadline=None)
@given(text=st.one_of(chains(), nested_nets()))
def test_generated_networks_verify(text):
    try:
        net = cnndsl.compile(text)
    except cnndsl.CnnError:
        return  # a random chain may not fit its input; the front-end tests cover those errors
    ir.verify(net, shapes=True)
    assert ir.rewrite(net) is net
    assert sum(1 for _ in ir.walk(net)) == sum(1 + _inside(n) for n in net.body.items)


def _inside(n: ir.Node) -> int:
    return sum(1 + _inside(m) for c in ir.children(n) for m in c.items)


@settings(max_examples=30, deadline=None)
@given(text=nested_nets())
def test_generated_nested_networks_compile(text):
    """The nested generator builds valid networks (so the test above checks merges on every
    draw), keeping the input's shape but for the depth `concat` adds."""
    net = cnndsl.compile(text)
    assert net.output.spatial == net.input.spatial
    assert net.output == net.input or "concat" in text


def _with_layer(net: ir.Network, name: str, **changes) -> ir.Network:
    return ir.rewrite(
        net, node=lambda n: dataclasses.replace(n, **changes) if isinstance(n, ir.Layer) and n.name == name else n
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda net: _with_layer(net, "b1.relu1", x=Shape(5, (8, 8))),
            r"`relu` b1.relu1: its input shape `x` is 5@8x8, but 3@8x8 flows there",
        ),
        (
            lambda net: _with_layer(net, "dwconv1", y=Shape(6, (7, 8))),
            r"`dwconv` dwconv1: its output shape `y` is 6@7x8, but 6@8x8",
        ),
        (lambda net: _with_layer(net, "gelu1", y=None), r"`gelu` gelu1 has no shape"),
        (lambda net: _with_layer(net, "gelu1", path=("b1",)), r"`gelu` b1: its path is also that of `b` b1"),
        (lambda net: _with_layer(net, "b2.relu1", span=ir.NOSPAN), r"`relu` b2.relu1 has no source span"),
        (
            lambda net: ir.rewrite(
                net,
                node=lambda n: (
                    dataclasses.replace(n, y=Shape(3, (8, 8))) if isinstance(n, ir.Merge) and n.kind == "concat" else n
                ),
            ),
            r"`concat` concat1: its output shape `y` is 3@8x8, but 6@8x8 flows there",
        ),
        (
            lambda net: ir.rewrite(
                net, node=lambda n: dataclasses.replace(n, ref="nowhere") if isinstance(n, ir.MergeRef) else n
            ),
            r"refers to `save` key 'nowhere', saved nowhere on its way",
        ),
        (
            lambda net: ir.rewrite(
                net,
                chain=lambda items: [
                    dataclasses.replace(n, y=None) if not isinstance(n, ir.Layer) else n for n in items
                ],
            ),
            r"`b` b1 has no shape",
        ),
    ],
)
def test_verify_names_what_is_wrong(change, message):
    net = compiled()
    ir.verify(net, shapes=True)
    with pytest.raises(ir.IRError, match=message):
        ir.verify(change(net))


def test_verify_refuses_a_partly_shaped_network():
    bare = cnndsl.compile("input 3@8x8\nconv 4@3x3 -> relu", passes=())
    half = _with_layer(bare, "relu1", x=Shape(4, (6, 6)), y=Shape(4, (6, 6)))
    with pytest.raises(ir.IRError, match="only 1 of its 2 nodes have shapes\n  `conv` conv1 has no shape"):
        ir.verify(half)
    with pytest.raises(ir.IRError, match="`relu` relu1 has a shape, though other nodes have none"):
        ir.verify(half, shapes=False)


def test_verify_lists_every_problem():
    net = compiled("input 3@8x8\n" + " -> ".join(["relu"] * 25))
    bad = ir.rewrite(net, node=lambda n: dataclasses.replace(n, span=ir.NOSPAN) if isinstance(n, ir.Layer) else n)
    with pytest.raises(ir.IRError) as e:
        ir.verify(bad)
    assert str(e.value).count("has no source span") == 20
    assert f"and {len(list(ir.layers(net))) - 20} more" in str(e.value)


def test_the_examples_in_docs_passes_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "passes.md").read_text(), re.S)
    assert len(blocks) == 3
    scope: dict = {}
    for block in blocks:  # one session, as a reader would type them; each asserts what it shows
        exec(compile(block, "docs/passes.md", "exec"), scope)
    assert ir.verify(scope["annotated"], shapes=True)
