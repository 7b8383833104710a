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
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from imagebuild.errors import RecipeError
from imagebuild.sources.git import git_facts, git_toplevel
from imagebuild.recipe.checks import check_recipe, check_secret_nodes
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.recipe_files import (MAX_RECIPE_BYTES, RECIPE_FILE, TEMPLATE_SYNTAX, read_recipe_bytes,
                                            stock_recipes_dir)
from imagebuild.recipe.schema import (NodeReader, did_you_mean, expand_merge_keys, find_bad_characters,
                                       find_duplicate_keys, merge_nodes)

MAX_DEPTH = 64                  # nested mappings and lists
MAX_ALIASED = 10_000            # values reached again through aliases, in all


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


class RecipeInputs:
    """What a loaded recipe was made of, for the recipe cache (recipe/cache.py): the sha256 of each
    recipe file read (the recipe, the stock recipe it extends), each path its checks resolved
    (`checks.local_path`: as written, its real path, and `path_identity` from before it was read),
    and whether that is all (not when the text is a template, whose rendering reads the
    environment and git, nor when git was asked for the repository's root)."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.named: list[tuple[str, str, list]] = []
        self.self_contained = True


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
    return load_recipe_with_inputs(path, context)[0]


def load_recipe_with_inputs(path: Path | str, context: dict | None = None) -> tuple[Recipe, RecipeInputs]:
    """`load_recipe`, and what the recipe was made of (RecipeInputs)."""
    source = Path(path)
    if source.is_dir():
        source = source / RECIPE_FILE
    if not source.is_file():
        raise RecipeError(f"no recipe at {source}", hint="run `imagebuild init` to write one")
    # git is asked for the repository's root only when a file lies outside the recipe's own directory
    # (which lies in it): a recipe that is a link elsewhere, or names a file elsewhere.
    repository = functools.cache(lambda: repository_of(source.parent))
    inputs = RecipeInputs()
    real = Path(os.path.realpath(source))
    if real.parent != Path(os.path.realpath(source.parent)):
        inputs.self_contained = False
        if not real.is_relative_to(repository()):
            raise RecipeError("the recipe is a link to a file outside its repository", file=str(source),
                              hint=f"the recipe and the files it names must lie in {repository()}")
    return _Loader(recipe_context(source.parent, context), repository, inputs).load(source), inputs


class _Loader:
    def __init__(self, context: dict[str, Any], repository: Callable[[], Path], inputs: RecipeInputs):
        self.context = context
        self.inputs = inputs

        def asked() -> Path:
            inputs.self_contained = False     # the answer is git's, not a file the cache could check
            return repository()
        self.repository = asked
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
        check_recipe(recipe, reader.fail_key, lambda key: key in reader.nodes, repository=self.repository,
                     named=self.inputs.named)
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
            data = read_recipe_bytes(file)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read the recipe: {exc}", file=name) from None
        if len(data) > MAX_RECIPE_BYTES:
            raise RecipeError(f"the recipe is larger than {MAX_RECIPE_BYTES // 1024} KiB", file=name)
        self.inputs.files[name] = hashlib.sha256(data).hexdigest()
        if _TEMPLATE_SYNTAX.search(text):
            self.inputs.self_contained = False    # rendered with the environment, git and the context
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


def _render(text: str, name: str, context: dict[str, Any]) -> str:
    if not _TEMPLATE_SYNTAX.search(text):
        # What Jinja2 would give back unchanged (it turns \r\n into \n, so text with \r goes through it).
        return text
    from imagebuild.recipe.sandbox import RecipeUndefined, render_template

    context = {key: _Variables(key, value) if key in ("env", "git") and isinstance(value, dict)
               and not isinstance(value, _Variables) else value
               for key, value in context.items()}
    hint = "the recipe can use git.*, env.* and the context it is given"
    try:
        return render_template(text, name, context, hint, undefined=RecipeUndefined)
    except RecipeError as exc:
        if "the environment variable" in exc.message:
            exc.hint = "set it, or give the recipe a default: {{ env.NAME | default('...') }}"
        raise


_TEMPLATE_SYNTAX = TEMPLATE_SYNTAX


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
