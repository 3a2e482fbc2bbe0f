"""`cnndsl.nested`: the one way to read and write a layer's node in a variable tree."""

from __future__ import annotations

from cnndsl import nested


def test_put_makes_the_dicts_on_the_way_and_at_reads_them_back() -> None:
    tree: dict = {}
    nested.put(tree, "stage1.conv1", "kernel", 1)
    nested.put(tree, ("stage1", "conv1"), "bias", 2)
    nested.put(tree, "stage1", "scale", 3)
    assert tree == {"stage1": {"conv1": {"kernel": 1, "bias": 2}, "scale": 3}}
    assert nested.at(tree, "stage1.conv1") == {"kernel": 1, "bias": 2}
    assert nested.at(tree, ()) is tree
    assert nested.at(tree, "stage1.conv2") is None and nested.at(tree, "stage1.conv1.kernel.x") is None
    assert nested.leaves_at(tree, "stage1") == {"scale": 3}  # the layer's own arrays, not its scopes
    assert nested.leaves_at(tree, "nowhere") == {}


def test_keys_are_compared_by_their_text() -> None:
    assert nested.at({1: {"a": 5}}, "1.a") == 5
    assert nested.path_of("a.b") == ("a", "b") and nested.path_of(("a", "b")) == ("a", "b")
