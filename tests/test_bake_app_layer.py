"""The app layer straight from git: tracked files only, excludes, modes, symlinks, dirty trees."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from imagebuild.errors import DirtyTreeError, RecipeError
from imagebuild.build.layers import app as app_layer
from imagebuild.sources import app_tree
from imagebuild.oci.layer import write_layer
from imagebuild.recipe.model import AppSpec, Recipe
from tests.bake_support import FIRST_COMMIT_TIME, commit_all, git


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "web" / "tests").mkdir(parents=True)
    (root / "web" / "static").mkdir()
    (root / "web" / "app.py").write_text("print('hi')\n")
    (root / "web" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "web" / "run.sh", 0o755)
    (root / "web" / "static" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "web" / "tests" / "test_app.py").write_text("assert True\n")
    os.symlink("app.py", root / "web" / "main.py")
    (root / "web" / ".gitignore").write_text("*.log\n")
    (root / "other.txt").write_text("outside app.path\n")
    (root / "imagebuild.yaml").write_text("name: x\n")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "first", FIRST_COMMIT_TIME)
    (root / "web" / "untracked.txt").write_text("not in git\n")
    (root / "web" / "debug.log").write_text("ignored\n")
    return root


def recipe_for(repo, **app) -> Recipe:
    return Recipe(name="x", app=AppSpec(path="web", exclude=("tests/", "*.md"), **app),
                  source=repo / "imagebuild.yaml")


def layer_members(recipe: Recipe, tree: app_tree.SourceTree) -> dict[str, tarfile.TarInfo | bytes]:
    prefix, files = app_layer.app_files(recipe, tree)
    out = io.BytesIO()
    with tree:
        write_layer(app_layer.entries(recipe, tree, prefix, files), out, source_date_epoch=FIRST_COMMIT_TIME)
    found = {}
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        for member in tar:
            found[member.name] = (member, tar.extractfile(member).read() if member.isfile() else None)
    return found


def test_only_tracked_files_under_app_path_minus_excludes(repo):
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"))
    members = layer_members(recipe_for(repo), tree)
    assert sorted(members) == ["app", "app/.gitignore", "app/app.py", "app/main.py", "app/run.sh", "app/static",
                               "app/static/big.bin"]
    app_py, content = members["app/app.py"]
    assert content == b"print('hi')\n" and app_py.mode == 0o644 and app_py.uid == 0
    assert members["app/run.sh"][0].mode == 0o755
    assert members["app/main.py"][0].issym() and members["app/main.py"][0].linkname == "app.py"
    assert members["app/static/big.bin"][1] == (repo / "web/static/big.bin").read_bytes()
    assert all(member.mtime == FIRST_COMMIT_TIME for member, _ in members.values())


def test_the_commit_not_the_working_tree_is_baked(repo):
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "web" / "app.py").write_text("changed after the commit\n")
    members = layer_members(recipe_for(repo), app_tree.SourceTree(repo, commit))
    assert members["app/app.py"][1] == b"print('hi')\n"


def test_working_tree_mode_takes_current_contents_of_tracked_files_only(repo):
    (repo / "web" / "app.py").write_text("uncommitted\n")
    (repo / "web" / "run.sh").unlink()
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"), working_tree=True)
    members = layer_members(recipe_for(repo), tree)
    assert members["app/app.py"][1] == b"uncommitted\n"
    assert "app/run.sh" not in members
    assert "app/untracked.txt" not in members


def test_inputs_change_with_content_and_not_otherwise(repo):
    recipe = recipe_for(repo)
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"))
    prefix, files = app_layer.app_files(recipe, tree)
    before = app_layer.inputs(recipe, prefix, files, 1).inputs
    (repo / "web" / "untracked.txt").unlink()
    (repo / "other.txt").write_text("outside the app, changed\n")
    commit_all(repo, "outside", FIRST_COMMIT_TIME + 10)
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"))
    assert app_layer.inputs(recipe, *app_layer.app_files(recipe, tree), 1).inputs == before
    (repo / "web" / "app.py").write_text("inside\n")
    commit_all(repo, "inside", FIRST_COMMIT_TIME + 20)
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"))
    assert app_layer.inputs(recipe, *app_layer.app_files(recipe, tree), 1).inputs != before


def test_dirty_files_are_named(repo):
    assert app_tree.dirty_files(repo) == []
    (repo / "web" / "app.py").write_text("edited\n")
    git(repo, "mv", "other.txt", "renamed.txt")
    assert app_tree.dirty_files(repo) == ["renamed.txt", "web/app.py"]
    with pytest.raises(DirtyTreeError, match="web/app.py"):
        app_tree.refuse_dirty(repo)


def test_an_app_path_without_tracked_files_is_a_recipe_error(repo):
    (repo / "empty").mkdir()
    recipe = Recipe(name="x", app=AppSpec(path="empty"), source=repo / "imagebuild.yaml")
    with pytest.raises(RecipeError, match="no files git tracks"):
        app_layer.app_files(recipe, app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD")))


def test_a_file_read_inside_the_tree_comes_through_the_batch_process_as_git_cat_file_gives_it(repo, monkeypatch):
    """Inside `with tree:` a read goes to the running `git cat-file --batch`, not a git of its own: the same
    bytes (a large file, a symlink's target, an empty file), and None for a directory or an untracked path."""
    (repo / "web" / "empty.txt").write_text("")
    git(repo, "add", "web/empty.txt")
    git(repo, "commit", "-q", "-m", "an empty file")
    tree = app_tree.SourceTree(repo, git(repo, "rev-parse", "HEAD"))
    paths = ["web/app.py", "web/static/big.bin", "web/main.py", "web/empty.txt", "web", "web/untracked.txt",
             "nowhere", "web/app.py"]
    apart = [tree.read(path) for path in paths]
    assert apart[1] == (repo / "web" / "static" / "big.bin").read_bytes() and apart[2] == b"app.py"
    assert apart[3] == b"" and apart[4:7] == [None, None, None]
    started = []
    real_run = app_tree.subprocess.run
    monkeypatch.setattr(app_tree.subprocess, "run", lambda *a, **k: started.append(a) or real_run(*a, **k))
    with tree:
        assert [tree.read(path) for path in paths] == apart
        assert started == []
        # the stream is where it should be for the blobs read after them
        listed = {f.path: f for f in tree.files("web")}
        with tree._open_blob(listed["web/app.py"].oid) as blob:
            assert blob.read() == b"print('hi')\n"
        # a read while a blob streams takes a git of its own, and leaves the stream whole
        with tree._open_blob(listed["web/static/big.bin"].oid) as blob:
            head = blob.read(1000)
            assert tree.read("web/app.py") == apart[0]
            assert head + blob.read() == apart[1]
        assert tree.read("web/empty.txt") == b""


PATTERNS = ["tests/", "tests", "docs/api", "docs/api/", "a.txt", "web/static/", "README.md", "x/y/z", "node_modules/",
            ".github/", ".env", "/build", "*.md", "!README.md", "docs/**/x", "a?c", "[ab].txt", "a//", " tests"]
PATHS = ["tests/test_a.py", "tests", "a/tests/b.py", "a/tests", "testsx/a", "xtests/a", "docs/api/x.md", "docs/api",
         "x/docs/api/y", "build/x", "build", "a/build/x", "a.txt", "b/a.txt", "a.txt/c", "web/static/x.css", "web/static",
         "x/web/static/y", "README.md", "sub/README.md", "x/y/z", "x/y/z/w", "q/x/y/z", "node_modules/a/b.js",
         "a/node_modules/b", ".github/workflows/ci.yml", ".env", "a/.env", ".envrc", "hello.py", "abc", "b.txt", "a/"]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_exclude_patterns_match_as_pathspec_matches_them(size):
    """Plain patterns are matched without pathspec, the others with it: either way as pathspec's
    GitIgnoreSpec (git's rules) decides, for every pair and triple of patterns."""
    import itertools

    import pathspec

    for patterns in itertools.combinations(PATTERNS, size):
        ours = app_layer._matcher(patterns)
        theirs = pathspec.GitIgnoreSpec.from_lines(patterns).match_file
        assert [ours(path) for path in PATHS] == [theirs(path) for path in PATHS], patterns


def test_plain_patterns_need_no_pathspec():
    code = ("import sys\nfrom imagebuild.build.layers.app import _matcher\n"
            "assert _matcher(('tests/', 'docs', 'web/static/', '.env'))('a/tests/b')\n"
            "print('pathspec' in sys.modules, end=' ')\n_matcher(('*.md',))\nprint('pathspec' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
