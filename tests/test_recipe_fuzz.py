"""Mutated recipes, loaded in-process the way the CLI loads them: each one either loads, or is
refused with one RecipeError line (exit code 2) naming its file; never another exception, never
more than a few seconds, never more than a bounded amount of memory."""

from __future__ import annotations

import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebuild.errors import ImageBuildError, RecipeError
from imagebuild.recipe.loader import load_recipe, stock_recipe_names, stock_recipes_dir
from imagebuild.recipe.templates import render_server_files, server_command

from conftest import REPO_ROOT
from test_recipe_loader import NO_GIT

SECONDS = 5                      # one load, however hostile the recipe
MEMORY = 256 * 1024 * 1024       # peak of what one load allocates

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*/imagebuild.yaml"))
SEEDS = [path.read_text(encoding="utf-8") for path in EXAMPLES] + [
    "name: fuzz\n" + (stock_recipes_dir() / name / "imagebuild.yaml").read_text(encoding="utf-8")
    for name in stock_recipe_names()]

FRAGMENTS = [
    # YAML structure, tags and aliases
    ": ", "- ", "\n", "\n  ", "\t", "#", "'", '"', "[", "]", "{", "}", ",", "? ", "|\n  ", ">\n  ",
    "!!int abc", "!!bool perhaps", "!!float x", "!!binary AAAA", "!!timestamp 2001-13-99", "!!set {a}",
    "!!omap [a: 1]", "!!python/object/apply:os.system ['true']", "!foo ", "!!str ", "!!null ",
    "&a ", "*a", "<<: *a", "&b [*a, *a, *a, *a, *a, *a, *a, *a]", "*b", "<<: 3", "~", "null", "[]", "{}",
    "[" * 100, "]" * 100, "\x00", "\x1b", "\\0", "\\e", "\\ud800", "\\x85", "\u2028", "\ufeff",
    "99999999999999999999999", "-1", "0", "70000", "true", "1e400", "0x1F", "0o17", "1_000",
    # Jinja2
    "{{ ", " }}", "{% ", " %}", "{#", "#}", "{{ env.HOME }}", "{{ git.short }}", "{{ 1/0 }}", "{{ [].pop() }}",
    "{{ 'a' * 10**9 }}", "{{ 10**(10**8) }}", "{{ '%*d' % (10**9, 1) }}", "{{ 'x'|indent(10**8) }}",
    "{{ '{:>999999999}'.format(1) }}", "{{ range(10**9)|list }}", "{{ undefined_name }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{% set t %}{% for i in range(999) %}{{ 'x' * 99999 }}",
    "{% endfor %}{% endset %}", "{% include 'imagebuild.yaml' %}",
    "{% import 'x' as y %}", "{% extends 'imagebuild.yaml' %}", "{% if true %}", "{% endif %}",
    "{{ ''.__class__ }}", "{{ lipsum() }}", "{{ cycler(1).next() }}", "{% raw %}", "{% endraw %}",
    # paths and values the checks must refuse
    "../../../../../../etc/passwd", "/proc/self/environ", "../", "..", "//", "/../..", "link",
    "requirements.txt", "--customize-hook=touch /x", "0.0.0.0; touch /x", "-x", "$(id)", "`id`",
    # keys
    "libraries:\n  requirements: ", "app:\n  path: ", "app:\n  dest: ", "os:\n  dockerfile: ",
    "deploy:\n  listen: ", "deploy:\n  state_dir: ", "disk:\n  kernel: ", "extends: ", "server:\n  port: ",
    "environments:\n  - name: ", "    config: {A: ", "detect:\n  default: ",
]

text_or_fragment = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20))
mutation = st.tuples(st.sampled_from(["insert", "delete", "replace", "value", "line"]),
                     st.floats(0, 1), st.integers(0, 40), text_or_fragment)


def mutate(text: str, mutations: list) -> str:
    for kind, where, length, fragment in mutations:
        at = int(where * len(text))
        if kind == "insert":
            text = text[:at] + fragment + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + length:]
        elif kind == "replace":
            text = text[:at] + fragment + text[at + max(len(fragment), 1):]
        else:
            # "value": what follows the next `: ` on its line becomes the fragment (a value of
            # another type, a tag, an alias); "line": a whole line is duplicated.
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            end = len(text) if end < 0 else end
            line = text[start:end]
            if kind == "line":
                text = text[:end] + "\n" + line + text[end:]
            elif ": " in line:
                key = line.split(": ", 1)[0]
                text = text[:start] + key + ": " + fragment + text[end:]
    return text


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """The examples' files other than their recipes (requirements.txt, a link out of the app),
    copied once; each mutated recipe is loaded from a fresh copy."""
    base = tmp_path_factory.mktemp("apps")
    (base / "outside.txt").write_text("SECRET-outside-line >= 1\n")
    for number, recipe in enumerate(EXAMPLES):
        app = base / str(number)
        shutil.copytree(recipe.parent, app, ignore=shutil.ignore_patterns("*.jar", "imagebuild.yaml"))
        (app / "link").symlink_to(base / "outside.txt")
    return base


def load_bounded(path: Path) -> None:
    """Load one recipe as the CLI does and hold it to the properties."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        recipe = load_recipe(path, context=NO_GIT)
        server_command(recipe)
        render_server_files(recipe)
    except ImageBuildError as exc:
        text = exc.one_line()
        assert isinstance(exc, RecipeError) and exc.exit_code == 2, text
        assert "\n" not in text and "SECRET-outside" not in text, text
        assert exc.file is not None and text.startswith(f"{exc.file}:"), text
        assert exc.file == str(path) or exc.file.startswith(str(stock_recipes_dir())), text
    finally:
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SECONDS, f"{elapsed:.1f} s"
    assert peak < MEMORY, f"{peak // 2**20} MiB"


@settings(max_examples=150, deadline=SECONDS * 1000, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, len(SEEDS) - 1), mutations=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_recipes_load_or_fail_in_one_line(apps, seed, mutations):
    text = mutate(SEEDS[seed], mutations)
    app = apps / str(seed % len(EXAMPLES))
    with tempfile.TemporaryDirectory(dir=app) as scratch:
        path = Path(scratch) / "imagebuild.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        if (app / "requirements.txt").exists():
            shutil.copy(app / "requirements.txt", scratch)
        (Path(scratch) / "link").symlink_to(app / "link")
        load_bounded(path)
