"""Templates from the user (a recipe, an os.dockerfile) rendered by Jinja2 in a sandbox bounded in
time, size and loop count.

Its own module so that reading a recipe without template syntax, the common case of `status`,
`history` and `promote`, does not import Jinja2.
"""

from __future__ import annotations

import functools
import itertools
import re
import string
import time
from typing import Any, Callable

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg

from imagebuild.errors import RecipeError


class RecipeUndefined(jinja2.StrictUndefined):
    """An undefined variable named the way the recipe spells it: `env.NAME`, `git.key` (the owner
    then has a `missing(key)` method saying what is missing)."""

    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if hasattr(owner, "missing") and isinstance(self._undefined_name, str):
            return owner.missing(self._undefined_name)
        return super()._undefined_message


# -- templates: sandboxed and bounded ------------------------------------------------
# A template fills in a few values; these limits are far above that and far below what
# would hang a bake or fill its memory.
TEMPLATE_SECONDS = 3.0          # wall clock for one render
TEMPLATE_MAX_SIZE = 1 << 20     # characters of output, and of any one string or list made on the way
TEMPLATE_MAX_MADE = 32 << 20    # characters and items made in all, over one render
TEMPLATE_MAX_RANGE = 10_000     # items of one range()
TEMPLATE_MAX_LOOPS = 100_000    # loop iterations, over one render
TEMPLATE_MAX_INT_BITS = 4096    # about 1,200 digits
_MAX_WIDTH = 10_000             # a width or precision in % and str.format
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


class TemplateLimit(SecurityError):
    """A template went past one of the limits above; `lineno` when known from outside the template."""

    lineno: int | None = None


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, bounded in time, size and loop count.

    Every call, filter, arithmetic operator, `~` and loop step checks the clock and the size
    of what it makes; `range` is capped; nothing is read from files unless a loader is given
    (only for the package's own templates). Use `render()`, which also bounds the output.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "/"})

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("undefined", jinja2.StrictUndefined)
        super().__init__(keep_trailing_newline=True, autoescape=False, **kwargs)
        self.code_generator_class = _BoundedCodeGenerator
        self.globals.pop("lipsum", None)
        self.globals["range"] = self._range
        self.filters = {name: self._bounded_filter(name, func) for name, func in self.filters.items()}
        self._deadline = float("inf")
        self._made = 0
        self._loops = 0

    def render(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        self._deadline = time.monotonic() + TEMPLATE_SECONDS
        self._made = self._loops = 0
        out: list[str] = []
        size = 0
        chunks = template.generate(context)
        for chunk in chunks:
            size += len(chunk)
            if size > TEMPLATE_MAX_SIZE:
                limit = TemplateLimit(f"the template renders to more than {TEMPLATE_MAX_SIZE} characters")
                limit.lineno = _generating_line(chunks, template)
                raise limit
            out.append(chunk)
            self._tick()
        return "".join(out)

    # -- the checks -------------------------------------------------------------

    def _tick(self) -> None:
        if time.monotonic() > self._deadline:
            raise TemplateLimit(f"the template takes longer than {TEMPLATE_SECONDS:g} seconds")

    def _made_value(self, value: Any) -> Any:
        if isinstance(value, _SIZED):
            if len(value) > TEMPLATE_MAX_SIZE:
                raise TemplateLimit(f"a value of more than {TEMPLATE_MAX_SIZE} characters or items")
            self._made += len(value)
            if self._made > TEMPLATE_MAX_MADE:
                raise TemplateLimit(f"the template makes more than {TEMPLATE_MAX_MADE} characters in all")
        elif isinstance(value, int) and value.bit_length() > TEMPLATE_MAX_INT_BITS:
            raise TemplateLimit(f"a number of more than {TEMPLATE_MAX_INT_BITS} bits")
        return value

    def _expect_at_most(self, size: int) -> None:
        if size > TEMPLATE_MAX_SIZE:
            raise TemplateLimit(f"a value of more than {TEMPLATE_MAX_SIZE} characters or items")

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > TEMPLATE_MAX_RANGE:
            raise TemplateLimit(f"range() of more than {TEMPLATE_MAX_RANGE} items")
        return numbers

    def bounded_loop(self, iterable: Any):
        """What every `{% for %}` iterates: the items, one clock check and count each."""
        for item in iterable:
            self._loops += 1
            if self._loops > TEMPLATE_MAX_LOOPS:
                raise TemplateLimit(f"loops run more than {TEMPLATE_MAX_LOOPS} times in all")
            self._tick()
            yield item

    def concat(self, parts: Any) -> str:  # type: ignore[override]
        """What joins the output a block, a macro or `{% set %}...{% endset %}` captured:
        the compiled template takes `environment.concat` for it."""
        pieces = []
        size = 0
        for part in parts:
            size += len(part)
            self._expect_at_most(size)
            pieces.append(part)
        self._tick()
        return self._made_value("".join(pieces))

    def bounded_concat(self, parts: tuple) -> str:
        """`a ~ b`."""
        self._tick()
        texts = [str(part) for part in parts]
        self._expect_at_most(sum(map(len, texts)))
        return self._made_value("".join(texts))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self._tick()
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, _SIZED) and isinstance(times, int):
                    self._expect_at_most(len(sequence) * max(times, 0))
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > TEMPLATE_MAX_INT_BITS:
                raise TemplateLimit(f"a number of more than {TEMPLATE_MAX_INT_BITS} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 \
                and abs(left) > 1 and left.bit_length() * right > TEMPLATE_MAX_INT_BITS:
            raise TemplateLimit(f"a number of more than {TEMPLATE_MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return self._made_value(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            self._tick()
            for _, _, spec, _ in string.Formatter().parse(text):
                if spec and ("{" in spec or any(int(n) > _MAX_WIDTH for n in re.findall(r"\d+", spec))):
                    raise TemplateLimit(f"a format width above {_MAX_WIDTH}, or one given as an argument")
            return self._made_value(wrapped(*args, **kwargs))

        return checked

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        __self._tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = __self._precheck(__obj.__name__, owner, args, kwargs)
        else:
            __self._check_numbers(args, kwargs)
        return __self._made_value(super().call(__context, __obj, *args, **kwargs))

    def _bounded_filter(self, name: str, func: Callable) -> Callable:
        passes_context = _PassArg.from_obj(func) is not None

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            self._tick()
            head, value, rest = (args[:1], args[1], args[2:]) if passes_context else ((), args[0], args[1:])
            if name == "format" and isinstance(value, str):
                _check_printf(value)
            rest = self._precheck(name, value, rest, kwargs)
            if name in ("join", "sum", "list"):
                value = self._bounded_items(value)
            if name == "join" and isinstance(value, list):
                separator = str(rest[0] if rest else kwargs.get("d", ""))
                self._expect_at_most(len(separator) * len(value) + sum(len(str(item)) for item in value))
            return self._made_value(func(*head, value, *rest, **kwargs))

        return bounded

    # -- what an operation would make, before it makes it ------------------------------

    def _check_numbers(self, args: tuple, kwargs: dict) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and abs(value) > TEMPLATE_MAX_SIZE:
                raise TemplateLimit(f"a number above {TEMPLATE_MAX_SIZE} given to a function")

    def _bounded_items(self, value: Any) -> Any:
        """An iterable as a list, refused when it holds too much: what join and sum would make."""
        if isinstance(value, (str, dict)) or not hasattr(value, "__iter__"):
            return value
        items = list(itertools.islice(self.bounded_loop(value), TEMPLATE_MAX_SIZE + 1))
        self._expect_at_most(len(items) + sum(len(item) for item in items if isinstance(item, _SIZED)))
        return items

    def _precheck(self, name: str, value: Any, args: tuple, kwargs: dict) -> tuple:
        """Refuse a string operation whose result would be too large; returns `args`
        (with an iterable to join turned into a checked list)."""
        self._check_numbers(args, kwargs)
        if not isinstance(value, str):
            return args
        if name == "join" and args:            # str.join(items): value is the separator
            items = self._bounded_items(args[0])
            if isinstance(items, list):
                self._expect_at_most(len(value) * len(items) + sum(len(str(item)) for item in items))
            return (items, *args[1:])
        if name == "replace" and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            count = value.count(old) if old else len(value) + 1
            self._expect_at_most(len(value) + count * len(new))
        elif name == "indent":
            width = args[0] if args else kwargs.get("width", 4)
            width = width if isinstance(width, int) else len(str(width))
            self._expect_at_most(len(value) + (value.count("\n") + 1) * max(width, 0))
        elif name == "expandtabs":
            size = args[0] if args else kwargs.get("tabsize", 8)
            self._expect_at_most(len(value) + value.count("\t") * max(int(size), 0))
        elif name == "wordwrap":
            wrap = (args[2] if len(args) > 2 else None) or kwargs.get("wrapstring") or "\n"
            self._expect_at_most(len(value) * (len(str(wrap)) + 1))
        return args


def _generating_line(chunks: Any, template: jinja2.Template) -> int | None:
    """The template line a suspended render is at: the innermost of its generators that runs
    the template's code, through the debug information Jinja2 keeps for tracebacks."""
    line = None
    while chunks is not None:
        frame = getattr(chunks, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename == template.filename:
            line = template.get_corresponding_lineno(frame.f_lineno)
        chunks = getattr(chunks, "gi_yieldfrom", None)
    return line


def _check_printf(text: str) -> None:
    for match in _PRINTF.finditer(text):
        for number in match.groups():
            if number == "*" or (number is not None and int(number) > _MAX_WIDTH):
                raise TemplateLimit(f"a % width above {_MAX_WIDTH}, or one given as an argument")


class _BoundedCodeGenerator(CodeGenerator):
    """Routes `~` and every `{% for %}` through BoundedEnvironment's checks."""

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:  # noqa: N802
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Any) -> None:  # noqa: N802
        if not getattr(node, "bounded", False):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_loop"), [node.iter], [], None, None,
                                   lineno=node.lineno)
            node.bounded = True
        super().visit_For(node, frame)


_OTHER_FILES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def render_template(source: str, name: str, context: dict[str, Any], hint: str | None = None,
                    undefined: type[jinja2.Undefined] = jinja2.StrictUndefined) -> str:
    """Render a template from the user (a recipe, an os.dockerfile) in the BoundedEnvironment,
    alone: it cannot include, import or extend another file. Any failure, a limit or an
    error in an expression, is one RecipeError at `name`:line."""
    env = BoundedEnvironment(undefined=undefined)
    try:
        tree = env.parse(source, name, name)
        for node in tree.find_all(_OTHER_FILES):
            word = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from",
                    nodes.Extends: "extends"}[type(node)]
            raise RecipeError(f"template error: {{% {word} %}} is not allowed, a template cannot read other files",
                              file=name, line=node.lineno)
        template = env.template_class.from_code(env, env.compile(tree, name, name), env.make_globals(None), None)
        return env.render(template, context)
    except RecipeError:
        raise
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"template error: {exc.message}", file=name, line=exc.lineno) from None
    except jinja2.TemplateError as exc:
        raise RecipeError(f"template error: {exc.message or exc}", file=name,
                          line=getattr(exc, "lineno", None) or _template_line(exc, name), hint=hint) from None
    except Exception as exc:  # an expression failed: 1/0, [].pop(), a recursion too deep ...
        raise RecipeError(f"template error: {_expression_failure(exc)}", file=name,
                          line=_template_line(exc, name), hint=hint) from None


def _expression_failure(exc: BaseException) -> str:
    """What failed, without values: an error's text can quote a value (an env variable's, say)."""
    known = {ZeroDivisionError: "division by zero", RecursionError: "recursion too deep (a macro calling itself?)",
             MemoryError: "out of memory", OverflowError: "a number too large"}
    for kind, text in known.items():
        if isinstance(exc, kind):
            return text
    return f"an expression failed ({type(exc).__name__})"


def _template_line(exc: BaseException, name: str) -> int | None:
    """Jinja2 rewrites tracebacks so a template's frames carry its own file name and line."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line

