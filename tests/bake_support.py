"""Helpers for the bake tests: example apps in temp git repos, stores seeded with a cached
Debian base, the real CLI, and containers probed over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from imagebuild.build.cache import LayerCache
from imagebuild.sources.lockfile import LOCK_NAME, read_lock, write_lock
from imagebuild.recipe.loader import load_recipe
from imagebuild.stores.layout import LayoutStore
from tests.conftest import REPO_ROOT, imagebuild
from tests.debian_fixtures import DebianBase, _cache_dir, build_cached_base

EXAMPLES = REPO_ROOT / "examples"
GIT_ENV = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.test",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.test",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
FIRST_COMMIT_TIME = 1_750_000_000


def git(repo: Path, *args: str, when: int | None = None) -> str:
    env = dict(os.environ, **GIT_ENV)
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit_all(repo: Path, message: str, when: int, force: tuple[str, ...] = ()) -> str:
    git(repo, "add", "-A")
    if force:
        git(repo, "add", "-f", *force)
    git(repo, "commit", "-q", "-m", message, when=when)
    return git(repo, "rev-parse", "HEAD")


def example_repo(tmp_path: Path, example: str, lock: Path | None = None, prepare=None) -> Path:
    """A copy of examples/<example> committed in a fresh git repository (with the lock, when given)."""
    repo = tmp_path / example
    shutil.copytree(EXAMPLES / example, repo, ignore=shutil.ignore_patterns("__pycache__"))
    if lock is not None:
        with_closure(lock, EXAMPLES / example / LOCK_NAME, repo / LOCK_NAME)
    git(repo, "init", "-q", "-b", "main")
    force = prepare(repo) if prepare else ()
    commit_all(repo, "first", FIRST_COMMIT_TIME, force=tuple(force or ()))
    return repo


def with_closure(debian_lock: Path, example_lock: Path, target: Path) -> None:
    """The Debian pins the test base was built from, with the example's committed Python closure."""
    lock, example = read_lock(debian_lock), read_lock(example_lock)
    assert lock is not None
    if example is not None and example.python is not None:
        lock = replace(lock, python=example.python)
    write_lock(target, lock)


def seed(store_path: Path, base: DebianBase) -> LayoutStore:
    """A store holding the cached OS and runtime layers under their cache keys."""
    store = LayoutStore(store_path)
    base.copy_into(store)
    cache = LayerCache(store)
    cache.put(base.layers.os_key, base.layers.os)
    if base.layers.runtime is not None:
        cache.put(base.layers.runtime_key, base.layers.runtime)
    return store


def base_for(example: str, tmp_path_factory) -> DebianBase:
    """The Debian layers an example's recipe asks for, built once and kept across sessions
    (like tests/debian_fixtures.py, whose cache it shares; IMAGEBUILD_TEST_FRESH=1 ignores it)."""
    recipe = load_recipe(EXAMPLES / example)
    if os.environ.get("IMAGEBUILD_TEST_FRESH"):
        root = tmp_path_factory.mktemp(f"debian-{example}")
    else:
        root = _cache_dir(recipe.os, recipe.runtime)
    return build_cached_base(root, recipe.os, recipe.runtime)


def bake(repo: Path, store: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return imagebuild("bake", repo, "--store", store, *args, env=env)


def bake_json(repo: Path, store: Path, *args: str) -> dict:
    done = bake(repo, store, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cached_flags(result: dict) -> dict[str, bool]:
    return {layer["name"]: layer["cached"] for layer in result["layers"]}


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_http(url: str, container, attempts: int = 120) -> tuple[int, bytes]:
    """Poll until the server answers (bounded); fail with the container's log if it never does."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return http_get(url)
        except OSError as exc:
            last = exc
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered ({last}); log:\n{container.logs().decode(errors='replace')}")


def wait_for_health(container, attempts: int = 120) -> str:
    """Docker's own verdict from the image's Healthcheck (bounded wait)."""
    status = "none"
    for _ in range(attempts):
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status in ("healthy", "unhealthy"):
            return status
        time.sleep(0.5)
    return status


def published_port(container, port: int) -> int:
    for _ in range(20):
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp")
        if bindings:
            return int(bindings[0]["HostPort"])
        time.sleep(0.25)
    raise AssertionError(f"port {port} was never published; log:\n{container.logs().decode(errors='replace')}")
