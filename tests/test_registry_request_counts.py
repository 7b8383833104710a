"""How many requests a warm push of an app-only commit sends, counted by kind through the loopback proxy.

Pinned exactly, not timed: a request added to the push path (a referrers probe per attachment, a
re-read of a manifest just written, a layer cache entry rewritten unchanged) fails here."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.bake_support import FIRST_COMMIT_TIME, bake, commit_all, example_repo, seed
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.registry_support.proxy import FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


def app(tmp_path: Path, proxy: FaultProxy, base) -> tuple[Path, str]:
    name = f"requests-{uuid.uuid4().hex[:10]}/hello"

    def registry(repo: Path) -> None:
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("name: flask-hello",
                                                     f"name: {name}\nregistry: {proxy.address}"))
    return example_repo(tmp_path, "flask-hello", lock=base.lock_path, prepare=registry), name


def app_only_commit(repo: Path, minutes: int) -> None:
    source = repo / "hello.py"
    source.write_text(source.read_text() + f"\n# an app-only change {minutes}\n")
    commit_all(repo, "app only", FIRST_COMMIT_TIME + 60 * minutes)


def kinds(proxy: FaultProxy) -> Counter:
    """Each request as METHOD and what it names: a blob, an upload, a manifest by digest or tag, a
    layer cache entry, the referrers tag index, the referrers API."""
    def kind(method: str, path: str) -> str:
        path = path.split("?")[0]
        if "/referrers/" in path:
            return f"{method} referrers-api"
        if "/blobs/uploads/" in path:
            return f"{method} upload"
        if "/blobs/" in path:
            return f"{method} blob"
        if "/manifests/" in path:
            reference = path.rsplit("/", 1)[-1]
            if reference.startswith("cache-"):
                return f"{method} cache-entry"
            if re.fullmatch(r"sha256-[0-9a-f]{64}", reference):
                return f"{method} referrers-tag"
            return f"{method} manifest"
        return f"{method} {path}"
    return Counter(kind(exchange.method, exchange.path) for exchange in proxy.log.exchanges)


def bake_json(repo: Path, store: Path, env: dict, *args: str) -> dict:
    done = bake(repo, store, "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_warm_bake_push_and_a_push_of_an_app_only_commit_send_few_requests(proxy, tmp_path,
                                                                             debian_python_base):  # noqa: F811
    repo, name = app(tmp_path, proxy, debian_python_base)
    store = seed(tmp_path / "store", debian_python_base).root
    env = {"XDG_CACHE_HOME": str(tmp_path / "home" / ".cache"), "HOME": str(tmp_path / "home"), "CI": "1"}
    bake_json(repo, store, env, "--push")

    app_only_commit(repo, 2)
    proxy.log.clear()
    bake_json(repo, store, env, "--push")
    counted = kinds(proxy)
    print("bake --push:", sum(counted.values()), dict(sorted(counted.items())))
    # The image: its blobs checked, the app layer and config uploaded, its manifest. Its two SBOMs: their
    # payloads checked and uploaded, the empty config checked once, their manifests, the referrers API
    # asked once (this registry has none), the referrers tag read and written once for both. The layer
    # cache: the app layer looked up (a miss), its entry and only it written, the empty blob checked.
    assert dict(counted) == {
        "GET /v2/": 1, "HEAD blob": 7 + 3 + 1, "POST upload": 2 + 2, "PUT upload": 2 + 2, "PUT manifest": 1 + 2,
        "GET referrers-api": 1, "GET referrers-tag": 1, "PUT referrers-tag": 1,
        "GET cache-entry": 1, "PUT cache-entry": 1}, sorted(counted.items())
    assert sum(counted.values()) <= 28     # 39 before each kind above was counted

    app_only_commit(repo, 4)
    baked = bake_json(repo, store, env)
    proxy.log.clear()
    pushed = imagebuild("push", f"{name}:{baked['version']}", "--to", f"{proxy.address}/{name}", "--store", store,
                        env=env)
    assert pushed.returncode == 0, pushed.stderr
    counted = kinds(proxy)
    print("push:", sum(counted.values()), dict(sorted(counted.items())))
    assert dict(counted) == {
        "HEAD blob": 7 + 3, "POST upload": 2 + 2, "PUT upload": 2 + 2, "PUT manifest": 1 + 2,
        "GET referrers-api": 1, "GET referrers-tag": 1, "PUT referrers-tag": 1}, sorted(counted.items())
    assert sum(counted.values()) <= 24     # 37 before
