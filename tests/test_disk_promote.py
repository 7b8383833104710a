"""The disk travels with its image: `bake --format disk --push` puts it beside the image in the
registry (VERSION-disk, subject the image), and `promote` carries it to ENV-disk, in a registry
and in the local store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from imagebuild.registry.client import RegistryClient
from tests.bake_support import bake, base_for, example_repo, seed
from tests.conftest import imagebuild

pytestmark = pytest.mark.integration


def _manifest(host: str, repository: str, tag: str) -> tuple[str, dict] | None:
    with RegistryClient(host, insecure=True) as client:
        found = client.get_manifest(repository, tag)
    return (str(found.digest), json.loads(found.raw)) if found else None


def test_bake_pushes_the_disk_and_promote_carries_it(registry, tmp_path, tmp_path_factory):
    home = f"{registry}/disk-{uuid.uuid4().hex[:10]}"

    def with_registry(repo: Path):
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text() + f"registry: {home}\n")

    base = base_for("flask-hello", tmp_path_factory)
    repo = example_repo(tmp_path, "flask-hello", lock=base.lock_path, prepare=with_registry)
    store = seed(tmp_path / "store", base)
    done = bake(repo, store.root, "--format", "disk", "--push", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    version, disk = result["version"], result["disk"]
    repository = home.split("/", 1)[1] + "/flask-hello"

    digest, pushed = _manifest(registry, repository, f"{version}-disk")
    assert digest == disk["digest"]
    assert pushed["artifactType"] == "application/vnd.imagebuild.disk.v1"
    assert pushed["subject"]["digest"] == result["digest"]

    recipe = repo / "imagebuild.yaml"
    for environment in ("dev", "test"):
        done = imagebuild("promote", version, "--to", environment, "--recipe", recipe, "--store", store.root,
                          "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["disk"] == disk["digest"]
        assert _manifest(registry, repository, environment)[0] == result["digest"]
        assert _manifest(registry, repository, f"{environment}-disk")[0] == disk["digest"]
    assert _manifest(registry, repository, "prod-disk") is None
