"""The SBOMs a bake attaches, against the image itself: valid for the formats' own validators, listing
exactly the Debian packages dpkg-query and the Python distributions Python find inside the running image,
read back with `imagebuild sbom` from the store and, after a push, from a registry without the
referrers API (distribution 2.8: the referrers tag schema)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from imagebuild.sources.lockfile import read_lock, write_lock
from imagebuild.stores.layout import DPKG_FACTS_DIR
from tests.bake_support import bake_json, example_repo, git, seed
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.test_sbom import cyclonedx_problem, spdx_problems

pytestmark = pytest.mark.integration

ORIGIN = "https://git.example.com/acme/flask-hello.git"
SITE = "/usr/local/lib/python3.11/dist-packages"
SERVER = "/usr/local/lib/imagebuild/server-packages"
# Every installed distribution in the two directories bake installs into, as Python itself finds them.
LIST_DISTRIBUTIONS = f"""
import importlib.metadata, json
print(json.dumps(sorted([path, d.metadata["Name"], d.version]
                        for path in ({SITE!r}, {SERVER!r}) for d in importlib.metadata.distributions(path=[path]))))
"""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locks(work: Path, base) -> tuple[Path, Path]:
    """The test base's lock, with what dpkg records of each package, and without (as a lock made before)."""
    lock = read_lock(base.lock_path)
    assert lock.packages and lock.os_release
    with_details, without = work / "with-details.lock", work / "without-details.lock"
    write_lock(with_details, lock)
    write_lock(without, replace(lock, packages={}, os_release={}))
    return with_details, without


@pytest.fixture(scope="module")
def baked(tmp_path_factory, debian_python_base, docker_client):  # noqa: F811
    work = tmp_path_factory.mktemp("sbom")
    with_details, without = locks(work, debian_python_base)
    repo = example_repo(work, "flask-hello", lock=with_details)
    git(repo, "remote", "add", "origin", ORIGIN)
    store = seed(work / "store", debian_python_base)
    result = bake_json(repo, store.root, "--load")
    yield repo, store, result, without
    docker_client.images.remove(result["image"], force=True)


def sbom(reference: str, *args) -> bytes:
    done = imagebuild("sbom", reference, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.encode()


def test_the_attached_sboms_are_valid_and_name_the_image_and_its_commit(baked):
    repo, store, result, _ = baked
    spdx = sbom(result["image"], "--store", store.root)
    cyclonedx = sbom(result["image"], "--store", store.root, "--format", "cyclonedx")
    assert spdx_problems(spdx) == []
    assert cyclonedx_problem(cyclonedx) is None
    commit = git(repo, "rev-parse", "HEAD")
    spdx_data, cyclonedx_data = json.loads(spdx), json.loads(cyclonedx)
    app = next(p for p in spdx_data["packages"] if p["SPDXID"] == "SPDXRef-App")
    assert app["downloadLocation"] == f"git+{ORIGIN}@{commit}"
    image = next(p for p in spdx_data["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert image["checksums"][0]["checksumValue"] == result["digest"].split(":")[1]
    assert spdx_data["creationInfo"]["created"] == "2025-06-15T15:06:40Z"     # the commit's time
    assert cyclonedx_data["metadata"]["component"]["hashes"][0]["content"] == result["digest"].split(":")[1]
    vcs = next(c for c in cyclonedx_data["components"] if c["bom-ref"] == "app")
    assert vcs["version"] == commit and vcs["externalReferences"][0]["url"] == ORIGIN
    # not listed as images, but with --all as the referrers index they are
    listed = json.loads(imagebuild("images", "--store", store.root, "--json").stdout)["images"]
    assert [row["image"] for row in listed] == [result["image"]]


def test_the_sbom_lists_exactly_what_is_installed_in_the_image(baked, docker_client):
    _, store, result, _ = baked
    document = json.loads(sbom(result["image"], "--store", store.root))
    listed = {(p["name"], p["versionInfo"]) for p in document["packages"] if p["SPDXID"].startswith("SPDXRef-deb-")}
    query = docker_client.containers.run(
        result["image"], ["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"],
        entrypoint="", remove=True).decode()
    installed = {tuple(line.split("\t")[1:]) for line in query.splitlines() if line.startswith("installed\t")}
    assert len(installed) > 50
    assert listed == installed

    cyclonedx = json.loads(sbom(result["image"], "--store", store.root, "--format", "cyclonedx"))
    python = {(c["properties"][0]["value"] if c["properties"] else "", normalized(c["name"]), c["version"])
              for c in cyclonedx["components"] if c["bom-ref"].startswith("python:")}
    found = json.loads(docker_client.containers.run(result["image"], ["python3", "-c", LIST_DISTRIBUTIONS],
                                                    entrypoint="", remove=True))
    assert {(path, normalized(name), version) for path, name, version in found} == python
    assert {path for path, _, _ in python} == {SITE, SERVER}


def test_a_rebake_attaches_the_same_bytes_and_the_lock_spares_reading_the_layers(baked):
    repo, store, result, _ = baked
    before = sbom(result["image"], "--store", store.root)
    again = bake_json(repo, store.root)
    assert again["digest"] == result["digest"]
    assert sbom(result["image"], "--store", store.root) == before
    assert not (store.root / DPKG_FACTS_DIR).exists()      # the lock said it all: no layer was read


def debian_parts(document: bytes) -> tuple[list, list]:
    """The Debian packages of an SPDX document, and the os and Debian components of a CycloneDX one."""
    data = json.loads(document)
    if "spdxVersion" in data:
        return [p for p in data["packages"] if p["SPDXID"].startswith("SPDXRef-deb-")], []
    return [], [c for c in data["components"] if c["bom-ref"] == "os" or c["bom-ref"].startswith("deb:")]


def test_a_lock_made_before_it_kept_dpkg_details_gives_the_same_packages_from_the_layers(baked, tmp_path):
    _, store, result, without = baked
    repo = example_repo(tmp_path, "flask-hello", lock=without)
    older = bake_json(repo, store.root)
    assert len(list((store.root / DPKG_FACTS_DIR).glob("*.json"))) == 2    # the os and runtime layers, read
    for form in ("spdx", "cyclonedx"):
        locked = debian_parts(sbom(result["image"], "--store", store.root, "--format", form))
        read = debian_parts(sbom(older["image"], "--store", store.root, "--format", form))
        assert read == locked and (read[0] or read[1])


def test_push_carries_the_sboms_and_sbom_reads_them_from_the_registry(baked, registry):
    _, store, result, _ = baked
    target = f"{registry}/sbom-{uuid.uuid4().hex[:8]}/flask-hello:{result['version']}"
    pushed = imagebuild("push", result["image"], "--to", target, "--store", store.root, "--recipe", baked[0])
    assert pushed.returncode == 0, pushed.stderr
    for form in ("spdx", "cyclonedx"):
        local = sbom(result["image"], "--store", store.root, "--format", form)
        assert sbom(target, "--format", form, "--store", store.root) == local
    # pulled into the store without its attachments, the image's SBOM is still asked of its registry
    pulled = imagebuild("pull", target, "--store", store.root)
    assert pulled.returncode == 0, pulled.stderr
    assert sbom(target, "--store", store.root) == sbom(result["image"], "--store", store.root)
    from imagebuild.registry.client import RegistryClient
    from imagebuild.oci.reference import Reference

    reference = Reference.parse(target)
    client = RegistryClient(registry)
    try:
        assert f"sha256-{result['digest'].split(':')[1]}" in client.list_tags(reference.repository)
    finally:
        client.close()
