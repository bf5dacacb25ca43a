"""YAML for files a user (or an attacker) wrote: bounded in size, depth and alias expansion.

`yaml.safe_load` constructs no objects, but it still accepts a "billion laughs" document
(aliases of aliases: a few hundred bytes that expand to billions of nodes once anything walks
the result), recurses once per nesting level (RecursionError at a few thousand) and keeps the
last of two equal keys without a word. The loader here refuses all three while composing,
before any value is built, and every refusal names the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from streamswap.errors import ConfigError

# Far above any real configuration (the built-in one has ~150 nodes, a few levels deep).
MAX_DEPTH = 64
MAX_NODES = 10_000  # counted with every alias expanded (a 1000-photo source list is 1000)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _where(node_or_mark: Any) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"


_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with a nesting limit and duplicate-key refusal while composing, only the
    plain data types a configuration has (no !!binary, !!set, !!timestamp: a plain value
    that looks like a date stays a string), and values that fail to convert (an integer of
    5000 digits) reported by line instead of escaping as a Python error."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        if node.tag not in _TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(
                f"{_where(node)}: the YAML tag {shorten(tag)} is not allowed in a "
                "configuration (only strings, numbers, true/false, null, lists, mappings)"
            )
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ConfigError(f"{_where(node)}: cannot read this value ({shorten(str(exc), 120)})") from None

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # An alias returns a mapping already checked where its anchor was composed.
        alias = self.check_event(AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigError(
                    f"{_where(self.peek_event())}: nested more than {MAX_DEPTH} levels "
                    "deep; a configuration is a few levels of sections"
                )
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, MappingNode) and not alias:
            _refuse_duplicate_keys(node)
        return node


def _refuse_duplicate_keys(node: MappingNode) -> None:
    seen: dict[tuple[str, str], Node] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
            continue
        first = seen.setdefault((key.tag, key.value), key)
        if first is not key:
            raise ConfigError(
                f"{_where(key)}: duplicate key {shorten(key.value)} (first given at "
                f"{_where(first)}); give each key once"
            )


def _expanded_size(root: Node) -> int:
    """Nodes in the document with every alias expanded; ConfigError past MAX_NODES or on a
    recursive alias. Linear in the composed (shared) graph thanks to the memo."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:
            raise ConfigError(
                f"{_where(node)}: an alias refers to the node that contains it "
                "(a recursive structure); not allowed in a configuration"
            )
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_NODES:
            raise ConfigError(
                f"{_where(node)}: with its aliases (*name) expanded the document has more "
                f"than {MAX_NODES} values; aliases of aliases are refused (a 'billion "
                "laughs' document)"
            )
        memo[key] = total
        return total

    return size(root)


def load(text: str, name: str) -> Any:
    """Parse one YAML document from `text` (the caller bounds its length) under the limits
    above; every failure is a one-line ConfigError starting with `name`."""
    loader = _BoundedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at {_where(mark)}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{name}: {problem}{where}") from None
        if node is None:
            return None
        try:
            _expanded_size(node)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        try:
            return loader.construct_document(node)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at {_where(mark)}" if mark else ""
            raise ConfigError(f"{name}: {getattr(exc, 'problem', None) or 'invalid YAML'}{where}") from None
    finally:
        loader.dispose()


def shorten(value: Any, limit: int = 80) -> str:
    """`value` as error messages show it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
