"""Nested dicts keyed by the parts of a layer's path (variable trees, checkpoints).

A network's variables are `{collection: {scope: {...: {layer: {name: array}}}}}`, the layer
at path `("stage1", "block2", "conv1")`, written `stage1.block2.conv1`. These read and
write a layer's node in such a tree.
"""

from __future__ import annotations

from typing import Any

Path = tuple[str, ...]


def path_of(layer: str | Path) -> Path:
    """`"stage1.conv1"` -> `("stage1", "conv1")`; a tuple is already a path."""
    return tuple(layer.split(".")) if isinstance(layer, str) else layer


def at(tree: Any, layer: str | Path) -> Any:
    """The node at `layer` in `tree` (keys compared by their text), or None where it is absent."""
    node = tree
    for part in path_of(layer):
        if not isinstance(node, dict):
            return None
        node = next((v for k, v in node.items() if str(k) == part), None)
    return node


def leaves_at(tree: Any, layer: str | Path) -> dict[str, Any]:
    """The arrays of the layer at `layer` (its non-dict entries), `{}` where it is absent."""
    node = at(tree, layer)
    return {k: v for k, v in node.items() if not isinstance(v, dict)} if isinstance(node, dict) else {}


def put(tree: dict[str, Any], layer: str | Path, name: str, value: Any) -> None:
    """Set `name` of the layer at `layer` in `tree`, making the dicts on the way."""
    node = tree
    for part in path_of(layer):
        node = node.setdefault(part, {})
    node[name] = value
