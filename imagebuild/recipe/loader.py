"""Read `imagebuild.yaml`: render it with Jinja2, parse it keeping line numbers,
merge the stock recipe it extends, and check it strictly.

Every mistake becomes one RecipeError line naming file:line and the key. A recipe
is input to refuse, not to trust: its size, its YAML (depth, aliases, characters)
and its template (time, output, loops) are bounded, and the files it names must
lie inside its repository.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import io
import itertools
import os
import re
import string
import time
from pathlib import Path
from typing import Any, Callable

import jinja2
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg

from imagebuild.errors import RecipeError
from imagebuild.sources.git import git_facts, git_toplevel
from imagebuild.recipe.checks import check_recipe, check_secret_nodes
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.schema import (NodeReader, did_you_mean, expand_merge_keys, find_bad_characters,
                                       find_duplicate_keys, merge_nodes)

RECIPE_FILE = "imagebuild.yaml"
MAX_RECIPE_BYTES = 1 << 20      # a recipe file, and its rendered text
MAX_DEPTH = 64                  # nested mappings and lists
MAX_ALIASED = 10_000            # values reached again through aliases, in all


def stock_recipes_dir() -> Path:
    """Where stock recipes live: $IMAGEBUILD_RECIPES, else imagebuild/stock_recipes in an
    installed package (pyproject.toml ships recipes/ there), else recipes/ of the checkout."""
    configured = os.environ.get("IMAGEBUILD_RECIPES")
    if configured:
        return Path(configured)
    package = Path(__file__).resolve().parents[1]
    installed = package / "stock_recipes"
    if installed.is_dir():
        return installed
    return package.parent / "recipes"


def stock_recipe_names() -> list[str]:
    base = stock_recipes_dir()
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir() if (entry / RECIPE_FILE).is_file())


def recipe_context(root: Path, context: dict | None = None) -> dict[str, Any]:
    """The variables a recipe is rendered with: `git` facts of `root`, `env` (the process
    environment), then `context` on top (its keys win)."""
    merged: dict[str, Any] = {"env": dict(os.environ)}
    if not context or "git" not in context:
        merged["git"] = _GitFactsOnUse(root)
    merged.update(context or {})
    return merged


def repository_of(directory: Path) -> Path:
    """The directory every file a recipe names must lie in (after symlinks): the git work
    tree holding `directory`, or `directory` itself outside git."""
    toplevel = git_toplevel(directory)
    return Path(os.path.realpath(toplevel if toplevel is not None else directory))


def load_recipe(path: Path | str, context: dict | None = None) -> Recipe:
    """Load and check a recipe.

    `path` is an `imagebuild.yaml` file or the app directory holding one.
    The file is a Jinja2 template rendered with `recipe_context` (`git.commit`,
    `git.short`, `git.describe`, `git.version`, `git.branch`, `git.dirty`,
    `git.commit_time`, `env.NAME`, plus any `context` entries); undefined
    variables are errors. The result is a frozen Recipe with `source` set to the
    file and, when it extends a stock recipe, `stock_dir` to that recipe's
    directory. Raises RecipeError (a UserError, exit code 2) on any mistake.
    """
    source = Path(path)
    if source.is_dir():
        source = source / RECIPE_FILE
    if not source.is_file():
        raise RecipeError(f"no recipe at {source}", hint="run `imagebuild init` to write one")
    repository = repository_of(source.parent)
    if not _is_inside(source, repository):
        raise RecipeError("the recipe is a link to a file outside its repository", file=str(source),
                          hint=f"the recipe and the files it names must lie in {repository}")
    return _Loader(recipe_context(source.parent, context), repository).load(source)


def _is_inside(path: Path, directory: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(directory)


class _Loader:
    def __init__(self, context: dict[str, Any], repository: Path):
        self.context = context
        self.repository = repository
        self.texts: dict[str, tuple[str, str]] = {}       # file -> (source, rendered)
        self.line_maps: dict[str, Callable[[int], int]] = {}

    def line_of(self, name: str, line: int) -> int:
        """The source line of a 0-based line of `name`'s rendered text, mapped when first asked."""
        if name not in self.line_maps:
            self.line_maps[name] = _line_map(*self.texts[name])
        return self.line_maps[name](line)

    def where(self, node: yaml.Node) -> tuple[str, int]:
        mark = node.start_mark
        return mark.name, self.line_of(mark.name, mark.line)

    def load(self, source: Path) -> Recipe:
        user = self.parse(source)
        reader = NodeReader(self.where)
        stock_dir = None
        extends = _top_level_scalar(user, "extends")
        tree = user
        if extends is not None:
            stock_dir = self.find_stock(extends)
            stock = self.parse(stock_dir / RECIPE_FILE)
            if _top_level_scalar(stock, "extends") is not None:
                raise RecipeError("a stock recipe cannot extend another one",
                                  file=str(stock_dir / RECIPE_FILE), key="extends")
            tree = merge_nodes(stock, user)
        check_secret_nodes(tree, reader.fail)
        recipe = reader.read(Recipe, tree)
        recipe = dataclasses.replace(recipe, source=source, stock_dir=stock_dir)
        if recipe.os.image is not None:
            recipe = dataclasses.replace(recipe, os=dataclasses.replace(recipe.os, debian=None))
        check_recipe(recipe, reader.fail_key, lambda key: key in reader.nodes, repository=self.repository)
        if len(recipe.platforms) == 1:
            # One platform is a plain image of that architecture, as os.architecture would make.
            recipe = recipe.for_architecture(recipe.architectures[0])
        return recipe

    def find_stock(self, name: _Located) -> Path:
        names = stock_recipe_names()
        if name in names:
            return stock_recipes_dir() / name
        hint = did_you_mean(str(name), names)
        file, line = self.where(name.node)
        available = f"stock recipes: {', '.join(names) or 'none found in ' + str(stock_recipes_dir())}"
        raise RecipeError(f"extends: unknown stock recipe {name!r}", key="extends",
                          hint=f"{hint} {available}" if hint else available, file=file, line=line)

    def parse(self, file: Path) -> yaml.Node:
        """Render, then compose YAML nodes whose marks carry the file's name."""
        name = str(file)
        try:
            with open(file, "rb") as stream:
                data = stream.read(MAX_RECIPE_BYTES + 1)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read the recipe: {exc}", file=name) from None
        if len(data) > MAX_RECIPE_BYTES:
            raise RecipeError(f"the recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB", file=name)
        rendered = _render(text, name, self.context)
        if len(rendered.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
            raise RecipeError(f"the rendered recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB", file=name)
        self.texts[name] = (text, rendered)
        unprintable = _NOT_YAML_TEXT.search(rendered)
        if unprintable:
            line = self.line_of(name, rendered.count("\n", 0, unprintable.start()))
            raise RecipeError(f"not valid YAML: the character {ord(unprintable.group()):#06x} is not allowed",
                              file=name, line=line, hint="a recipe holds printable text, tabs and newlines")
        loader = None
        try:
            loader = _BoundedLoader(rendered, name)
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = self.line_of(name, mark.line) if mark else None
            raise RecipeError(f"not valid YAML: {exc.problem or exc.context}", file=name, line=line) from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"not valid YAML: {' '.join(str(exc).split())}", file=name) from None
        finally:
            if loader is not None:
                loader.dispose()
        if node is None:
            raise RecipeError("the recipe is empty", file=name, hint="it needs at least name: and server:")
        if not isinstance(node, yaml.MappingNode):
            raise RecipeError("a recipe must be a mapping of keys", file=name,
                              line=self.line_of(name, node.start_mark.line))

        def duplicate(key_node: yaml.Node, key: str):
            file_name, line = self.where(key_node)
            raise RecipeError(f"{key}: the key appears twice", file=file_name, line=line, key=key)

        def bad_character(value_node: yaml.Node, character: str):
            file_name, line = self.where(value_node)
            raise RecipeError(f"the character {ord(character):#06x} is not allowed in a value",
                              file=file_name, line=line, hint="a recipe holds printable text, tabs and newlines")

        find_bad_characters(node, bad_character)
        find_duplicate_keys(node, duplicate)
        try:
            expand_merge_keys(node)
        except yaml.MarkedYAMLError as exc:
            line = self.line_of(name, exc.problem_mark.line) if exc.problem_mark else None
            raise RecipeError(f"YAML merge key: {exc.problem}", file=name, line=line) from None
        return node


# What YAML's reader refuses (YAML 1.1 printable characters); checked first, for one message
# whichever parser runs.
_NOT_YAML_TEXT = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# libyaml's scanner and parser, when PyYAML has them, are several times faster than the
# Python ones on a large recipe; the composer stays PyYAML's, bounded below.
_LIBYAML = getattr(yaml, "__with_libyaml__", False)
_EVENTS: tuple[type, ...] = ((yaml.cyaml.CParser,) if _LIBYAML
                             else (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser))


class _BoundedLoader(yaml.composer.Composer, *_EVENTS, yaml.constructor.SafeConstructor,  # type: ignore[misc]
                     yaml.resolver.Resolver):
    """PyYAML's safe composer with a depth limit and a budget for aliases: each alias costs the
    number of values it stands for, so an alias bomb is refused long before it grows, and an
    alias inside the collection it names (a cycle) is refused outright."""

    def __init__(self, text: str, name: str):
        if _LIBYAML:
            stream = io.StringIO(text)
            stream.name = name          # libyaml names its marks after the stream
            yaml.cyaml.CParser.__init__(self, stream)
        else:
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            self.name = name
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._aliased = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise yaml.composer.ComposerError(
                        None, None, f"the alias *{event.anchor} is inside the value it names", event.start_mark)
                self._aliased += size
                if self._aliased > MAX_ALIASED:
                    raise yaml.composer.ComposerError(
                        None, None, f"aliases stand for more than {MAX_ALIASED} values", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
        return node


class _Located(str):
    """A top-level value read before the recipe is, remembering its node for error positions."""

    node: yaml.Node


def _top_level_scalar(node: yaml.MappingNode, key: str) -> _Located | None:
    for key_node, value_node in node.value:
        if key_node.value == key:
            plain = isinstance(value_node, yaml.ScalarNode) and not value_node.tag.endswith(":null")
            value = _Located(value_node.value if plain else "")
            value.node = value_node
            return value
    return None


class _Variables(dict):
    """`env` or `git` as the template sees them, so a missing key can be named as such."""

    def __init__(self, prefix: str, values: dict):
        super().__init__(values)
        self.prefix = prefix

    def missing(self, key: str) -> str:
        if self.prefix == "env":
            return f"the environment variable {key} is not set"
        return f"{self.prefix}.{key} is not defined; {self.prefix} has {', '.join(sorted(self))}"


class _GitFactsOnUse(_Variables):
    """The `git` facts, asked of git only when the template reads one: `promote`, `status` and
    `history` read recipes that seldom name a git fact, and git facts take several git runs."""

    def __init__(self, root: Path):
        super().__init__("git", {})
        self._root: Path | None = root

    def _fill(self) -> None:
        if self._root is not None:
            root, self._root = self._root, None
            self.update(git_facts(root).as_context())

    def __missing__(self, key):
        self._fill()
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        self._fill()
        return super().__contains__(key)

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def get(self, key, default=None):
        self._fill()
        return super().get(key, default)

    def keys(self):
        self._fill()
        return super().keys()

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()

    def __repr__(self) -> str:
        self._fill()
        return super().__repr__()


class _RecipeUndefined(jinja2.StrictUndefined):
    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if isinstance(owner, _Variables) and isinstance(self._undefined_name, str):
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


def _render(text: str, name: str, context: dict[str, Any]) -> str:
    context = {key: _Variables(key, value) if key in ("env", "git") and isinstance(value, dict)
               and not isinstance(value, _Variables) else value
               for key, value in context.items()}
    hint = "the recipe can use git.*, env.* and the context it is given"
    try:
        return render_template(text, name, context, hint, undefined=_RecipeUndefined)
    except RecipeError as exc:
        if "the environment variable" in exc.message:
            exc.hint = "set it, or give the recipe a default: {{ env.NAME | default('...') }}"
        raise


def _template_line(exc: BaseException, name: str) -> int | None:
    """Jinja2 rewrites tracebacks so a template's frames carry its own file name and line."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _line_map(source: str, rendered: str) -> Callable[[int], int]:
    """Map a 0-based line of the rendered text to a 1-based line of the source; called only
    when an error needs a line, and linear (n log n) in the lines.

    Expressions keep lines in place, so with as many lines on both sides a line maps to
    itself. Blocks ({% if %}, {% for %}) add or drop lines: then each rendered line that is
    also a source line at or after the current position anchors there, and a changed line
    maps to the source line after the previous anchor.
    """
    source_lines = source.splitlines()
    rendered_lines = rendered.splitlines()
    if len(source_lines) == len(rendered_lines):
        return lambda line: min(line, max(len(source_lines) - 1, 0)) + 1
    positions: dict[str, list[int]] = {}
    for index, text in enumerate(source_lines):
        positions.setdefault(text, []).append(index)
    mapping: list[int] = []
    at = 0
    for text in rendered_lines:
        candidates = positions.get(text, ())
        found = bisect.bisect_left(candidates, at)
        if found < len(candidates):
            mapping.append(candidates[found])
            at = candidates[found] + 1
        else:
            mapping.append(min(at, max(len(source_lines) - 1, 0)))
            at = min(at + 1, len(source_lines))
    last = max(len(source_lines), 1)
    return lambda line: mapping[line] + 1 if 0 <= line < len(mapping) else last
