"""Turn composed YAML nodes into the frozen recipe types, strictly.

The accepted keys and their types come from the dataclasses in model.py, so a
key added there is accepted here with no second list to keep in step. Every
node's position is remembered by key path ("server.port",
"environments[1].name") so later checks can point at the right line.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Callable

import yaml

from imagebuild.errors import RecipeError

Where = Callable[[yaml.Node], tuple[str, int]]

# Filled by the loader, never by the recipe's author.
INTERNAL_FIELDS = frozenset({"source", "stock_dir"})

_TAG = "tag:yaml.org,2002:"
MAX_MESSAGE = 300
_TYPE_WORDS = {str: "a string", int: "a whole number", bool: "true or false"}


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str | None:
    import difflib  # only for a mistake: every command that reads a recipe would import it

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = node.tag.removeprefix(_TAG)
    if kind == "null":
        return "nothing"
    if kind in ("int", "float"):
        return f"the number {node.value}"
    if kind == "bool":
        return f"the boolean {node.value}"
    if kind == "str":
        return repr(node.value)
    return f"the {kind} {node.value!r}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null"


class NodeReader:
    """Converts nodes to typed values, raising one-line RecipeErrors located by `where`."""

    def __init__(self, where: Where):
        self.where = where
        self.nodes: dict[str, yaml.Node] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, key: str, message: str, hint: str | None = None) -> typing.NoReturn:
        file, line = self.where(node)
        if len(message) > MAX_MESSAGE:  # a message quoting a long value stays a readable line
            message = message[:MAX_MESSAGE] + "..."
        raise RecipeError(f"{key}: {message}" if key else message, file=file, line=line,
                          key=key or None, hint=hint)

    def fail_key(self, key: str, message: str, hint: str | None = None) -> typing.NoReturn:
        """Fail at the line of an already-read key path (or its nearest recorded parent)."""
        path = key
        while path and path not in self.nodes:
            path = path.rpartition(".")[0] if "." in path else ""
        self.fail(self.nodes.get(path) or self.nodes[""], key, message, hint)

    # -- entry point ---------------------------------------------------------

    def read(self, cls: type, node: yaml.Node, key: str = "") -> Any:
        self.nodes[key] = node
        return self._convert(cls, node, key)

    # -- conversion ----------------------------------------------------------

    def _convert(self, tp: Any, node: yaml.Node, key: str, *, lenient_str: bool = False) -> Any:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            inner = [arg for arg in typing.get_args(tp) if arg is not type(None)]
            if _is_null(node):
                return None
            return self._convert(inner[0], node, key)
        if dataclasses.is_dataclass(tp):
            return self._dataclass(tp, node, key)
        if origin is tuple:
            return self._tuple(typing.get_args(tp)[0], node, key)
        if origin in (Mapping, dict, typing.Mapping):
            return self._mapping(typing.get_args(tp)[1], node, key)
        return self._scalar(tp, node, key, lenient_str=lenient_str)

    def _scalar(self, tp: type, node: yaml.Node, key: str, *, lenient_str: bool) -> Any:
        expected = _TYPE_WORDS.get(tp, tp.__name__)
        if not isinstance(node, yaml.ScalarNode) or _is_null(node):
            self.fail(node, key, f"expected {expected}, got {_describe(node)}")
        kind = node.tag.removeprefix(_TAG)
        if tp is str:
            if kind == "str":
                return node.value
            if kind in ("int", "float"):
                # The text as written: `python: 3.10` must not become "3.1".
                return node.value
            if kind == "bool" and lenient_str:
                return "true" if self._constructor.construct_object(node) else "false"
        elif (tp is int and kind == "int") or (tp is bool and kind == "bool"):
            # An explicit tag (`!!int abc`) skips YAML's own check of the text.
            if not self._resolves_to(node, kind):
                self.fail(node, key, f"{node.value[:40]!r} is not {expected}")
            try:
                return self._constructor.construct_object(node)
            except ValueError:  # more digits than Python converts
                self.fail(node, key, f"expected {expected}, got a number too large")
        self.fail(node, key, f"expected {expected}, got {_describe(node)}",
                  hint="quote it to make it a string" if tp is str else None)

    @staticmethod
    def _resolves_to(node: yaml.ScalarNode, kind: str) -> bool:
        return any(tag == _TAG + kind and pattern.match(node.value)
                   for tag, pattern in yaml.resolver.Resolver.yaml_implicit_resolvers.get(node.value[:1], []))

    def _tuple(self, item_type: Any, node: yaml.Node, key: str) -> tuple:
        if _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, key, f"expected a list, got {_describe(node)}", hint="write it as [a, b] or one '- item' per line")
        items = []
        for index, item in enumerate(node.value):
            item_key = f"{key}[{index}]"
            self.nodes[item_key] = item
            items.append(self._convert(item_type, item, item_key))
        return tuple(items)

    def _mapping(self, value_type: Any, node: yaml.Node, key: str) -> dict:
        out: dict[str, Any] = {}
        for key_node, value_node, name in self._pairs(node, key):
            item_key = f"{key}.{name}"
            self.nodes[item_key] = key_node
            out[name] = self._convert(value_type, value_node, item_key, lenient_str=True)
        return out

    def _dataclass(self, cls: type, node: yaml.Node, key: str) -> Any:
        hints = typing.get_type_hints(cls)
        allowed = [f.name for f in dataclasses.fields(cls) if f.name not in INTERNAL_FIELDS]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        kwargs: dict[str, Any] = {}
        for key_node, value_node, name in self._pairs(node, key):
            item_key = f"{key}.{name}" if key else name
            if name not in allowed:
                where = f"in {key}" if key else "at the top level"
                self.fail(key_node, item_key, f"unknown key {where}",
                          hint=did_you_mean(name, allowed) or f"known keys: {', '.join(allowed)}")
            self.nodes[item_key] = key_node
            kwargs[name] = self._convert(hints[name], value_node, item_key)
        for name in required:
            if name not in kwargs:
                self.fail(node, f"{key}.{name}" if key else name, "missing, it is required")
        return cls(**kwargs)

    def _pairs(self, node: yaml.Node, key: str):
        """(key node, value node, key text) of a mapping; `key:` with nothing reads as empty."""
        if _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, key, f"expected a mapping, got {_describe(node)}")
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or _is_null(key_node):
                self.fail(key_node, key, "keys must be plain words")
            yield key_node, value_node, key_node.value


def _walk(node: yaml.Node | None, key: str = ""):
    """(node, key path) of every node once: a node an alias reaches again is not walked again."""
    seen: set[int] = set()
    stack = [(node, key)]
    while stack:
        node, key = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node, key
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in reversed(node.value):
                name = str(key_node.value)
                stack.append((value_node, f"{key}.{name}" if key else name))
                stack.append((key_node, key))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{key}[{index}]") for index, item in reversed(list(enumerate(node.value))))


def find_duplicate_keys(node: yaml.Node | None, fail: Callable[[yaml.Node, str], typing.NoReturn],
                        key: str = "") -> None:
    """YAML silently keeps the last of two equal keys; a recipe refuses them."""
    for mapping, path in _walk(node, key):
        if isinstance(mapping, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, _ in mapping.value:
                name = str(key_node.value)
                if name in seen:
                    fail(key_node, f"{path}.{name}" if path else name)
                seen.add(name)


# Control characters other than tab and newline, and lone surrogates (not text at all):
# YAML's escapes ("\0", "\e", "\ud800") can write them, and no recipe value needs them.
_BAD_CHARACTER = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def find_bad_characters(node: yaml.Node | None, fail: Callable[[yaml.Node, str], typing.NoReturn]) -> None:
    for scalar, _ in _walk(node):
        if isinstance(scalar, yaml.ScalarNode):
            found = _BAD_CHARACTER.search(scalar.value)
            if found:
                fail(scalar, found.group())


def expand_merge_keys(node: yaml.Node | None, seen: set[int] | None = None) -> None:
    """Apply YAML merge keys (`<<: *defaults`) in place; a key written next to `<<` wins."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        yaml.constructor.SafeConstructor().flatten_mapping(node)
        latest = {}
        for key_node, value_node in node.value:
            # The merged keys come first, the mapping's own after them: the last one wins.
            latest[str(key_node.value)] = (key_node, value_node)
        node.value = list(latest.values())
        for _, value_node in node.value:
            expand_merge_keys(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            expand_merge_keys(item, seen)


def merge_nodes(base: yaml.Node, over: yaml.Node) -> yaml.Node:
    """Deep merge for `extends:`: mappings merge key by key, the user's values win,
    lists and scalars replace, and an empty `key:` keeps the stock value."""
    if _is_null(over):
        return base
    if not (isinstance(base, yaml.MappingNode) and isinstance(over, yaml.MappingNode)):
        return over
    over_pairs = {str(k.value): (k, v) for k, v in over.value}
    merged = []
    for key_node, value_node in base.value:
        name = str(key_node.value)
        if name in over_pairs:
            over_key, over_value = over_pairs.pop(name)
            merged.append((over_key, merge_nodes(value_node, over_value)))
        else:
            merged.append((key_node, value_node))
    merged.extend(over_pairs.values())
    return yaml.MappingNode(over.tag, merged, over.start_mark, over.end_mark)
