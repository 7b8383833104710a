"""Push and pull against the real distribution registry, judged by skopeo and docker."""

from __future__ import annotations

import json
import uuid

import pytest

from imagebuild.errors import RegistryUnreachableError, UserError
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import pull_image, push_image
from tests.conftest import imagebuild, run
from tests.registry_support.images import app_layer_sizes, free_port, write_app_image
from tests.registry_support.proxy import FaultProxy

FILLER = 3 * 1024 * 1024  # an incompressible "runtime" layer below the app


def unique(prefix: str = "push") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}/hello"


@pytest.fixture
def store(tmp_path) -> LayoutStore:
    return LayoutStore(tmp_path / "store").ensure()


@pytest.mark.integration
def test_push_round_trips_through_skopeo_and_docker(registry, store, docker_client):
    ref_name = write_app_image(store, "hello", "abc1234", message="hello-from-registry")
    local_digest = store.resolve(ref_name).digest
    target = Reference.parse(f"{registry}/{unique()}")
    result = push_image(store, ref_name, target)
    assert result.digest == local_digest
    assert result.blobs_uploaded == 3 and result.blobs_skipped == 0

    remote = f"{target.name}:abc1234"
    inspected = run(["skopeo", "inspect", "--tls-verify=false", f"docker://{remote}"])
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == local_digest

    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{remote}"])
    assert raw.stdout.encode() == store.read_blob(local_digest)  # the exact bytes

    image = docker_client.images.pull(target.name, tag="abc1234")
    try:
        assert f"{target.name}@{local_digest}" in image.attrs["RepoDigests"]
        output = docker_client.containers.run(remote, remove=True)
        assert output.decode().strip() == "hello-from-registry"
    finally:
        docker_client.images.remove(remote, force=True)


@pytest.mark.integration
def test_second_push_of_app_only_commit_uploads_only_app_config_and_manifest(registry, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    first = write_app_image(store, "hello", "v1", message="one", filler_bytes=FILLER)
    second = write_app_image(store, "hello", "v2", message="two", filler_bytes=FILLER)
    target = Reference.parse(f"{registry}/{unique()}")
    with FaultProxy(registry) as proxy:
        via_proxy = Reference.parse(f"{proxy.address}/{target.repository}")
        push_image(store, first, via_proxy)
        proxy.log.clear()
        result = push_image(store, second, via_proxy)
        sizes = app_layer_sizes(store, second)
        expected = sizes["app"] + sizes["config"] + sizes["manifest"]
        assert result.bytes_uploaded == expected
        assert (result.blobs_uploaded, result.blobs_skipped) == (2, 2)
        # The bytes that actually crossed the wire, counted outside imagebuild:
        assert proxy.log.bytes_sent == expected
        assert proxy.log.requests == result.requests
    lower = store.read_manifest(store.resolve(second).digest).layers[1].size
    assert lower >= FILLER  # the layer that stayed home is the big one


@pytest.mark.integration
def test_large_blobs_go_in_chunks_and_pull_brings_the_same_bytes(registry, store, tmp_path):
    ref_name = write_app_image(store, "hello", "chunky", filler_bytes=FILLER)
    target = Reference.parse(f"{registry}/{unique()}")
    with FaultProxy(registry) as proxy:
        client = RegistryClient(proxy.address, chunked_threshold=1024 * 1024, chunk_size=512 * 1024)
        with client:
            push_image(store, ref_name, Reference.parse(f"{proxy.address}/{target.repository}"), client=client)
        patches = proxy.log.matching("PATCH", "/blobs/uploads/")
        assert len(patches) >= FILLER // (512 * 1024)
        assert all(p.sent <= 512 * 1024 for p in patches)

    fresh = LayoutStore(tmp_path / "fresh")
    pulled = pull_image(fresh, target.with_tag("chunky"))
    assert pulled.digest == store.resolve(ref_name).digest
    assert fresh.resolve(pulled.ref_name).digest == pulled.digest
    for blob in fresh.read_manifest(pulled.digest).blobs():
        fresh.verify_blob(blob.digest)
    by_digest = pull_image(fresh, target.with_tag(None).with_digest(pulled.digest))
    assert by_digest.blobs_fetched == 0 and by_digest.blobs_present == 4
    assert fresh.resolve(f"{target.name}@{pulled.digest}").digest == pulled.digest


@pytest.mark.integration
def test_push_into_new_repository_mounts_blobs_it_pushed_elsewhere(registry, store):
    ref_name = write_app_image(store, "hello", "m1", filler_bytes=FILLER)
    first = Reference.parse(f"{registry}/{unique('mount-a')}")
    push_image(store, ref_name, first)
    second = Reference.parse(f"{registry}/{unique('mount-b')}")
    result = push_image(store, ref_name, second)
    assert result.blobs_mounted == 4 and result.blobs_uploaded == 0
    assert result.bytes_uploaded == len(store.read_blob(store.resolve(ref_name).digest))


@pytest.mark.integration
def test_cli_push_and_pull_report_json(registry, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "cli1")
    repo = unique("cli")
    pushed = imagebuild("push", ref_name, "--to", f"{registry}/{repo}", "--json", "--store", store.root)
    assert pushed.returncode == 0, pushed.stderr
    data = json.loads(pushed.stdout)
    assert data["digest"] == store.resolve(ref_name).digest and data["blobs_uploaded"] == 3
    again = imagebuild("push", ref_name, "--to", f"{registry}/{repo}", "--store", store.root)
    assert again.returncode == 0 and "skipped 3" in again.stdout

    pulled = imagebuild("pull", f"{registry}/{repo}:cli1", "--json", "--store", tmp_path / "other")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["digest"] == data["digest"]


def test_unreachable_registry_has_its_own_exit_code(store):
    ref_name = write_app_image(store, "hello", "nowhere")
    port = free_port()
    client = RegistryClient(f"127.0.0.1:{port}", attempts=2, backoff=0.01)
    with pytest.raises(RegistryUnreachableError, match=f"cannot reach registry 127.0.0.1:{port}"):
        push_image(store, ref_name, Reference.parse(f"127.0.0.1:{port}/x/hello"), client=client)
    done = imagebuild("push", ref_name, "--to", f"127.0.0.1:{port}/x/hello", "--store", store.root)
    assert done.returncode == 8
    assert done.stderr.startswith(f"error: cannot reach registry 127.0.0.1:{port}")
    assert "start the registry" in done.stderr and "Traceback" not in done.stderr


def test_push_without_a_registry_in_the_reference_is_refused(store):
    ref_name = write_app_image(store, "hello", "noreg")
    with pytest.raises(UserError, match="names no registry"):
        push_image(store, ref_name, Reference.parse("acme/hello"))


@pytest.mark.integration
def test_a_mount_answered_202_becomes_an_ordinary_upload(registry, store):
    ref_name = write_app_image(store, "hello", "m202")
    manifest = store.read_manifest(store.resolve(ref_name).digest)
    repository = unique("m202")
    with FaultProxy(registry) as proxy, RegistryClient(proxy.address) as client:
        blob = manifest.layers[-1]
        outcome = client.upload_blob(repository, blob, lambda: store.open_blob(blob.digest),
                                     mount_from=unique("never-pushed"))
        assert (outcome.how, outcome.bytes_sent) == ("uploaded", blob.size)
        mounts = proxy.log.matching("POST", "mount=")
        assert [m.status for m in mounts] == [202]
        assert not proxy.log.matching("POST", r"uploads/$")  # the 202's session was used, not a new one
        assert client.blob_exists(repository, blob.digest)


@pytest.mark.parametrize("parallel", [1, 3])
@pytest.mark.integration
def test_uploads_in_parallel_stay_within_the_bound(registry, store, parallel):
    ref_name = write_app_image(store, "hello", f"par{parallel}", extra_layers=8)
    with FaultProxy(registry) as proxy:
        proxy.upload_delay = 0.2  # each upload stays open long enough for others to overlap it
        result = push_image(store, ref_name, Reference.parse(f"{proxy.address}/{unique('par')}"),
                            parallel=parallel)
        assert result.blobs_uploaded == 11
        assert 1 <= proxy.max_uploads_in_flight <= parallel
