"""A base image is read from the local store only as far as it holds up: every layer's size, digest
and diff_id, and the config's shape, are checked before a new image is built on it."""

from __future__ import annotations

import json

import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.build.cache import store_layer
from imagebuild.build.layers.debian import base_from_store
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import Entry
from imagebuild.oci.model import Image
from imagebuild.stores.layout import LayoutStore


def base_image(store: LayoutStore, compression: str = "gzip") -> tuple[dict, dict]:
    """A one-layer image's manifest and config, as JSON, after writing it into the store."""
    layer = store_layer(store, [Entry.file("etc/os-release", b"ID=test\n")], 1_000, compression)
    image = Image(created="2024-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    descriptor = store.write_image(image)
    manifest = json.loads(store.read_blob(descriptor.digest))
    return manifest, json.loads(store.read_blob(manifest["config"]["digest"]))


def write_base(store: LayoutStore, manifest: dict, config: bytes | None = None) -> str:
    if config is not None:
        manifest["config"].update(digest=store.put_blob(config), size=len(config))
    digest = store.put_blob(json.dumps(manifest).encode())
    return f"localhost:5000/base@{digest}"


def refused(store: LayoutStore, ref: str, *words: str) -> str:
    with pytest.raises(ImageBuildError) as caught:
        base_from_store(store, ref)
    line = caught.value.one_line()
    assert caught.value.exit_code in (2, 4), line  # a user's or the store's problem, never a bug (1)
    for word in words:
        assert word in line, line
    return line


@pytest.fixture
def store(tmp_path):
    return LayoutStore(tmp_path / "store").ensure()


def test_the_intact_base_image_is_read(store):
    manifest, _ = base_image(store)
    base = base_from_store(store, write_base(store, manifest))
    assert len(base.layers) == 1


def test_a_layer_size_that_the_blob_does_not_have_is_refused(store):
    manifest, _ = base_image(store)
    manifest["layers"][0]["size"] += 1000
    refused(store, write_base(store, manifest), "base image", manifest["layers"][0]["digest"], "bytes")


def test_a_negative_layer_size_is_refused(store):
    manifest, _ = base_image(store)
    manifest["layers"][0]["size"] = -5
    refused(store, write_base(store, manifest), "size")


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_corrupted_base_layer_is_refused(store, compression):
    manifest, _ = base_image(store, compression)
    ref = write_base(store, manifest)
    path = store.blob_path(manifest["layers"][0]["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    line = refused(store, ref, "corrupt")
    assert "base image" in line or manifest["layers"][0]["digest"] in line


@pytest.mark.parametrize("config", [b"not json", b"[]", b'{"rootfs": {"diff_ids": "sha256:x"}}',
                                    b'{"rootfs": {"type": "layers"}}', b"[" * 100_000],
                         ids=["not-json", "list", "diff_ids-string", "no-diff_ids", "nested"])
def test_a_malformed_base_config_is_refused(store, config):
    manifest, _ = base_image(store)
    refused(store, write_base(store, manifest, config), "config")


def test_a_wrong_diff_id_is_refused(store):
    manifest, config = base_image(store)
    config["rootfs"]["diff_ids"] = [str(Digest.of(b"some other layer"))]
    line = refused(store, write_base(store, manifest, json.dumps(config).encode()), "diff_id")
    assert manifest["layers"][0]["digest"] in line


@pytest.mark.parametrize("body", [b"[]", b'"hello"', b"{nope", b'{"mediaType": 5}'])
def test_a_base_that_is_no_manifest_is_refused(store, body):
    refused(store, f"localhost:5000/base@{store.put_blob(body)}")


def test_an_index_with_a_garbled_entry_is_refused(store):
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": "sha256:nothex", "size": 1,
                            "platform": {"os": "linux", "architecture": "amd64"}}]}
    refused(store, f"localhost:5000/base@{store.put_blob(json.dumps(index).encode())}")
