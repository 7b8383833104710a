"""What the one copy checks before bytes move, and how it stops: places in memory and a local layout (fast).

The same rules through a registry are in tests/test_registry_answers.py (pull from a lying registry) and
tests/test_registry_upload_stops.py (a push stopped by a signal, a store blob of another size).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import threading
import time

import pytest

from imagebuild.errors import StoreError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.stores.copy import copy
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.memory import MemoryPlace
from imagebuild.stores.place import LayoutPlace, manifest_of, put_bytes
from tests.registry_support.images import write_app_image


def add_image(place: MemoryPlace, layers: int = 1, diff_ids: int | None = None) -> str:
    """An image of `layers` small layers whose config names `diff_ids` diff_ids (one per layer by default)."""
    blobs = [put_bytes(place, f"layer {n}".encode(), mt.OCI_LAYER) for n in range(layers)]
    named = [str(blob.digest) for blob in blobs] if diff_ids is None else [str(blobs[0].digest)] * diff_ids
    config = put_bytes(place, canonical_json({"architecture": "amd64", "os": "linux",
                                              "rootfs": {"type": "layers", "diff_ids": named}}), mt.OCI_CONFIG)
    manifest = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                           "config": config.to_dict(), "layers": [b.to_dict() for b in blobs]}))
    place.put_manifest(manifest, ["v1"])
    return manifest.digest


def test_a_config_that_does_not_fit_its_layers_is_refused_before_any_layer_moves():
    source, target = MemoryPlace("a"), MemoryPlace("b")
    digest = add_image(source, layers=1, diff_ids=2)
    with pytest.raises(StoreError) as caught:
        copy(source, target, digest, ["v1"])
    assert caught.value.exit_code == 4
    assert "2 diff_ids for 1 layers" in caught.value.one_line(), caught.value.one_line()
    assert target.blobs == {} and target.tagged == {}


def test_the_config_is_written_after_the_layers():
    source = MemoryPlace("a")
    written: list[str] = []

    class Recording(MemoryPlace):
        def put_blob(self, descriptor, opener):
            written.append(descriptor.media_type)
            return super().put_blob(descriptor, opener)

    copy(source, Recording("b"), add_image(source, layers=3), ["v1"])
    assert written == [mt.OCI_LAYER] * 3 + [mt.OCI_CONFIG]


def _store_manifest(store: LayoutStore, ref_name: str, change) -> str:
    """`ref_name`'s manifest with `change` applied to its last layer, stored under a new tag; its digest."""
    manifest = json.loads(store.read_blob(store.resolve(ref_name).digest))
    change(manifest["layers"][-1])
    return str(store.put_manifest(json.dumps(manifest).encode(), mt.OCI_MANIFEST, ["hello:liar"]).digest)


@pytest.mark.parametrize("change", [lambda layer: layer.update(size=str(layer["size"])),
                                    lambda layer: layer.update(digest="sha256:XYZ"),
                                    lambda layer: layer.update(size=-5)], ids=["size-string", "digest", "negative"])
def test_a_malformed_manifest_in_the_store_is_a_store_error(tmp_path, change):
    store = LayoutStore(tmp_path / "store").ensure()
    digest = _store_manifest(store, write_app_image(store, "hello", "v1"), change)
    target = MemoryPlace("b")
    with pytest.raises(StoreError) as caught:
        copy(LayoutPlace(store, "hello"), target, digest, ["v1"])
    assert caught.value.exit_code == 4 and "malformed" in caught.value.one_line(), caught.value.one_line()
    assert target.blobs == {}


def test_a_store_blob_of_another_size_than_its_manifest_is_refused_before_a_byte_is_read(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    digest = _store_manifest(store, write_app_image(store, "hello", "v1"),
                             lambda layer: layer.update(size=layer["size"] + 1000))
    read: list[str] = []

    class Recording(MemoryPlace):
        def put_blob(self, descriptor, opener):
            with opener() as reader:
                read.append(descriptor.digest)
                data = reader.read()
            return super().put_blob(descriptor, lambda: contextlib.nullcontext(io.BytesIO(data)))

    liar = json.loads(store.read_blob(digest))["layers"][-1]["digest"]
    with pytest.raises(StoreError) as caught:
        copy(LayoutPlace(store, "hello"), Recording("b"), digest, ["v1"], parallel=1)
    assert caught.value.exit_code == 4 and "manifest says" in caught.value.one_line(), caught.value.one_line()
    assert liar not in read


def test_an_interrupt_aborts_both_places_and_waits_for_no_worker():
    """Workers stuck on a stalled transfer are woken by abort(); without it the copy would wait 10 s."""
    released = threading.Event()
    aborted: list[str] = []

    class Stalling(MemoryPlace):
        def put_blob(self, descriptor, opener):
            released.wait(10)
            raise OSError("connection shut")   # what a shut socket does to a request under way

        def abort(self):
            aborted.append(self.label)
            released.set()

    class Source(MemoryPlace):
        def abort(self):
            aborted.append(self.label)

    source = Source("a")
    digest = add_image(source, layers=4)
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        copy(source, Stalling("b"), digest, ["v1"], parallel=4)
    assert time.monotonic() - started < 5    # the stalled worker would hold it 10 s
    assert sorted(aborted) == ["a", "b"]


def test_two_images_of_an_index_sharing_a_config_are_each_checked_against_it():
    source, target = MemoryPlace("a"), MemoryPlace("b")
    layers = [put_bytes(source, f"layer {n}".encode(), mt.OCI_LAYER) for n in range(2)]
    config = put_bytes(source, canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [str(layers[0].digest)]}}), mt.OCI_CONFIG)
    images = [manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_dict(),
                                          "layers": [b.to_dict() for b in layers[:count]]})) for count in (1, 2)]
    for image in images:
        source.put_manifest(image)
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": str(image.digest), "size": len(image.raw)} for image in images]}))
    source.put_manifest(index, ["v1"])
    with pytest.raises(StoreError, match="1 diff_ids for 2 layers"):
        copy(source, target, index.digest, ["v1"])
    assert target.blobs == {}
