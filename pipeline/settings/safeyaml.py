"""YAML as params.yaml and ``-S`` overrides are read: PyYAML's safe loader, bounded.

PyYAML's ``safe_load`` already never runs code (``!!python`` tags are refused), but three inputs still hurt:
- a few KB of nested aliases (``b: [*a, *a, ...]``, 8 levels) expand into a billion-node value that later
  code, or an error message quoting it, builds in full: aliases are counted on the composed node graph,
  each node once (memoised), and a document whose expanded size exceeds ``MAX_NODES`` is refused;
- deep nesting (``[[[[...]]]]`` 20,000 levels) overflows the interpreter's stack: nesting is limited to
  ``MAX_DEPTH`` levels while composing;
- a key given twice silently replaces the first (``train:`` twice): refused, naming the key and both lines.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import CakdError

MAX_NODES = 100_000  # nodes of the document once every alias is expanded (params.yaml has ~200)
MAX_DEPTH = 64  # nesting levels of collections (params.yaml uses 4)
MERGE_TAG = "tag:yaml.org,2002:merge"


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with a nesting limit, an alias-expansion limit and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise CakdError(f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Node) -> Any:
        size = expanded_size(node)
        if size > MAX_NODES:
            raise CakdError(f"its aliases expand to more than {MAX_NODES:,} values (an alias bomb?)")
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise CakdError(f"key '{str(key)[:80]}' appears twice in one mapping (lines {seen[key]} and "
                                f"{line}); the second would silently replace the first")
            seen[key] = line
        return super().construct_mapping(node, deep)


def expanded_size(root: Node) -> int:
    """How many nodes ``root`` holds once every alias is expanded, computed without expanding it: each node's
    size is computed once (aliases point at the same node object), in an explicit stack (no recursion).
    A node that contains itself (``&a [*a]``) has no finite expansion: refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        if id(node) in open_nodes:
            raise CakdError("an alias refers to a value that contains it (a recursive alias)")
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise CakdError("an alias refers to a value that contains it (a recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str) -> Any:
    """The value of one YAML document; ``CakdError`` (message without location prefix) when it is malformed
    or hostile, ``yaml.YAMLError`` for plain syntax errors (the caller says which file)."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # a guard above should prevent it: never a traceback in any case
        raise CakdError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()
