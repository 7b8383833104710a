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


LIBRARIES = 'runtime:\n  python: "3.11"\nlibraries:\n  requirements: {path}\n'


@pytest.fixture
def toplevel_asked(monkeypatch, tmp_path):
    """The repository's root, as git would say it (here: tmp_path/repo), counted."""
    calls = []

    def counted(directory):
        calls.append(directory)
        return tmp_path / "repo"

    monkeypatch.setattr(loader, "git_toplevel", counted)
    return calls


def test_a_recipe_whose_files_lie_in_its_directory_does_not_ask_git_for_the_root(tmp_path, toplevel_asked):
    """`status`, `history` and `promote` read the recipe: one git run fewer for each."""
    app = tmp_path / "repo" / "app"
    app.mkdir(parents=True)
    (app / "requirements.txt").write_text("flask==3.0.0\n")
    (app / "imagebuild.yaml").write_text(RECIPE.format(extra="") + LIBRARIES.format(path="requirements.txt"))
    assert load_recipe(app).name == "hello"
    assert toplevel_asked == []


def test_a_file_outside_the_recipes_directory_asks_git_and_is_still_confined(tmp_path, toplevel_asked):
    app = tmp_path / "repo" / "app"
    app.mkdir(parents=True)
    (tmp_path / "repo" / "shared.txt").write_text("flask==3.0.0\n")
    (tmp_path / "outside.txt").write_text("flask==3.0.0\n")
    recipe = app / "imagebuild.yaml"
    recipe.write_text(RECIPE.format(extra="") + LIBRARIES.format(path="../../outside.txt"))
    with pytest.raises(RecipeError, match="leads outside the recipe's repository"):
        load_recipe(app)
    assert len(toplevel_asked) == 1
    recipe.write_text(RECIPE.format(extra="") + LIBRARIES.format(path="../shared.txt"))
    assert load_recipe(app).libraries.requirements == "../shared.txt"
