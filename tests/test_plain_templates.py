"""The stock server templates rendered without Jinja2 give Jinja2's bytes, for every stock template.

Each example recipe that has stock templates is rendered both ways, as it is and with its server
changed in the ways a recipe may (port, workers, host, every option a template reads, values with
quotes, backslashes, braces and non-ASCII text); the bytes must be the same. What the plain
renderer does not take (other syntax, undefined values printed, values other than plain ones) is
left to Jinja2, which gives its own output or error.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from imagebuild.recipe import plain_templates
from imagebuild.recipe.kinds import KINDS
from imagebuild.recipe.loader import stock_recipes_dir
from imagebuild.recipe.sandbox import TEMPLATE_MAX_SIZE
from imagebuild.recipe.templates import _context, render_server_files, render_with_jinja, template_dir
from tests.test_recipe_templates import EXAMPLES, example, with_server

# The server kinds whose stock recipe has templates (java and node have none).
STOCK_KINDS = sorted(name for name, kind in KINDS.items()
                     if kind.stock and any((stock_recipes_dir() / kind.stock).glob("*.j2")))
ODD = ["", "0", "x'y", 'a"b', "back\\slash", "{{ not a tag }}", "{% if %}", "é ü 中", "two words", "1m"]


def examples_of(kind: str) -> list[str]:
    names = []
    for recipe_file in sorted(EXAMPLES.glob("*/imagebuild.yaml")):
        try:
            recipe = example(recipe_file.parent.name)
        except Exception:       # an example that needs git facts or other context to load
            continue
        if recipe.server.kind == kind:
            names.append(recipe_file.parent.name)
    return names


def options_read(kind: str) -> list[str]:
    """The server.options keys a stock template of this kind reads."""
    text = "".join(path.read_text() for path in (stock_recipes_dir() / KINDS[kind].stock).glob("*.j2"))
    return sorted(set(re.findall(r"options\.(\w+)", text)))


def variants(kind: str):
    for name in examples_of(kind):
        recipe = example(name)
        yield recipe
        yield with_server(recipe, port=1, workers=7)
        yield with_server(recipe, workers=0)
        for host in ("::", "127.0.0.1", "fe80::1%eth0"):
            yield with_server(recipe, options={**recipe.server.options, "host": host})
        keys = options_read(kind)
        for value in ODD:
            yield with_server(recipe, options={key: value for key in keys})
        yield with_server(recipe, options={"threads": "4", "timeout": "90", "index": "home.html"})
        yield dataclasses.replace(recipe, app=dataclasses.replace(recipe.app, dest="/srv/my app"))


@pytest.mark.parametrize("kind", STOCK_KINDS)
def test_every_stock_template_renders_to_jinjas_bytes(kind):
    assert len(STOCK_KINDS) == 3
    assert examples_of(kind), f"no example recipe of server kind {kind}"
    checked = 0
    for recipe in variants(kind):
        context = _context(recipe)
        for template in sorted(template_dir(recipe).glob("*.j2")):
            plain = plain_templates.render(template.read_text(encoding="utf-8"), context)
            jinja = render_with_jinja(recipe, template, context)
            assert plain.encode() == jinja.encode(), (template.name, recipe.server)
            checked += 1
    assert checked >= 18


@pytest.mark.parametrize("source, context", [
    ("{{ missing }}", {}), ("{{ a.b }}", {"a": {}}), ("{{ a.items }}", {"a": {}}), ("{{ x | upper }}", {"x": "a"}),
    ("{% for x in y %}{% endfor %}", {"y": []}), ("{{- x }}", {"x": "a"}), ("{# note #}", {}),
    ("{% if x %}a", {"x": True}), ("{{ x }}", {"x": 1.5}), ("{{ x }}", {"x": [1]}), ("{{ x ~ y }}", {"x": "a"}),
    ("{{ x if y }}", {"x": "a", "y": True}), ("{{ x + 1 }}", {"x": 1}), ("a\r\nb", {}), ("{{ '\\n' }}", {}),
    ("{{ x._private }}", {"x": {}}), ("{% raw %}{{ x }}{% endraw %}", {}),
    # Jinja2 refuses a second else; names it answers itself (globals, self) are not undefined there
    ("{% if x %}a{% else %}b{% else %}c{% endif %}", {"x": True}),
    ("{{ range | default('none') }}", {}), ("{{ self | default('none') }}", {}), ("{{ dict | default('none') }}", {}),
], ids=repr)
def test_anything_else_is_left_to_jinja(source, context):
    with pytest.raises(plain_templates.NotPlain):
        plain_templates.render(source, context)


def test_the_output_bound_is_not_past_jinjas():
    assert plain_templates.MAX_OUTPUT <= TEMPLATE_MAX_SIZE


def test_a_value_the_plain_renderer_refuses_still_renders_with_jinja():
    recipe = with_server(example("flask-hello"), options={"timeout": 1.5})
    files = render_server_files(recipe)
    assert b"timeout = 1.5\n" in files["/etc/imagebuild/gunicorn.conf.py"][0]


def test_rendering_the_stock_templates_imports_no_jinja():
    code = ("import sys\nfrom imagebuild.recipe.loader import load_recipe\n"
            "from imagebuild.sources.git import GitFacts\n"
            "from imagebuild.recipe.templates import render_server_files\n"
            "for name in ('flask-hello', 'fastapi-hello', 'static-site'):\n"
            "    recipe = load_recipe('examples/' + name, context={'git': GitFacts().as_context()})\n"
            "    assert render_server_files(recipe)\n"
            "print('jinja2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=EXAMPLES.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
