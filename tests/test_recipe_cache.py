"""The recipe cache (recipe/cache.py): an unchanged recipe comes back from it equal to a fresh load,
and anything that could change the load (the recipe's bytes, a file it names, the stock recipe it
extends, a link, the entry itself) makes it load afresh."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError
from imagebuild.recipe import cache
from imagebuild.recipe.cache import load_recipe_cached

FULL = """\
name: hello
registry: localhost:5000/acme
server:
  kind: gunicorn
  app: hello:app
  options: {timeout: "60"}
runtime: {python: "3.11"}
libraries: {requirements: requirements.txt}
os: {packages: [ca-certificates]}
environments:
  - name: dev
    config: {LOG_LEVEL: debug, RETRIES: 3}
    features: {new_checkout: true}
  - name: prod
    secrets: [DATABASE_URL]
    policy:
      signed_by: [keys/release.pub]
"""


@pytest.fixture
def app(tmp_path) -> Path:
    root = tmp_path / "app"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "release.pub").write_text("a key\n")
    (root / "requirements.txt").write_text("flask==3.1.3\n")
    (root / "imagebuild.yaml").write_text(FULL)
    return root


class Loads:
    """Counts the loads that went past the cache."""

    def __init__(self, monkeypatch):
        import imagebuild.recipe.loader as loader

        self.count = 0
        real = loader.load_recipe_with_inputs

        def counting(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(loader, "load_recipe_with_inputs", counting)
        self.fresh = lambda path: real(path)[0]      # a load past the cache, not counted


@pytest.fixture
def loads(monkeypatch) -> Loads:
    return Loads(monkeypatch)


def entry_of(cache_dir: Path) -> Path:
    entries = list(cache_dir.iterdir())
    assert len(entries) == 1, entries
    return entries[0]


def test_a_hit_gives_a_recipe_equal_to_a_fresh_load(app, tmp_path, loads):
    cache_dir = tmp_path / "cache"
    first = load_recipe_cached(app / "imagebuild.yaml", cache_dir)
    again = load_recipe_cached(app / "imagebuild.yaml", cache_dir)
    assert loads.count == 1
    assert again == first == loads.fresh(app / "imagebuild.yaml")
    assert again.source == app / "imagebuild.yaml" and again.stock_dir is None
    assert again.environment("dev").config == {"LOG_LEVEL": "debug", "RETRIES": "3"}


def test_a_hit_through_the_directory_and_a_relative_path(app, tmp_path, loads, monkeypatch):
    cache_dir = tmp_path / "cache"
    load_recipe_cached(app, cache_dir)
    monkeypatch.chdir(app)
    again = load_recipe_cached(Path("imagebuild.yaml"), cache_dir)
    assert loads.count == 1
    assert again == loads.fresh(Path("imagebuild.yaml"))
    assert again.source == Path("imagebuild.yaml")


def test_an_extended_stock_recipe_is_remembered_with_its_directory(tmp_path, loads, monkeypatch):
    stock = tmp_path / "stock" / "base"
    stock.mkdir(parents=True)
    (stock / "imagebuild.yaml").write_text("runtime:\n  python: '3.11'\nserver:\n  kind: gunicorn\n")
    monkeypatch.setenv("IMAGEBUILD_RECIPES", str(tmp_path / "stock"))
    (tmp_path / "imagebuild.yaml").write_text("name: hello\nextends: base\nserver:\n  app: a:b\n")
    cache_dir = tmp_path / "cache"
    first = load_recipe_cached(tmp_path, cache_dir)
    assert load_recipe_cached(tmp_path, cache_dir) == first and loads.count == 1
    assert first.stock_dir == stock
    # The stock recipe changes: loaded afresh.
    (stock / "imagebuild.yaml").write_text("runtime:\n  python: '3.12'\nserver:\n  kind: gunicorn\n")
    assert load_recipe_cached(tmp_path, cache_dir).runtime.python == "3.12"
    assert loads.count == 2


@pytest.mark.parametrize("change", ["recipe", "requirements", "key file removed", "link", "code", "parser"])
def test_a_change_loads_afresh(app, tmp_path, loads, change, monkeypatch):
    cache_dir = tmp_path / "cache"
    load_recipe_cached(app, cache_dir)
    if change == "recipe":
        (app / "imagebuild.yaml").write_text(FULL.replace("LOG_LEVEL: debug", "LOG_LEVEL: info"))
    elif change == "requirements":
        # The same size, and the same mtime put back: the inode's ctime still tells.
        before = os.stat(app / "requirements.txt")
        (app / "requirements.txt").write_text("flask>=3.1.3\n")
        os.utime(app / "requirements.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "key file removed":
        (app / "keys" / "release.pub").unlink()
    elif change == "link":
        # keys/ becomes a link to another directory with an equal file: the real path differs.
        (app / "other").mkdir()
        (app / "other" / "release.pub").write_text("a key\n")
        (app / "keys" / "release.pub").unlink()
        (app / "keys").rmdir()
        (app / "keys").symlink_to("other")
    elif change == "code":
        monkeypatch.setattr(cache, "_CODE_ELSEWHERE", cache._CODE_ELSEWHERE + ("atomic.py",))
    elif change == "parser":
        # Another PyYAML: its package file is another one.
        entry = entry_of(cache_dir)
        data = json.loads(entry.read_text())
        data["body"]["parser"][1] = ["file", 1, 2, 3, 4, 5]
        body = json.dumps(data["body"], sort_keys=True, separators=(",", ":"))
        data["sha256"] = hashlib.sha256(body.encode()).hexdigest()
        entry.write_text(json.dumps(data))
    if change == "requirements":
        with pytest.raises(RecipeError, match="not pinned"):
            load_recipe_cached(app, cache_dir)
    elif change == "key file removed":
        with pytest.raises(RecipeError, match="is not a file next to the recipe"):
            load_recipe_cached(app, cache_dir)
    else:
        loaded = load_recipe_cached(app, cache_dir)
        assert loaded == loads.fresh(app)
    assert loads.count == 2


@pytest.mark.parametrize("damage", ["truncated", "not json", "a value edited", "a foreign type", "empty"])
def test_a_damaged_entry_is_ignored_and_written_anew(app, tmp_path, loads, damage):
    cache_dir = tmp_path / "cache"
    fresh = load_recipe_cached(app, cache_dir)
    entry = entry_of(cache_dir)
    good = entry.read_text()
    if damage == "truncated":
        entry.write_text(good[: len(good) // 2])
    elif damage == "not json":
        entry.write_bytes(b"\xff\x00" * 10)
    elif damage == "a value edited":
        entry.write_text(good.replace('"LOG_LEVEL":"debug"', '"LOG_LEVEL":"trace"').replace(
            '"LOG_LEVEL": "debug"', '"LOG_LEVEL": "trace"'))
        assert entry.read_text() != good
    elif damage == "a foreign type":
        data = json.loads(good)
        data["body"]["recipe"]["type"] = "Path"
        entry.write_text(json.dumps(data))
    elif damage == "empty":
        entry.write_text("")
    assert load_recipe_cached(app, cache_dir) == fresh
    assert loads.count == 2
    assert json.loads(entry.read_text()) == json.loads(good)        # written anew
    assert load_recipe_cached(app, cache_dir) == fresh and loads.count == 2


@pytest.mark.parametrize("change", ["another owner", "writable by others"])
def test_an_entry_others_could_write_is_not_trusted(app, tmp_path, loads, change):
    """In a store shared with others, an entry is used only when this user wrote it and only this user can change it."""
    cache_dir = tmp_path / "cache"
    load_recipe_cached(app, cache_dir)
    entry = entry_of(cache_dir)
    assert entry.stat().st_mode & 0o777 == 0o600
    if change == "another owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file away")
        os.chown(entry, 12345, -1)
    else:
        entry.chmod(0o622)
    load_recipe_cached(app, cache_dir)
    assert loads.count == 2
    assert entry.stat().st_uid == os.geteuid() and entry.stat().st_mode & 0o777 == 0o600      # written anew
    load_recipe_cached(app, cache_dir)
    assert loads.count == 2


def test_a_template_is_never_remembered(app, tmp_path, loads, monkeypatch):
    monkeypatch.setenv("LEVEL", "debug")
    (app / "imagebuild.yaml").write_text(FULL.replace("LOG_LEVEL: debug", "LOG_LEVEL: {{ env.LEVEL }}"))
    cache_dir = tmp_path / "cache"
    assert load_recipe_cached(app, cache_dir).environment("dev").config["LOG_LEVEL"] == "debug"
    monkeypatch.setenv("LEVEL", "info")
    assert load_recipe_cached(app, cache_dir).environment("dev").config["LOG_LEVEL"] == "info"
    assert loads.count == 2 and not cache_dir.exists()


def test_a_recipe_naming_a_file_outside_its_directory_is_never_remembered(tmp_path, loads):
    """Such a file must lie in the git repository, whose root git tells: not a file the cache can check."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "requirements.txt").write_text("flask==3.1.3\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "imagebuild.yaml").write_text(FULL.replace("requirements.txt", "../requirements.txt")
                                         .replace("      signed_by: [keys/release.pub]\n", "")
                                         .replace("    policy:\n", ""))
    cache_dir = tmp_path / "cache"
    load_recipe_cached(app, cache_dir)
    load_recipe_cached(app, cache_dir)
    assert loads.count == 2 and not cache_dir.exists()


def test_a_bad_recipe_is_never_remembered(app, tmp_path, loads):
    (app / "imagebuild.yaml").write_text(FULL.replace("kind: gunicorn", "kind: gunicron"))
    cache_dir = tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(RecipeError, match="unknown server kind"):
            load_recipe_cached(app, cache_dir)
    assert loads.count == 2 and not cache_dir.exists()


def test_an_unwritable_cache_only_costs_the_load(app, tmp_path, loads):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert load_recipe_cached(app, blocked / "cache") == loads.fresh(app)
    assert loads.count == 1


def test_status_remembers_the_recipe_in_its_store_and_answers_the_same(app, tmp_path):
    from conftest import imagebuild
    from imagebuild.stores.layout import RECIPE_CACHE_DIR, LayoutStore

    missing = tmp_path / "no-store"
    first = imagebuild("status", "--store", missing, cwd=app)
    assert first.returncode == 0, first.stderr
    assert not (missing / RECIPE_CACHE_DIR).exists()          # the cache makes no store
    store = LayoutStore(tmp_path / "store").ensure()
    answers = [imagebuild("status", "--store", store.root, "--json", cwd=app) for _ in range(2)]
    assert [a.returncode for a in answers] == [0, 0], answers[0].stderr
    assert answers[0].stdout == answers[1].stdout
    assert len(list((store.root / RECIPE_CACHE_DIR).iterdir())) == 1
