"""Bake through the real CLI: caching per layer, versions and annotations, dirty trees, outputs, push."""

from __future__ import annotations

import json
import uuid

import pytest

from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from tests.bake_support import (FIRST_COMMIT_TIME, bake, bake_json, cached_flags, commit_all, example_repo, git,
                                published_port, seed, wait_for_http)
from tests.conftest import run
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def flask_repo(tmp_path, debian_python_base):  # noqa: F811
    return example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)


@pytest.fixture
def store(tmp_path, debian_python_base):  # noqa: F811
    return seed(tmp_path / "store", debian_python_base)


def manifest_and_config(store: LayoutStore, digest: str):
    manifest = store.read_manifest(digest)
    return manifest, store.read_config(manifest)


def test_json_has_exactly_the_promised_keys_and_names_the_commit(flask_repo, store):
    result = bake_json(flask_repo, store.root)
    assert set(result) == {"image", "digest", "version", "layers", "warnings"}
    short = git(flask_repo, "rev-parse", "--short", "HEAD")
    full = git(flask_repo, "rev-parse", "HEAD")
    assert result["version"] == short
    assert result["image"] == f"flask-hello:{short}"
    assert [layer["name"] for layer in result["layers"]] == ["os", "runtime", "libraries", "server", "app",
                                                             "config"]
    for layer in result["layers"]:
        assert set(layer) == {"name", "digest", "size", "cached"}
    assert store.refs()[result["image"]].digest == result["digest"]

    manifest, config = manifest_and_config(store, result["digest"])
    annotations = manifest.annotations
    assert annotations["org.opencontainers.image.revision"] == full
    assert annotations["org.opencontainers.image.version"] == short
    assert annotations["org.opencontainers.image.created"] == "2025-06-15T15:06:40Z"
    assert config["created"] == "2025-06-15T15:06:40Z"
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == full
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["WorkingDir"] == "/app"
    assert config["config"]["ExposedPorts"] == {"8000/tcp": {}}
    assert config["config"]["Healthcheck"]["Interval"] == 10 * 10**9
    assert f"IMAGEBUILD_REVISION={full}" in config["config"]["Env"]
    assert [layer.digest for layer in manifest.layers] == [layer["digest"] for layer in result["layers"]]


def test_the_source_annotation_keeps_no_part_of_a_password(flask_repo, store):
    # A password holding '@': cut at the first '@', its tail used to reach the image.
    git(flask_repo, "remote", "add", "origin", "https://alice:S3cr3t@Pa55w0rd@host/app.git")
    result = bake_json(flask_repo, store.root)
    manifest, config = manifest_and_config(store, result["digest"])
    assert manifest.annotations["org.opencontainers.image.source"] == "https://host/app.git"
    baked = json.dumps([dict(manifest.annotations), config])
    assert "S3cr3t" not in baked and "Pa55w0rd" not in baked and "alice" not in baked


def test_a_second_bake_of_the_same_commit_builds_nothing(flask_repo, store):
    first = bake_json(flask_repo, store.root)
    second = bake_json(flask_repo, store.root)
    assert all(cached_flags(second).values()), second
    assert second["digest"] == first["digest"]


def test_an_app_only_commit_rebuilds_only_the_app_layer(flask_repo, store):
    first = bake_json(flask_repo, store.root)
    hello = flask_repo / "hello.py"
    hello.write_text(hello.read_text() + "\n# a change to the app only\n")
    commit_all(flask_repo, "app change", FIRST_COMMIT_TIME + 3600)
    second = bake_json(flask_repo, store.root)
    flags = cached_flags(second)
    assert flags == {"os": True, "runtime": True, "libraries": True, "server": True, "app": False,
                     "config": True}, second
    before = {layer["name"]: layer["digest"] for layer in first["layers"]}
    after = {layer["name"]: layer["digest"] for layer in second["layers"]}
    assert {name for name in before if before[name] != after[name]} == {"app"}
    assert second["digest"] != first["digest"]
    assert second["version"] != first["version"]


def test_a_recipe_change_to_an_environment_rebuilds_only_the_config_and_what_the_recipe_dates(flask_repo, store):
    bake_json(flask_repo, store.root)
    recipe = flask_repo / "imagebuild.yaml"
    text = recipe.read_text()
    assert "{LOG_LEVEL: debug}" in text
    recipe.write_text(text.replace("{LOG_LEVEL: debug}", "{LOG_LEVEL: trace}"))
    commit_all(flask_repo, "dev logs more", FIRST_COMMIT_TIME + 7200)
    flags = cached_flags(bake_json(flask_repo, store.root))
    assert flags["os"] and flags["runtime"] and flags["libraries"]
    assert not flags["config"]


def test_the_app_layer_holds_exactly_the_tracked_files_minus_excludes(flask_repo, store):
    (flask_repo / "tests").mkdir()
    (flask_repo / "tests" / "test_hello.py").write_text("def test(): pass\n")
    (flask_repo / "notes.txt").write_text("tracked\n")
    commit_all(flask_repo, "tests and notes", FIRST_COMMIT_TIME + 60)
    (flask_repo / "untracked.txt").write_text("never baked\n")
    result = bake_json(flask_repo, store.root)
    app = next(layer for layer in result["layers"] if layer["name"] == "app")
    listing = run(["tar", "tzf", str(store.blob_path(app["digest"]))]).stdout.split()
    assert sorted(listing) == ["app/", "app/hello.py", "app/imagebuild.lock", "app/imagebuild.yaml",
                               "app/notes.txt", "app/requirements.txt"]


def test_a_dirty_tree_is_refused_naming_the_files(flask_repo, store):
    (flask_repo / "hello.py").write_text("changed\n")
    done = bake(flask_repo, store.root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "hello.py" in done.stderr and "--allow-dirty" in done.stderr


def test_allow_dirty_bakes_the_working_tree_and_marks_the_image(flask_repo, store):
    hello = flask_repo / "hello.py"
    hello.write_text(hello.read_text() + "\n# uncommitted\n")
    result = bake_json(flask_repo, store.root, "--allow-dirty")
    assert result["version"].endswith("-dirty")
    assert result["image"].endswith("-dirty")
    manifest, config = manifest_and_config(store, result["digest"])
    assert manifest.annotations["dev.imagebuild.dirty"] == "true"
    app = next(layer for layer in result["layers"] if layer["name"] == "app")
    content = run(["tar", "xzOf", str(store.blob_path(app["digest"])), "app/hello.py"]).stdout
    assert "# uncommitted" in content


def test_outputs_are_written_and_judged_by_other_tools(flask_repo, store, tmp_path):
    oci_dir = tmp_path / "out-oci"
    archive = tmp_path / "out.tar"
    result = bake_json(flask_repo, store.root, "--output", f"oci:{oci_dir}", "--output", f"docker-archive:{archive}")
    checked = run(["oci-image-tool", "validate", "--type", "image", "--ref", f"name={result['version']}", str(oci_dir)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    inspected = run(["skopeo", "inspect", "--raw", f"oci:{oci_dir}:{result['version']}"])
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["annotations"]["org.opencontainers.image.version"] == result["version"]
    listed = run(["tar", "tf", str(archive)])
    assert "manifest.json" in listed.stdout.split()


def test_push_sends_the_image_to_the_recipe_registry(flask_repo, store, registry):
    repository = f"bake-test-{uuid.uuid4().hex[:8]}"
    recipe = flask_repo / "imagebuild.yaml"
    recipe.write_text(recipe.read_text().replace("name: flask-hello", f"name: {repository}\nregistry: {registry}"))
    commit_all(flask_repo, "registry", FIRST_COMMIT_TIME + 60)
    result = bake_json(flask_repo, store.root, "--push")
    assert result["image"] == f"{registry}/{repository}:{result['version']}"
    with RegistryClient(registry) as client:
        pushed = client.head_manifest(repository, result["version"])
    assert pushed == result["digest"]
    ref = Reference.parse(result["image"])
    assert ref.tag == result["version"]


def test_a_tagged_commit_is_versioned_by_git_describe(flask_repo, store):
    git(flask_repo, "tag", "v1.2.0")
    result = bake_json(flask_repo, store.root)
    assert result["version"] == "v1.2.0"
    assert result["image"] == "flask-hello:v1.2.0"


def test_progress_goes_to_stderr_one_line_per_layer(flask_repo, store):
    done = bake(flask_repo, store.root)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.split()[:1] and line.split()[0] in
             ("os", "runtime", "libraries", "server", "app", "config") and ("built" in line or "cached" in line)]
    assert [line.split()[0] for line in lines] == ["os", "runtime", "libraries", "server", "app", "config"]
    assert done.stdout.strip().startswith("flask-hello:")


def test_bake_accepts_the_recipe_file_itself(flask_repo, store):
    result = bake_json(flask_repo / "imagebuild.yaml", store.root)
    assert result["image"].startswith("flask-hello:")


def test_git_is_read_at_the_commit_not_the_index(flask_repo, store):
    """A staged but uncommitted change is still dirty."""
    (flask_repo / "hello.py").write_text("staged\n")
    git(flask_repo, "add", "hello.py")
    assert bake(flask_repo, store.root).returncode == 2
    git(flask_repo, "reset", "-q", "--hard")
    assert bake(flask_repo, store.root).returncode == 0


def test_lock_writes_the_exact_package_versions_beside_the_recipe(tmp_path):
    from tests.bake_support import EXAMPLES
    from tests.conftest import imagebuild

    app = tmp_path / "site"
    import shutil

    shutil.copytree(EXAMPLES / "static-site", app)
    (app / "imagebuild.lock").unlink()     # a fresh lock would be kept as it is
    done = imagebuild("lock", app, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["lock"] == str(app / "imagebuild.lock")
    lock = json.loads((app / "imagebuild.lock").read_text())
    assert "nginx-light" in lock["debian"]["os"]
    assert lock["debian"]["runtime"] == {}
    assert summary["os_packages"] == len(lock["debian"]["os"])


def test_a_base_image_from_the_store_replaces_the_debian_layers(flask_repo, store, debian_python_base,  # noqa: F811
                                                                docker_client, docker_leftovers):
    from imagebuild.oci.model import Image

    base = Image(created="2025-01-01T00:00:00Z", layers=tuple(debian_python_base.oci_layers()),
                 runtime={"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "BASE_MARKER=from-base"]})
    digest = store.write_image(base, ["python-base:1"]).digest
    recipe = flask_repo / "imagebuild.yaml"
    recipe.write_text(recipe.read_text().replace("os:\n  packages: [ca-certificates]\n",
                                                 f"os:\n  image: python-base@{digest}\n"))
    commit_all(flask_repo, "base image", FIRST_COMMIT_TIME + 60)
    result = bake_json(flask_repo, store.root, "--load")
    docker_leftovers.images.append(result["image"])
    assert [layer["name"] for layer in result["layers"]] == ["os", "os", "libraries", "server", "app", "config"]
    assert [layer["digest"] for layer in result["layers"][:2]] == [str(r.digest) for r in debian_python_base.results]
    _, config = manifest_and_config(store, result["digest"])
    assert "BASE_MARKER=from-base" in config["config"]["Env"]
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in config["config"]["Env"]
    container = docker_client.containers.run(result["image"], detach=True, ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container)
    assert status == 200
