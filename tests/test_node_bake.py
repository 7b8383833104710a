"""A Node image: npm ci of the committed package-lock.json is its libraries layer, the same bytes
from two clean bakes, with nothing of npm's cache or logs in it."""

from __future__ import annotations

import gzip
import tarfile

import pytest

from tests.bake_support import bake_json, base_for, example_repo, seed

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
