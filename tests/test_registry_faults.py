"""Faults in the middle of pushes and pulls, injected by a loopback proxy in front of the real registry.

A push either completes through retries with the right digest, or fails with
one clear error and leaves no tag behind.
"""

from __future__ import annotations

import json
import uuid

import pytest

from imagebuild.errors import RegistryError
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import pull_image, push_image
from tests.conftest import imagebuild, run
from tests.registry_support.images import write_app_image
from tests.registry_support.proxy import Fault, FaultProxy

pytestmark = pytest.mark.integration

FILLER = 2 * 1024 * 1024


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


@pytest.fixture
def image(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "f1", filler_bytes=FILLER)
    return store, ref_name, str(store.resolve(ref_name).digest)


def fast_client(proxy: FaultProxy, **options) -> RegistryClient:
    return RegistryClient(proxy.address, backoff=0.01, **options)


def target_via(proxy: FaultProxy) -> Reference:
    return Reference.parse(f"{proxy.address}/fault-{uuid.uuid4().hex[:10]}/hello:f1")


def push_with_fault(proxy: FaultProxy, image, fault: Fault, target: Reference, **options):
    """Push the test image through `proxy` with `fault` armed, in chunks small enough to meet it."""
    store, ref_name, _ = image
    proxy.add_fault(fault)
    with fast_client(proxy, chunked_threshold=1024 * 1024, chunk_size=512 * 1024, **options) as client:
        return push_image(store, ref_name, target, client=client)


def registry_digest(registry: str, reference: Reference) -> str | None:
    with RegistryClient(registry) as client:
        found = client.get_manifest(reference.repository, reference.tag)
    return str(found.digest) if found else None


@pytest.mark.parametrize("fault", [
    Fault("PUT", r"/blobs/uploads/.*digest=", "drop", nth=2),
    Fault("PUT", r"/blobs/uploads/.*digest=", "500", nth=1, times=2),
    Fault("PATCH", r"/blobs/uploads/", "drop", nth=2),
    Fault("PATCH", r"/blobs/uploads/", "500", nth=1),
    Fault("POST", r"/blobs/uploads/", "429", nth=1),
    Fault("HEAD", r"/blobs/", "drop", nth=3),
    Fault("PUT", r"/manifests/", "500", nth=1),
    Fault("PUT", r"/manifests/", "drop", nth=1),
], ids=lambda f: f"{f.action}-{f.method}-{f.nth}")
def test_push_completes_through_transient_faults(proxy, image, registry, fault):
    store, _, digest = image
    target = target_via(proxy)
    result = push_with_fault(proxy, image, fault, target)
    assert [e.fault for e in proxy.log.exchanges if e.fault] == [fault.action] * (fault.times or 1)
    assert result.digest == digest
    assert registry_digest(registry, target) == digest
    # Every blob the manifest names is whole in the registry: skopeo can copy the image out.
    copied = run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry}/{target.repository}:f1",
                  f"oci:{store.root.parent / 'copy'}:f1"])
    assert copied.returncode == 0, copied.stderr


@pytest.mark.parametrize("fault", [
    Fault("PUT", r"/blobs/uploads/.*digest=", "500", times=0),
    Fault("PATCH", r"/blobs/uploads/", "drop", times=0),
    Fault("PUT", r"/manifests/", "500", times=0),
], ids=lambda f: f"{f.action}-{f.method}")
def test_push_fails_cleanly_and_tags_nothing(proxy, image, registry, fault):
    target = target_via(proxy)
    with pytest.raises(RegistryError) as caught:
        push_with_fault(proxy, image, fault, target, attempts=3)
    assert "\n" not in caught.value.one_line()
    assert registry_digest(registry, target) is None
    if fault.method != "PUT" or "manifests" not in fault.path:
        assert not proxy.log.matching("PUT", "/manifests/"), "a manifest was sent after a failed blob"


def test_cli_push_failure_is_one_line_with_exit_code(proxy, image, registry):
    store, ref_name, _ = image
    proxy.add_fault(Fault("PUT", r"/blobs/uploads/", "500", times=0))
    target = target_via(proxy)
    done = imagebuild("push", ref_name, "--to", str(target), "--store", store.root, "--json")
    assert done.returncode == 5
    assert json.loads(done.stdout)["error"]["exit_code"] == 5, "--json prints one object, also on failure"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: uploading blob sha256:")
    assert "UNKNOWN: injected failure" in lines[0]
    assert registry_digest(registry, target) is None


def test_pull_survives_a_dropped_download_and_keeps_no_partial_blob(proxy, image, registry, tmp_path):
    store, ref_name, digest = image
    target = Reference.parse(f"{registry}/fault-pull-{uuid.uuid4().hex[:8]}/hello:f1")
    push_image(store, ref_name, target)
    proxy.add_fault(Fault("GET", r"/blobs/sha256:", "drop", nth=2))
    fresh = LayoutStore(tmp_path / "fresh")
    with fast_client(proxy) as client:
        pulled = pull_image(fresh, Reference.parse(f"{proxy.address}/{target.repository}:f1"), client=client)
    assert pulled.digest == digest and pulled.blobs_fetched == 4
    for blob in fresh.read_manifest(digest).blobs():
        fresh.verify_blob(blob.digest)
    assert list((fresh.root / "tmp").iterdir()) == []
    assert json.loads(fresh.read_blob(digest))["layers"]


def test_a_failed_blob_stops_the_push_without_starting_the_queued_uploads(proxy, registry, tmp_path):
    store = LayoutStore(tmp_path / "many").ensure()
    ref_name = write_app_image(store, "hello", "many", extra_layers=10)
    blobs = len(store.read_manifest(store.resolve(ref_name).digest).blobs())
    proxy.add_fault(Fault("POST", r"/blobs/uploads/", "500", times=0))
    with fast_client(proxy, attempts=1) as client:
        with pytest.raises(RegistryError):
            push_image(store, ref_name, target_via(proxy), client=client, parallel=1)
    checked = {exchange.path.rsplit("/", 1)[-1] for exchange in proxy.log.matching("HEAD", "/blobs/")}
    # One worker: the failing blob, and at most the one it picked up before the pool was stopped.
    assert 1 <= len(checked) <= 2 < blobs, (len(checked), blobs)


def test_retries_do_not_multiply_across_layers(proxy, image, registry, tmp_path):
    """A blob GET the transport already retried is final: the blob-level retry does not start it over."""
    store, ref_name, _ = image
    target = Reference.parse(f"{registry}/fault-retry-{uuid.uuid4().hex[:8]}/hello:f1")
    push_image(store, ref_name, target)
    fault = proxy.add_fault(Fault("GET", r"/blobs/sha256:", "500", times=0))
    with pytest.raises(RegistryError, match="HTTP 500|injected failure"):
        with fast_client(proxy, attempts=3) as client:
            pull_image(LayoutStore(tmp_path / "fresh"), Reference.parse(f"{proxy.address}/{target.repository}:f1"),
                       client=client)
    assert fault.seen == 3, "one logical download, three tries, and no second round on top"


def test_a_blob_that_arrives_altered_is_fetched_again_and_never_stored(proxy, image, registry, tmp_path):
    store, ref_name, digest = image
    target = Reference.parse(f"{registry}/fault-corrupt-{uuid.uuid4().hex[:8]}/hello:f1")
    push_image(store, ref_name, target)
    source = Reference.parse(f"{proxy.address}/{target.repository}:f1")
    once = proxy.add_fault(Fault("GET", r"/blobs/sha256:", "corrupt", nth=1))
    fresh = LayoutStore(tmp_path / "fresh")
    with fast_client(proxy) as client:
        pulled = pull_image(fresh, source, client=client)
    assert once.seen >= 2 and pulled.digest == digest
    for blob in fresh.read_manifest(digest).blobs():
        fresh.verify_blob(blob.digest)
    proxy.clear_faults()
    proxy.add_fault(Fault("GET", r"/blobs/sha256:", "corrupt", times=0))
    other = LayoutStore(tmp_path / "other")
    with pytest.raises(RegistryError, match="arrived with different content"):
        with fast_client(proxy) as client:
            pull_image(other, source, client=client)
    assert list((other.root / "blobs" / "sha256").iterdir()) == [], "an altered blob was kept"
    assert list((other.root / "tmp").iterdir()) == []
