"""Pushes that must stop: on Ctrl-C or SIGTERM within a second, on a blob that is not the size its
manifest says before any byte of it travels, and without leaving upload sessions open in the registry.

All through a loopback proxy in front of the real registry, which stalls or fails requests on cue.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from imagebuild.errors import RegistryError, StoreError
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.conftest import imagebuild
from tests.registry_support.images import write_app_image
from tests.registry_support.proxy import Fault, FaultProxy


def assert_ends_with_one_error(done, *words: str, code: int) -> None:
    """Progress lines may come first; the failure is one `error:` line, the last."""
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[-1], lines[-1]

pytestmark = pytest.mark.integration

# Over the 32 MiB above which a blob goes up in PATCH chunks, incompressible so the layer stays that big.
CHUNKED_FILLER = 40 * 1024 * 1024


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


def target(address: str, tag: str = "v1") -> Reference:
    return Reference.parse(f"{address}/stops-{uuid.uuid4().hex[:10]}/hello:{tag}")


def registry_has(registry: str, reference: Reference) -> bool:
    with RegistryClient(registry) as client:
        return client.head_manifest(reference.repository, reference.tag) is not None


# -- a signal stops the upload ---------------------------------------------------------------

@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_a_stalled_chunked_push_within_a_second(proxy, registry, tmp_path, signum, code, word):
    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "big", filler_bytes=CHUNKED_FILLER)
    destination = target(proxy.address)
    proxy.stall_seconds = 30.0
    proxy.add_fault(Fault("PATCH", r"/blobs/uploads/", "stall", times=0))
    push = subprocess.Popen([sys.executable, "-m", "imagebuild", "push", ref_name, "--to", str(destination),
                             "--store", str(store.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proxy.stalled.wait(60), "the push never reached its first chunk"
        time.sleep(0.3)  # the chunk is held; the client waits for the answer
        signalled = time.monotonic()
        push.send_signal(signum)
        try:
            _, stderr = push.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the push did not end within 15 s of the signal")
        took = time.monotonic() - signalled
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()
    result = subprocess.CompletedProcess(push.args, push.returncode, "", stderr)
    assert_ends_with_one_error(result, word, code=code)
    assert took < 1.5, f"the push took {took:.1f} s to end after the signal"
    after = [(method, path) for at, method, path in proxy.arrivals if at > signalled]
    assert after == [], f"requests after the signal: {after}"
    assert not registry_has(registry, destination)


# -- a blob that is not the size its manifest says ------------------------------------------

def _image_claiming(store: LayoutStore, ref_name: str, change) -> str:
    """`ref_name` again, under a new tag, with `change` applied to its manifest's last layer."""
    descriptor = store.resolve(ref_name)
    manifest = json.loads(store.read_blob(descriptor.digest))
    change(manifest["layers"][-1])
    liar = ref_name + "-liar"
    store.put_manifest(json.dumps(manifest).encode(), descriptor.media_type, [liar])
    return liar


@pytest.mark.parametrize("change, words", [
    (lambda layer: layer.update(size=layer["size"] + 1000), ["bytes", "manifest says"]),
    (lambda layer: layer.update(size=-5), ["size", "-5"]),
], ids=["1000-bytes-more", "negative"])
def test_a_blob_whose_size_the_manifest_misstates_is_not_pushed(proxy, registry, tmp_path, change, words):
    store = LayoutStore(tmp_path / "store").ensure()
    liar = _image_claiming(store, write_app_image(store, "hello", "v1"), change)
    destination = target(proxy.address)
    with pytest.raises(StoreError):
        with RegistryClient(proxy.address, backoff=0.01) as client:
            push_image(store, liar, destination, client=client)
    done = imagebuild("push", liar, "--to", str(destination), "--store", store.root)
    assert_ends_with_one_error(done, *words, code=4)
    assert not registry_has(registry, destination)


# -- upload sessions given up on are cancelled ---------------------------------------------

@pytest.mark.parametrize("fault", [Fault("PUT", r"/blobs/uploads/", "500", times=0),
                                   Fault("PATCH", r"/blobs/uploads/", "drop", times=0)],
                         ids=["put-500", "patch-dropped"])
def test_every_upload_session_given_up_on_is_deleted(proxy, registry, tmp_path, fault):
    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "v1", filler_bytes=256 * 1024)
    proxy.add_fault(fault)
    with pytest.raises(RegistryError):
        with RegistryClient(proxy.address, backoff=0.01, chunked_threshold=64 * 1024,
                            chunk_size=32 * 1024) as client:
            push_image(store, ref_name, target(proxy.address), client=client, parallel=1)
    # The proxy logs an exchange just after answering it: give the last one a moment to land.
    deadline = time.monotonic() + 3
    while True:
        started = proxy.log.matching("POST", r"/blobs/uploads/")
        finished = [e for e in proxy.log.matching("PUT", r"/blobs/uploads/") if e.status == 201]
        deleted = proxy.log.matching("DELETE", r"/blobs/uploads/")
        if len(deleted) >= len(started) - len(finished) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(started) - len(finished) >= 4  # a failing blob is tried 4 times, each in a new session
    assert len(deleted) == len(started) - len(finished), \
        "\n".join(f"{e.method} {e.path[-40:]} {e.status}" for e in proxy.log.exchanges)
    assert {e.status for e in deleted} == {204}, "the registry did not know a session it was asked to drop"
