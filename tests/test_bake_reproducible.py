"""Same commit and lock, same image digest: from empty stores, from warm caches, from another clone."""

from __future__ import annotations

import json

import pytest

from tests.bake_support import FIRST_COMMIT_TIME, bake, bake_json, cached_flags, commit_all, example_repo, git, seed
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def flask_repo(tmp_path, debian_python_base):  # noqa: F811
    return example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)


def digests(result: dict) -> list[str]:
    return [layer["digest"] for layer in result["layers"]]


def test_two_clean_bakes_of_one_commit_give_the_same_digest(flask_repo, tmp_path, debian_python_base):  # noqa: F811
    first = bake_json(flask_repo, tmp_path / "empty-1")
    second = bake_json(flask_repo, tmp_path / "empty-2")
    assert not any(cached_flags(first).values()) and not any(cached_flags(second).values())
    assert digests(first) == digests(second)
    assert first["digest"] == second["digest"]
    # and the warm path (OS layers from the shared cache) lands on the same bytes
    warm = bake_json(flask_repo, seed(tmp_path / "warm", debian_python_base).root)
    assert warm["digest"] == first["digest"]


def test_a_bake_reusing_cached_layers_equals_a_fresh_bake_of_the_same_commit(flask_repo, tmp_path,
                                                                              debian_python_base):  # noqa: F811
    warm = seed(tmp_path / "warm", debian_python_base)
    bake_json(flask_repo, warm.root)
    hello = flask_repo / "hello.py"
    hello.write_text(hello.read_text() + "\n# second commit\n")
    commit_all(flask_repo, "app change", FIRST_COMMIT_TIME + 86400)
    reused = bake_json(flask_repo, warm.root)
    assert cached_flags(reused)["server"] and cached_flags(reused)["libraries"]
    fresh = bake_json(flask_repo, seed(tmp_path / "fresh", debian_python_base).root)
    assert not cached_flags(fresh)["server"]
    assert fresh["digest"] == reused["digest"]


def test_another_clone_in_another_place_gives_the_same_digest(flask_repo, tmp_path, debian_python_base):  # noqa: F811
    origin = "https://git.example.test/acme/flask-hello.git"
    git(flask_repo, "remote", "add", "origin", origin)
    here = bake_json(flask_repo, seed(tmp_path / "one", debian_python_base).root)
    clone = tmp_path / "elsewhere" / "deeper" / "clone"
    git(tmp_path, "clone", "-q", str(flask_repo), str(clone))
    git(clone, "remote", "set-url", "origin", origin)
    there = bake_json(clone, seed(tmp_path / "two", debian_python_base).root)
    assert digests(there) == digests(here)
    assert there["digest"] == here["digest"]


def test_the_lock_rebakes_the_same_libraries_layer_another_day_without_pip_cache(flask_repo, tmp_path,
                                                                                 debian_python_base):  # noqa: F811
    """The libraries layer comes from the locked closure alone: not from pip's cache, not from the day."""
    first = bake_json(flask_repo, seed(tmp_path / "one", debian_python_base).root)
    hello = flask_repo / "hello.py"
    hello.write_text(hello.read_text() + "\n# a week later\n")
    commit_all(flask_repo, "app change", FIRST_COMMIT_TIME + 7 * 86400)
    done = bake(flask_repo, seed(tmp_path / "two", debian_python_base).root, "--json",
                env={"PIP_CACHE_DIR": str(tmp_path / "empty-pip-cache")})
    assert done.returncode == 0, done.stderr
    later = json.loads(done.stdout)
    assert not cached_flags(later)["libraries"]
    assert layer_digest(first, "libraries") == layer_digest(later, "libraries")


def layer_digest(result: dict, name: str) -> str:
    return next(layer["digest"] for layer in result["layers"] if layer["name"] == name)
