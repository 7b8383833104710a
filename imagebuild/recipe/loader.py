"""Read `imagebuild.yaml`: render it with Jinja2, parse it keeping line numbers,
merge the stock recipe it extends, and check it strictly.

Every mistake becomes one RecipeError line naming file:line and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Callable

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from imagebuild.errors import RecipeError
from imagebuild.sources.git import git_facts
from imagebuild.recipe.checks import check_recipe, check_secret_nodes
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.schema import (NodeReader, did_you_mean, expand_merge_keys, find_duplicate_keys,
                                       merge_nodes)

RECIPE_FILE = "imagebuild.yaml"


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
        merged["git"] = git_facts(root).as_context()
    merged.update(context or {})
    return merged


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
    return _Loader(recipe_context(source.parent, context)).load(source)


class _Loader:
    def __init__(self, context: dict[str, Any]):
        self.context = context
        self.line_maps: dict[str, Callable[[int], int]] = {}

    def where(self, node: yaml.Node) -> tuple[str, int]:
        mark = node.start_mark
        return mark.name, self.line_maps[mark.name](mark.line)

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
        check_recipe(recipe, reader.fail_key, lambda key: key in reader.nodes)
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
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"cannot read the recipe: {exc}", file=name) from None
        rendered = _render(text, name, self.context)
        self.line_maps[name] = _line_map(text, rendered)
        loader = yaml.SafeLoader(rendered)
        loader.name = name
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = self.line_maps[name](mark.line) if mark else None
            raise RecipeError(f"not valid YAML: {exc.problem or exc.context}", file=name, line=line) from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"not valid YAML: {exc}", file=name) from None
        finally:
            loader.dispose()
        if node is None:
            raise RecipeError("the recipe is empty", file=name, hint="it needs at least name: and server:")
        if not isinstance(node, yaml.MappingNode):
            raise RecipeError("a recipe must be a mapping of keys", file=name,
                              line=self.line_maps[name](node.start_mark.line))

        def duplicate(key_node: yaml.Node, key: str):
            file_name, line = self.where(key_node)
            raise RecipeError(f"{key}: the key appears twice", file=file_name, line=line, key=key)

        find_duplicate_keys(node, duplicate)
        try:
            expand_merge_keys(node)
        except yaml.MarkedYAMLError as exc:
            line = self.line_maps[name](exc.problem_mark.line) if exc.problem_mark else None
            raise RecipeError(f"YAML merge key: {exc.problem}", file=name, line=line) from None
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


class _RecipeUndefined(jinja2.StrictUndefined):
    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if isinstance(owner, _Variables) and isinstance(self._undefined_name, str):
            return owner.missing(self._undefined_name)
        return super()._undefined_message


def _render(text: str, name: str, context: dict[str, Any]) -> str:
    env = SandboxedEnvironment(undefined=_RecipeUndefined, keep_trailing_newline=True,
                               autoescape=False,
                               loader=jinja2.FunctionLoader(lambda _: (text, name, lambda: True)))
    context = {key: _Variables(key, value) if key in ("env", "git") and isinstance(value, dict) else value
               for key, value in context.items()}
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise RecipeError(f"template error: {exc.message}", file=name, line=exc.lineno) from None
    except jinja2.TemplateError as exc:
        hint = "the recipe can use git.*, env.* and the context it is given"
        if str(exc.message or "").startswith("the environment variable"):
            hint = "set it, or give the recipe a default: {{ env.NAME | default('...') }}"
        raise RecipeError(f"template error: {exc.message or exc}", file=name,
                          line=_template_line(exc, name), hint=hint) from None


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
    """Map a 0-based line of the rendered text to a 1-based line of the source.

    Expressions keep lines in place; blocks ({% if %}, {% for %}) can add or drop
    lines, so unchanged lines anchor the mapping and changed runs map into the
    source run they replaced.
    """
    if source == rendered:
        return lambda line: line + 1
    matcher = difflib.SequenceMatcher(None, source.splitlines(), rendered.splitlines(), autojunk=False)
    opcodes = matcher.get_opcodes()

    def mapped(line: int) -> int:
        for tag, i1, i2, j1, j2 in opcodes:
            if j1 <= line < j2:
                offset = line - j1 if tag == "equal" else min(line - j1, max(i2 - i1 - 1, 0))
                return i1 + offset + 1
        return len(source.splitlines()) or 1

    return mapped
