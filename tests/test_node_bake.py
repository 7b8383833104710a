"""A Node image: npm ci of the committed package-lock.json is its libraries layer, the same bytes
from two clean bakes, with nothing of npm's cache or logs in it."""

from __future__ import annotations

import gzip
import json
import tarfile

import pytest

from tests.bake_support import bake, bake_json, base_for, example_repo, seed

pytestmark = pytest.mark.integration


def layer_names(store_root, digest: str) -> list[str]:
    algorithm, hex_digest = digest.split(":")
    with gzip.open(store_root / "blobs" / algorithm / hex_digest) as stream, tarfile.open(fileobj=stream) as tar:
        return tar.getnames()


def test_two_clean_node_bakes_give_the_same_digest(tmp_path, tmp_path_factory):
    base = base_for("node-hello", tmp_path_factory)
    repo = example_repo(tmp_path, "node-hello", lock=base.lock_path)
    first = bake_json(repo, seed(tmp_path / "one", base).root)
    second = bake_json(repo, seed(tmp_path / "two", base).root)
    assert first["digest"] == second["digest"]
    layers = {layer["name"]: layer for layer in first["layers"]}
    assert list(layers) == ["os", "runtime", "libraries", "server", "app", "config"]
    assert not layers["libraries"]["cached"]

    names = layer_names(tmp_path / "one", layers["libraries"]["digest"])
    assert "app/node_modules/ms/index.js" in names and "app/node_modules/ms/package.json" in names
    assert not [name for name in names if "_cacache" in name or name.endswith(".log") or "/.npm" in name]
    assert all(name == "app" or name.startswith("app/node_modules") for name in names), names


def test_a_tarball_that_does_not_match_its_integrity_hash_is_refused(tmp_path, tmp_path_factory):
    base = base_for("node-hello", tmp_path_factory)

    def tamper(repo):
        lock = repo / "package-lock.json"
        data = json.loads(lock.read_text())
        # the sha512 of nothing: a valid hash that no tarball of ms matches
        data["packages"]["node_modules/ms"]["integrity"] = (
            "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==")
        lock.write_text(json.dumps(data, indent=2) + "\n")

    repo = example_repo(tmp_path, "node-hello", lock=base.lock_path, prepare=tamper)
    store = seed(tmp_path / "store", base)
    done = bake(repo, store.root)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: libraries: a package does not match its integrity hash in package-lock.json"), last
    assert "restore package-lock.json from git" in last
