"""The registry as the shared layer cache: CI runners that start with an empty store and home.

Each "runner" is a fresh store and XDG_CACHE_HOME; the registry (behind the counting proxy)
is all they share. The second runner's Debian mirror, PyPI and mmdebstrap are made
unusable, so a layer it had to build from them would fail the bake.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from imagebuild.build.remote_cache import entry_manifest, parse_entry
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult
from imagebuild.publish.export import export_image
from imagebuild.registry.client import RegistryClient
from imagebuild.sources.lockfile import LOCK_NAME, dumps, read_lock, write_lock
from imagebuild.stores.layout import LayoutStore
from tests.bake_support import FIRST_COMMIT_TIME, bake, cached_flags, commit_all, example_repo, seed
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.registry_support.proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


@pytest.fixture
def app(tmp_path, proxy, debian_python_base):  # noqa: F811
    """flask-hello in a git repo, pushing to a fresh repository through the proxy."""
    name = f"cache-{uuid.uuid4().hex[:10]}/hello"

    def registry(repo: Path) -> None:
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("name: flask-hello",
                                                     f"name: {name}\nregistry: {proxy.address}"))
    repo = example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path, prepare=registry)
    return repo, name


def runner(tmp_path: Path, label: str, offline: bool = False) -> dict[str, str]:
    """A fresh home; `offline`: no Debian mirror, no PyPI, and an mmdebstrap that records being run."""
    home = tmp_path / f"home-{label}"
    env = {"XDG_CACHE_HOME": str(home / ".cache"), "HOME": str(home), "CI": "1"}
    if offline:
        # The tools answer --version as ever (the Debian layers' keys name mmdebstrap's version);
        # any other use records itself and fails.
        shims = tmp_path / f"shims-{label}"
        shims.mkdir(parents=True)
        for tool in ("mmdebstrap", "apt-get"):
            real = shutil.which(tool)
            shim = shims / tool
            shim.write_text(f'#!/bin/sh\nif [ "$1" = --version ]; then exec {real} "$@"; fi\n'
                            f"touch {shims}/{tool}.ran\nexit 1\n")
            shim.chmod(0o755)
        unreachable = "http://127.0.0.1:1"
        env.update({"PATH": f"{shims}:{os.environ['PATH']}", "http_proxy": unreachable, "https_proxy": unreachable,
                    "HTTP_PROXY": unreachable, "HTTPS_PROXY": unreachable, "no_proxy": "127.0.0.1,localhost",
                    "NO_PROXY": "127.0.0.1,localhost", "PIP_INDEX_URL": f"{unreachable}/simple"})
    return env


def baked(repo: Path, store: Path, env: dict[str, str], *args: str) -> tuple[dict, str]:
    done = bake(repo, store, "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def app_only_commit(repo: Path) -> None:
    source = repo / "hello.py"
    source.write_text(source.read_text() + "\n# an app-only change\n")
    commit_all(repo, "app only", FIRST_COMMIT_TIME + 120)


def test_a_fresh_runner_builds_only_the_changed_layer_and_gets_the_warm_digest(app, proxy, tmp_path,
                                                                               debian_python_base):  # noqa: F811
    repo, name = app
    first, _ = baked(repo, seed(tmp_path / "store-1", debian_python_base).root, runner(tmp_path, "1"), "--push")
    pushed = {layer["digest"] for layer in first["layers"]}
    app_only_commit(repo)

    proxy.log.clear()
    env = runner(tmp_path, "2", offline=True)
    second, stderr = baked(repo, tmp_path / "store-2", env, "--push")
    assert cached_flags(second) == {"os": True, "runtime": True, "libraries": True, "server": True,
                                    "app": False, "config": True}, stderr
    assert not list((tmp_path / "shims-2").glob("*.ran")), "the Debian tools were run"
    # Nothing unchanged travelled: no blob was read, and only the app layer and the config went up.
    assert proxy.log.matching("GET", "/blobs/") == []
    uploaded = {exchange.path.rsplit("digest=", 1)[-1].split("&")[0]
                for exchange in proxy.log.blob_uploads() if "digest=" in exchange.path}
    app_layer = next(layer for layer in second["layers"] if layer["name"] == "app")
    assert app_layer["digest"] in {item.replace("%3A", ":") for item in uploaded}
    assert not pushed & {item.replace("%3A", ":") for item in uploaded}
    blob_bytes = sum(exchange.sent for exchange in proxy.log.exchanges if "/blobs/uploads/" in exchange.path)
    # the new image's SBOMs go up with it (written from the lock: the lent os layer was not fetched for them)
    sboms = sum(len(imagebuild("sbom", second["image"], "--store", tmp_path / "store-2", "--format", form).stdout)
                for form in ("spdx", "cyclonedx"))
    assert blob_bytes < app_layer["size"] + sboms + 64 * 1024
    assert second["warnings"] == []

    # The same digest as a warm local bake of the same commit.
    warm, _ = baked(repo, tmp_path / "store-1", runner(tmp_path, "1"))
    assert warm["digest"] == second["digest"]
    # The store of the second runner holds the image, but not the layers the registry lent it.
    store = LayoutStore(tmp_path / "store-2")
    assert store.resolve(f"{name}:{second['version']}").digest == second["digest"]
    assert not store.has_blob(Digest(next(layer["digest"] for layer in second["layers"] if layer["name"] == "os")))
    # An export fetches them from where the store remembers they lie, verified.
    export_image(store, f"{name}:{second['version']}", f"oci:{tmp_path / 'exported'}")
    assert all(store.has_blob(Digest(layer["digest"])) for layer in second["layers"])


def test_a_lock_committed_before_it_kept_package_records_is_completed_and_then_no_blob_travels(
        app, proxy, tmp_path, debian_python_base):  # noqa: F811
    """A user's lock from before locks kept dpkg's records: a fresh runner's SBOM reads the base layers
    the registry lent (one warning naming the fix); `imagebuild lock` adds the records with every pin as
    it was (real mmdebstrap), and with that lock committed the next fresh runner reads no blob at all."""
    repo, _ = app
    complete = read_lock(repo / LOCK_NAME)
    old = replace(complete, packages={}, os_release={})
    write_lock(repo / LOCK_NAME, old)
    commit_all(repo, "a lock from before the records", FIRST_COMMIT_TIME + 60)
    baked(repo, seed(tmp_path / "store-1", debian_python_base).root, runner(tmp_path, "1"), "--push")
    app_only_commit(repo)

    proxy.log.clear()
    second, stderr = baked(repo, tmp_path / "store-2", runner(tmp_path, "2", offline=True), "--push")
    assert cached_flags(second)["os"] and cached_flags(second)["runtime"], stderr
    assert [line for line in stderr.splitlines() if "no package records" in line] == [
        "warning: imagebuild.lock has no package records, so the SBOM downloads the base layers the registry's "
        "cache lent; run `imagebuild lock` and commit it"]
    assert proxy.log.matching("GET", "/blobs/") != []     # the cost the records save

    done = imagebuild("lock", "--check", repo)
    assert done.returncode == 2 and "has no package records" in done.stderr, done.stderr
    done = imagebuild("lock", repo)
    assert done.returncode == 0, done.stderr
    filled = read_lock(repo / LOCK_NAME)
    # every pin, the closure and the epoch as they were: only the records are new
    assert replace(filled, packages={}, os_release={}).to_dict() == old.to_dict()
    assert filled.packages == complete.packages and filled.os_release == complete.os_release
    # and in the file, lines added, none changed or removed
    edits = difflib.SequenceMatcher(None, dumps(old).splitlines(), dumps(filled).splitlines(), autojunk=False)
    assert {tag for tag, *_ in edits.get_opcodes()} == {"equal", "insert"}
    assert imagebuild("lock", "--check", repo).returncode == 0
    commit_all(repo, "the lock with its records", FIRST_COMMIT_TIME + 180)

    proxy.log.clear()
    third, stderr = baked(repo, tmp_path / "store-3", runner(tmp_path, "3", offline=True), "--push")
    assert cached_flags(third)["os"] and cached_flags(third)["runtime"] and cached_flags(third)["libraries"], stderr
    assert not list((tmp_path / "shims-3").glob("*.ran")), "the Debian tools were run"
    assert proxy.log.matching("GET", "/blobs/") == []
    assert "no package records" not in stderr and third["warnings"] == []


def test_entries_whose_blob_is_gone_or_of_another_size_are_rebuilt_and_outputs_fetch_the_rest(
        app, proxy, tmp_path, debian_python_base):  # noqa: F811
    repo, name = app
    first, _ = baked(repo, seed(tmp_path / "store-1", debian_python_base).root, runner(tmp_path, "1"), "--push")
    cache_repository = f"{name}-cache"
    by_name = {layer["name"]: layer for layer in first["layers"]}
    with RegistryClient(proxy.address) as client:
        for tag in client.list_tags(cache_repository):
            key = tag.removeprefix("cache-")
            entry = parse_entry(client.get_manifest(cache_repository, tag).raw, key)
            digest = str(entry.result.digest)
            if digest == by_name["libraries"]["digest"]:      # its blob is gone
                gone = LayerResult(entry.result.diff_id, Digest.of(b"gone"), 4, 4, entry.result.media_type)
                client.put_manifest(cache_repository, tag, entry_manifest(key, name, gone), mt.OCI_MANIFEST)
            elif digest == by_name["server"]["digest"]:       # says a size its blob does not have
                wrong = LayerResult(entry.result.diff_id, entry.result.digest, entry.result.size + 1,
                                    entry.result.uncompressed_size, entry.result.media_type)
                client.put_manifest(cache_repository, tag, entry_manifest(key, name, wrong), mt.OCI_MANIFEST)

    env = runner(tmp_path, "2")
    out = tmp_path / "oci-out"
    second, _ = baked(repo, tmp_path / "store-2", env, "--cache-from", f"{proxy.address}/{cache_repository}",
                      "--output", f"oci:{out}")
    flags = cached_flags(second)
    assert (flags["libraries"], flags["server"]) == (False, False)
    assert (flags["os"], flags["runtime"], flags["app"], flags["config"]) == (True, True, True, True)
    assert second["digest"] == first["digest"]
    # The oci: output needed every layer's bytes: the lent ones were fetched and verified.
    for layer in second["layers"]:
        algorithm, hex_digest = layer["digest"].split(":")
        assert (out / "blobs" / algorithm / hex_digest).stat().st_size == layer["size"]


def test_a_refused_cache_entry_is_a_warning_and_the_push_succeeds(app, proxy, tmp_path,
                                                                 debian_python_base):  # noqa: F811
    repo, name = app
    proxy.add_fault(Fault("PUT", r"-cache/manifests/cache-", "500", times=0))
    done = bake(repo, seed(tmp_path / "store", debian_python_base).root, "--json", "--push",
                env=runner(tmp_path, "1"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert any("layer cache" in line for line in result["warnings"])
    assert "warning: the layer cache" in done.stderr
    with RegistryClient(proxy.address) as client:
        assert client.head_manifest(name, result["version"]) == result["digest"]


def test_an_unreachable_cache_is_a_warning_and_a_local_build(app, tmp_path, debian_python_base):  # noqa: F811
    repo, _ = app
    app_only_commit(repo)
    result, stderr = baked(repo, seed(tmp_path / "store", debian_python_base).root, runner(tmp_path, "1"),
                           "--cache-from", "127.0.0.1:1/nowhere/cache")
    assert cached_flags(result)["app"] is False
    assert any("could not be read" in line for line in result["warnings"]), stderr


def test_layers_cached_for_another_repository_are_mounted_not_uploaded(app, proxy, tmp_path,
                                                                      debian_python_base):  # noqa: F811
    repo, name = app
    baked(repo, seed(tmp_path / "store-1", debian_python_base).root, runner(tmp_path, "1"), "--push")
    other = f"{name}-other"
    recipe = repo / "imagebuild.yaml"
    recipe.write_text(recipe.read_text().replace(f"name: {name}", f"name: {other}"))
    commit_all(repo, "another image", FIRST_COMMIT_TIME + 240)

    proxy.log.clear()
    # The recipe changed, so the server layer is rebuilt (from PyPI, reading the OS layer's accounts).
    second, stderr = baked(repo, tmp_path / "store-2", runner(tmp_path, "2"), "--push",
                           "--cache-from", f"{proxy.address}/{name}-cache")
    flags = cached_flags(second)
    assert (flags["os"], flags["runtime"], flags["libraries"]) == (True, True, True), stderr
    lent = {layer["digest"] for layer in second["layers"] if layer["name"] in ("os", "runtime", "libraries")}
    uploaded = {exchange.path for exchange in proxy.log.blob_uploads() if "mount=" not in exchange.path}
    assert not [path for path in uploaded if any(digest.split(":")[1] in path for digest in lent)]
    mounted = {exchange.path for exchange in proxy.log.matching("POST", f"/v2/{other}/blobs/uploads/")
               if "mount=" in exchange.path and exchange.status == 201}
    assert len(mounted) >= 3
    with RegistryClient(proxy.address) as client:
        for layer in second["layers"]:
            assert client.blob_exists(other, layer["digest"])
        # The new image's own cache now lists its layers too.
        assert len(client.list_tags(f"{other}-cache")) == len(second["layers"])
