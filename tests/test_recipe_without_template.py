"""A recipe without template syntax is read without Jinja2, and gives what Jinja2 would have given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imagebuild.recipe import loader
from imagebuild.recipe.sandbox import render_template

REPO = Path(__file__).resolve().parent.parent
PLAIN = """name: hello
server:
  kind: command
  command: ["/bin/busybox", "echo", "{not a template} 100% #1"]
environments:
  - name: dev
"""


def modules_after_loading(tmp_path: Path, text: str) -> set[str]:
    (tmp_path / "imagebuild.yaml").write_text(text)
    probe = ("import json, sys\nfrom imagebuild.recipe.loader import load_recipe\n"
             "recipe = load_recipe(sys.argv[1])\n"
             "print(json.dumps([recipe.name, 'jinja2' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "imagebuild.yaml")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True)
    return json.loads(done.stdout)


def test_a_plain_recipe_loads_without_jinja2(tmp_path):
    assert modules_after_loading(tmp_path, PLAIN) == ["hello", False]


def test_a_templated_recipe_still_renders(tmp_path):
    templated = PLAIN.replace("name: hello", "name: {{ 'hel' ~ 'lo' }}")
    assert modules_after_loading(tmp_path, templated) == ["hello", True]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab {}%#-\n\r\t:'\"é")), max_size=60))
def test_text_without_template_syntax_renders_to_itself_as_in_jinja2(text):
    """The shortcut is taken exactly where Jinja2 would give the text back unchanged."""
    try:
        by_jinja = render_template(text, "imagebuild.yaml", {})
    except loader.RecipeError:
        by_jinja = None
    shortcut = not loader._TEMPLATE_SYNTAX.search(text)
    if shortcut:
        assert loader._render(text, "imagebuild.yaml", {}) == text == by_jinja
    else:
        # Only a delimiter or a carriage return sends the text to Jinja2; either can change it.
        assert any(mark in text for mark in ("{{", "{%", "{#", "\r"))
