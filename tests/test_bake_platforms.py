"""A two-platform bake (linux/amd64 + linux/arm64) of the smallest Python example: an OCI index
that registry tools read, an arm64 image that really is aarch64 and starts under qemu-user
emulation, the same index digest from two fresh stores, and push, pull, --load and exports."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import uuid
from dataclasses import replace

import pytest

from imagebuild.oci.model import host_platform
from imagebuild.sources.lockfile import LOCK_NAME, platform_lock, read_lock, write_lock
from imagebuild.stores.layout import LayoutStore
from tests.bake_support import (EXAMPLES, FIRST_COMMIT_TIME, bake, bake_json, base_for, commit_all, git, imagebuild,
                                seed, wait_for_http, published_port)
from tests.conftest import REGISTRY, run
from tests.debian_fixtures import _cache_dir, build_cached_base

pytestmark = pytest.mark.integration

EXAMPLE = "flask-hello"
PLATFORMS = ("linux/amd64", "linux/arm64")
# A hashed requirements file names every platform's wheel: the example's names the x86-64 one only.
MARKUPSAFE_X86_64 = "--hash=sha256:6da83a088f8ef93b2d483a8232a4dbf4d69d3d8496b568a03c56becac43e1808"
MARKUPSAFE_AARCH64 = "--hash=sha256:849dd2bb0e5e4ab2b71c7191726a4a8d5aa8a610daa584728cbee0b710ddc4ef"


@pytest.fixture(scope="session")
def arm64_base(tmp_path_factory):
    """The example's Debian os and runtime layers for arm64 (mmdebstrap under qemu-user), built once
    and kept in ~/.cache/imagebuild-test keyed by their inputs, like the amd64 ones."""
    from imagebuild.recipe.loader import load_recipe

    recipe = load_recipe(EXAMPLES / EXAMPLE)
    os_spec = replace(recipe.os, architecture="arm64")
    return build_cached_base(_cache_dir(os_spec, recipe.runtime), os_spec, recipe.runtime)


@pytest.fixture(scope="module")
def two_platform_repo(tmp_path_factory, arm64_base):
    """flask-hello listing both platforms, with a lock of both architectures: the cached bases' Debian
    pins, the example's amd64 closure, and the arm64 closure resolved by `imagebuild lock`."""
    amd64_base = base_for(EXAMPLE, tmp_path_factory)
    repo = tmp_path_factory.mktemp("platforms") / EXAMPLE
    shutil.copytree(EXAMPLES / EXAMPLE, repo)
    recipe = repo / "imagebuild.yaml"
    recipe.write_text(recipe.read_text() + f"platforms: [{', '.join(PLATFORMS)}]\nregistry: {REGISTRY}/"
                      f"platforms-{uuid.uuid4().hex[:8]}\n")
    requirements = repo / "requirements.txt"
    requirements.write_text(requirements.read_text().replace(MARKUPSAFE_X86_64,
                                                             f"{MARKUPSAFE_X86_64} \\\n    {MARKUPSAFE_AARCH64}"))
    amd64 = replace(read_lock(amd64_base.lock_path), python=read_lock(EXAMPLES / EXAMPLE / LOCK_NAME).python)
    write_lock(repo / LOCK_NAME, platform_lock({"amd64": amd64, "arm64": read_lock(arm64_base.lock_path)},
                                               ("amd64", "arm64")))
    done = imagebuild("lock", repo, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resolved"] == ["python"]       # the Debian pins were kept
    lock = read_lock(repo / LOCK_NAME)
    assert lock.for_architecture("amd64").os == amd64.os
    amd_closure, arm_closure = lock.for_architecture("amd64").python, lock.for_architecture("arm64").python
    assert amd_closure.packages == amd64.python.packages       # the same wheels as the example's lock
    wheels = {package.name: package for package in arm_closure.packages}
    assert "aarch64" in wheels["markupsafe"].wheel and wheels["markupsafe"].sha256 == MARKUPSAFE_AARCH64[-64:]
    assert wheels["flask"] == {package.name: package for package in amd_closure.packages}["flask"]
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "first", FIRST_COMMIT_TIME)
    return repo, amd64_base, arm64_base


def fresh_store(path, amd64_base, arm64_base) -> LayoutStore:
    store = seed(path, amd64_base)
    seed(path, arm64_base)
    return store


@pytest.fixture(scope="module")
def baked(two_platform_repo, tmp_path_factory, registry):
    repo, amd64_base, arm64_base = two_platform_repo
    store = fresh_store(tmp_path_factory.mktemp("store-1"), amd64_base, arm64_base)
    done = bake(repo, store.root, "--json", "--push")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), store, repo


def test_two_platforms_bake_an_index_over_one_image_each(baked):
    result, store, _ = baked
    assert [entry["platform"] for entry in result["platforms"]] == list(PLATFORMS)
    index = json.loads(store.read_blob(result["digest"]))
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == \
        [("linux", "amd64"), ("linux", "arm64")]
    assert index["annotations"]["org.opencontainers.image.version"] == result["version"]
    assert store.resolve(f"{EXAMPLE}:{result['version']}").digest == result["digest"]
    for entry, child in zip(result["platforms"], index["manifests"]):
        config = json.loads(store.read_blob(json.loads(store.read_blob(child["digest"]))["config"]["digest"]))
        assert config["architecture"] == entry["platform"].split("/")[1]
    # The platform-independent layers (server: the launcher, config templates, pure-Python gunicorn)
    # are the same bytes in both images.
    by_name: dict[str, set[str]] = {}
    for layer in result["layers"]:
        by_name.setdefault(layer["name"], set()).add(layer["digest"])
    assert len(by_name["app"]) == 1 and len(by_name["config"]) == 1 and len(by_name["server"]) == 1
    assert len(by_name["os"]) == 2 and len(by_name["runtime"]) == 2 and len(by_name["libraries"]) == 2


def test_two_fresh_stores_give_the_same_index_digest(baked, two_platform_repo, tmp_path):
    result, _, repo = baked
    _, amd64_base, arm64_base = two_platform_repo
    again = bake_json(repo, fresh_store(tmp_path / "store-2", amd64_base, arm64_base).root)
    assert again["digest"] == result["digest"]
    assert again["platforms"] == result["platforms"]


def test_registry_tools_read_the_pushed_index(baked):
    result, _, _ = baked
    pushed = result["image"]
    assert pushed.startswith(REGISTRY)
    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{pushed}"])
    assert raw.returncode == 0, raw.stderr
    assert [m["platform"]["architecture"] for m in json.loads(raw.stdout)["manifests"]] == ["amd64", "arm64"]
    listed = run(["docker", "manifest", "inspect", "--insecure", pushed])
    assert listed.returncode == 0, listed.stderr
    assert {m["platform"]["architecture"] for m in json.loads(listed.stdout)["manifests"]} == {"amd64", "arm64"}


def test_the_index_is_promoted_by_its_digest_and_pulled_one_platform_at_a_time(baked, tmp_path):
    result, store, repo = baked
    done = imagebuild("promote", result["version"], "--to", "dev", "--recipe", repo, "--store", store.root, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["digest"] == result["digest"]
    done = imagebuild("status", "--recipe", repo, "--store", store.root, "--json")
    assert done.returncode == 0, done.stderr
    assert result["digest"] in done.stdout and result["version"] in done.stdout
    pulled = LayoutStore(tmp_path / "pulled")
    for platform, wanted in ((None, host_platform().architecture), ("linux/arm64", "arm64")):
        args = ["--platform", platform] if platform else []
        done = imagebuild("pull", result["image"], "--store", pulled.root, "--json", *args)
        assert done.returncode == 0, done.stderr
        image = pulled.resolve(result["image"])
        config = pulled.read_config(pulled.read_manifest(image.digest))
        assert config["architecture"] == wanted


def test_arm64_image_has_an_aarch64_python_and_answers_its_health_path_under_emulation(
        baked, tmp_path, docker_client, docker_leftovers):
    result, store, _ = baked
    arm = dict((entry["platform"], entry["digest"]) for entry in result["platforms"])["linux/arm64"]
    manifest = store.read_manifest(arm)
    python = _member(store, manifest.layers[1].digest, "usr/bin/python3.11")
    (tmp_path / "python3.11").write_bytes(python)
    described = run(["file", "-b", str(tmp_path / "python3.11")])
    assert "ARM aarch64" in described.stdout, described.stdout
    # The registry holds the index: the engine pulls and runs its arm64 image through qemu-user.
    tag = f"{result['image']}"
    docker_leftovers.images.append(tag)
    pulled = run(["docker", "pull", "--platform", "linux/arm64", tag])
    assert pulled.returncode == 0, pulled.stderr
    container = docker_client.containers.run(tag, detach=True, platform="linux/arm64",
                                             ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container,
                              attempts=240)
    assert status == 200
    assert docker_client.images.get(tag).attrs["Architecture"] == "arm64"


def test_load_and_docker_archive_take_the_host_platform_image_oci_takes_the_index(baked, tmp_path, docker_client,
                                                                                   docker_leftovers):
    result, store, repo = baked
    host = host_platform().architecture
    child = dict((entry["platform"], entry["digest"]) for entry in result["platforms"])[f"linux/{host}"]
    local = f"{EXAMPLE}:{result['version']}"
    docker_leftovers.images.append(local)
    done = imagebuild("export", local, f"docker-archive:{tmp_path / 'image.tar'}", "--store", store.root)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "image.tar") as tar:
        saved = json.loads(tar.extractfile("manifest.json").read())
        config = json.loads(tar.extractfile(saved[0]["Config"]).read())
    assert config["architecture"] == host
    done = imagebuild("export", local, f"oci:{tmp_path / 'layout'}", "--store", store.root)
    assert done.returncode == 0, done.stderr
    layout = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert layout["manifests"][0]["digest"] == result["digest"]
    inspected = run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'layout'}:{result['version']}"])
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["manifests"][1]["platform"]["architecture"] == "arm64"
    done = bake(repo, store.root, "--load")
    assert done.returncode == 0, done.stderr
    loaded = docker_client.images.get(local)
    assert loaded.attrs["Architecture"] == host
    assert loaded.id == json.loads(store.read_blob(child))["config"]["digest"]


def _member(store: LayoutStore, digest: str, name: str) -> bytes:
    """A regular file of a layer (python3.11 is one in Debian's package)."""
    with store.open_blob(digest) as blob, tarfile.open(fileobj=io.BytesIO(blob.read()), mode="r:*") as tar:
        return tar.extractfile(tar.getmember(name)).read()


def test_each_platform_has_its_own_sbom_and_the_index_carries_both(baked):
    from imagebuild.evidence.sbom import SPDX, attached_sbom
    from imagebuild.stores.attachments import attachments
    from imagebuild.stores.place import LayoutPlace

    result, store, _ = baked
    place = LayoutPlace(store, EXAMPLE)
    names = {}
    for entry in result["platforms"]:
        document = json.loads(attached_sbom(place, entry["digest"], SPDX))
        names[entry["platform"]] = {p["name"] for p in document["packages"]}
        architectures = {ref["referenceLocator"].partition("arch=")[2].partition("&")[0]
                         for p in document["packages"] for ref in p.get("externalRefs", [])
                         if ref["referenceLocator"].startswith("pkg:deb/")}
        assert architectures and architectures <= {entry["platform"].rpartition("/")[2], "all"}, architectures
    on_index = [json.loads(a.payload) for a in attachments(place, result["digest"], "application/spdx+json")]
    assert len(on_index) == 2 and {p["name"] for p in on_index[0]["packages"]} in names.values()
    # `imagebuild sbom` of the pushed index: one platform's, as --platform names it; refused without one
    for entry in result["platforms"]:
        done = imagebuild("sbom", result["image"], "--platform", entry["platform"], "--store", store.root)
        assert done.returncode == 0, done.stderr
        assert {p["name"] for p in json.loads(done.stdout)["packages"]} == names[entry["platform"]]
    refused = imagebuild("sbom", result["image"], "--store", store.root)
    assert refused.returncode == 2 and "(linux/amd64, linux/arm64)" in refused.stderr, refused.stderr
