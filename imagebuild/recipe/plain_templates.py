"""The stock server templates rendered without Jinja2, when they use only its plainest parts.

Importing Jinja2 costs more than rendering the three stock templates, and every bake renders
one. The stock templates use a small part of Jinja2's syntax: `{{ expression }}`, and
`{% if expression %}`, `{% else %}`, `{% endif %}`, where an expression is a name with `.key`
lookups, a quoted string, `( ... )`, `a ~ b`, `a in b`, `a if b else c`, and the filters
`default("text")` and `py`. `render` gives what Jinja2 gives for such a template (the same
environment: no block trimming, the trailing newline kept), byte for byte; anything else, in the
template or in the values it meets (an undefined value printed, a value other than text, a
number, a bool or None, output past Jinja2's own bound), raises `NotPlain`, and the caller
renders with Jinja2, which then gives its own result or error.
tests/test_plain_templates.py compares both for every stock template.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Callable


# Output past this is left to Jinja2's sandbox, whose bound (recipe/sandbox.py) is not smaller.
MAX_OUTPUT = 1 << 20
class NotPlain(Exception):
    """The template or its values need Jinja2 itself."""


_UNDEFINED = object()
_PLAIN_VALUES = (str, int, bool, type(None))       # bool is an int; float's str() may differ from Jinja's
_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}|\{#", re.S)
_TOKEN = re.compile(r"\s*(?:(?P<string>\"[^\"\\\\]*\"|'[^'\\\\]*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>[.~|()]))")
_KEYWORDS = {"if", "else", "in", "not", "and", "or", "is", "true", "false", "none", "True", "False", "None"}
# Names Jinja2 answers itself when the context lacks them (its globals, and `self`): not undefined there.
_JINJA_NAMES = {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "self"}


def render(source: str, context: Mapping[str, Any]) -> str:
    """The template rendered as Jinja2 would, or NotPlain."""
    if "\r" in source:
        raise NotPlain("Jinja2 turns a carriage return into a newline")
    out: list[str] = []
    # Each open `if`: (whether its branch renders now, whether the enclosing ones render, whether
    # its else was met: Jinja2 refuses a second one).
    stack: list[tuple[bool, bool, bool]] = []
    rendering = True
    position = 0
    for tag in _TAG.finditer(source):
        out.append(_plain_text(source[position:tag.start()], rendering))
        position = tag.end()
        expression, statement = tag.group(1), tag.group(2)
        if expression is not None:
            if rendering:
                out.append(_text(_evaluate(expression, context)))
            continue
        if statement is None:
            raise NotPlain("a comment")
        words = statement.split(None, 1)
        if not words or statement.startswith(("-", "+")) or statement.endswith(("-", "+")):
            raise NotPlain("whitespace control")
        if words[0] == "if" and len(words) == 2:
            taken = rendering and _truth(_evaluate(words[1], context))
            stack.append((taken, rendering, False))
            rendering = taken
        elif words == ["else"] and stack and not stack[-1][2]:
            taken, outer, _ = stack[-1]
            stack[-1] = (not taken and outer, outer, True)
            rendering = not taken and outer
        elif words == ["endif"] and stack:
            rendering = stack.pop()[1]
        else:
            raise NotPlain(f"statement {words[0]!r}")
    if stack:
        raise NotPlain("an unclosed if")
    out.append(_plain_text(source[position:], rendering))
    text = "".join(out)
    if len(text) > MAX_OUTPUT:
        raise NotPlain("past the output bound")
    return text


def _plain_text(text: str, rendering: bool) -> str:
    """Template text between tags, as it is output; an opening brace of a tag left unclosed is Jinja2's
    error."""
    if "{" + "{" in text or "{%" in text or "{#" in text:
        raise NotPlain("an unclosed tag")
    return text if rendering else ""


def _text(value: Any) -> str:
    if value is _UNDEFINED or not isinstance(value, _PLAIN_VALUES):
        raise NotPlain("a value Jinja2 must print")
    return str(value)


def _truth(value: Any) -> bool:
    if value is _UNDEFINED or not isinstance(value, _PLAIN_VALUES):
        raise NotPlain("a value Jinja2 must test")
    return bool(value)


def _tokens(expression: str) -> list[tuple[str, str]]:
    found, position = [], 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None:
            raise NotPlain(f"syntax at {expression[position:]!r}")
        kind = match.lastgroup
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    parser = _Parser(_tokens(expression), context)
    value = parser.conditional()
    if parser.position != len(parser.tokens):
        raise NotPlain("trailing syntax")
    return value


class _Parser:
    """Recursive descent over: conditional := test ['if' test 'else' conditional];
    test := concat ['in' concat]; concat := filtered ('~' filtered)*;
    filtered := primary ('|' filter)*; primary := string | name ('.' name)* | '(' conditional ')'.
    Both sides of `if`/`else` are evaluated: the values are plain, evaluating has no effect."""

    def __init__(self, tokens: list[tuple[str, str]], context: Mapping[str, Any]):
        self.tokens, self.context, self.position = tokens, context, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            raise NotPlain(f"expected {text or kind}")
        self.position += 1
        return token[1]

    def at(self, kind: str, text: str) -> bool:
        return self.peek() == (kind, text)

    def conditional(self) -> Any:
        value = self.test()
        if not self.at("name", "if"):
            return value
        self.take("name", "if")
        condition = _truth(self.test())
        self.take("name", "else")
        otherwise = self.conditional()
        return value if condition else otherwise

    def test(self) -> Any:
        value = self.concat()
        if not self.at("name", "in"):
            return value
        self.take("name", "in")
        container = self.concat()
        if not isinstance(value, str) or not isinstance(container, str):
            raise NotPlain("`in` on values other than text")
        return value in container

    def concat(self) -> Any:
        value = self.filtered()
        while self.at("op", "~"):
            self.take("op", "~")
            value = _text(value) + _text(self.filtered())
        return value

    def filtered(self) -> Any:
        value = self.primary()
        while self.at("op", "|"):
            self.take("op", "|")
            value = _FILTERS.get(self.take("name"), _unknown_filter)(self, value)
        return value

    def primary(self) -> Any:
        token = self.peek()
        if token is None:
            raise NotPlain("an expression ends early")
        kind, text = token
        if kind == "string":
            self.position += 1
            return text[1:-1]
        if kind == "op" and text == "(":
            self.position += 1
            value = self.conditional()
            self.take("op", ")")
            return value
        name = self.take("name")
        if name in _KEYWORDS:
            raise NotPlain(f"keyword {name!r}")
        value = self.context.get(name, _UNDEFINED)
        if value is _UNDEFINED and name in _JINJA_NAMES:
            raise NotPlain(f"{name!r}, which Jinja2 answers itself")
        while self.at("op", "."):
            self.take("op", ".")
            value = _lookup(value, self.take("name"))
        return value


def _lookup(value: Any, name: str) -> Any:
    """`value.name` as Jinja2 reads it (an attribute, else an item), for the values the templates meet."""
    if name.startswith("_") or value is _UNDEFINED:
        raise NotPlain("a private or undefined lookup")
    if isinstance(value, Mapping):
        if hasattr(value, name):
            raise NotPlain("a mapping's attribute")
        return value.get(name, _UNDEFINED)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if name not in {field.name for field in dataclasses.fields(value)}:
            raise NotPlain("not a field")
        return getattr(value, name)
    raise NotPlain("a lookup on a value other than a mapping or a dataclass")


def _default(parser: _Parser, value: Any) -> Any:
    parser.take("op", "(")
    fallback = parser.take("string")[1:-1]
    parser.take("op", ")")
    return fallback if value is _UNDEFINED else value


def _py(_parser: _Parser, value: Any) -> Any:
    if value is _UNDEFINED or not isinstance(value, _PLAIN_VALUES):
        raise NotPlain("py of a value other than a plain one")
    return repr(value)


def _unknown_filter(_parser: _Parser, _value: Any) -> Any:
    raise NotPlain("a filter other than default and py")


_FILTERS: dict[str, Callable[[_Parser, Any], Any]] = {"default": _default, "py": _py}
