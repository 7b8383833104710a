"""Git facts are asked of git only when the recipe's template reads one."""

from __future__ import annotations

import pytest

from imagebuild.recipe import loader
from imagebuild.recipe.loader import RecipeError, load_recipe
from imagebuild.sources.git import GitFacts

RECIPE = """name: hello
server:
  kind: command
  command: ["/bin/true"{extra}]
environments:
  - name: dev
"""


@pytest.fixture
def asked(monkeypatch):
    calls = []

    def counted(root):
        calls.append(root)
        return GitFacts(commit="0" * 40, short="abc1234")

    monkeypatch.setattr(loader, "git_facts", counted)
    return calls


def test_a_recipe_naming_no_git_fact_runs_no_git_facts(tmp_path, asked):
    (tmp_path / "imagebuild.yaml").write_text(RECIPE.format(extra=""))
    assert load_recipe(tmp_path).name == "hello"
    assert asked == []


def test_a_recipe_naming_git_facts_asks_once(tmp_path, asked):
    (tmp_path / "imagebuild.yaml").write_text(RECIPE.format(extra=', "{{ git.short }}", "{{ git.commit[:7] }}"'))
    recipe = load_recipe(tmp_path)
    assert list(recipe.server.command)[-2:] == ["abc1234", "0000000"]
    assert len(asked) == 1


def test_an_unknown_git_fact_names_the_known_ones(tmp_path, asked):
    (tmp_path / "imagebuild.yaml").write_text(RECIPE.format(extra=', "{{ git.nope }}"'))
    with pytest.raises(RecipeError, match=r"git\.nope is not defined; git has .*short"):
        load_recipe(tmp_path)
