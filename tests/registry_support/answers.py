"""A small valid image as the bytes a registry would serve, and pulls against a fake registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import pull_image
from tests.registry_support.fake_registry import Answer, FakeRegistry

REPOSITORY = "acme/hello"
TAG = "v1"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        data = b"hello\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class ImageParts:
    layer: bytes
    config: bytes
    manifest: dict

    def manifest_bytes(self) -> bytes:
        return json.dumps(self.manifest).encode()


def valid_image() -> ImageParts:
    layer = layer_bytes()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
                "layers": [{"mediaType": mt.OCI_LAYER, "digest": sha(layer), "size": len(layer)}]}
    return ImageParts(layer, config, manifest)


def serve(fake: FakeRegistry, manifest: bytes | Answer, parts: ImageParts | None = None,
          reference: str = TAG) -> Reference:
    """Serve `manifest` under REPOSITORY:reference, and the blobs of `parts`."""
    parts = parts or valid_image()
    answer = manifest if isinstance(manifest, Answer) else Answer(manifest, content_type=mt.OCI_MANIFEST)
    fake.manifest(REPOSITORY, reference, answer)
    for blob in (parts.layer, parts.config):
        fake.blob(REPOSITORY, sha(blob), Answer(blob))
    return Reference.parse(f"{fake.address}/{REPOSITORY}:{reference}")


def pull_error(store: LayoutStore, source: Reference) -> ImageBuildError:
    """The error a pull through a fast-retrying client ends with; fails the test when it succeeds."""
    with RegistryClient(source.registry, backoff=0.001) as client:
        try:
            pull_image(store, source, client=client)
        except ImageBuildError as exc:
            return exc
    raise AssertionError(f"pulling {source} succeeded")


def store_state(store: LayoutStore) -> tuple[dict, list[str]]:
    """The tags, and every blob file, of a store; a blob that does not match its name fails."""
    if not (store.root / "index.json").exists():
        return {}, []
    blobs = []
    for path in sorted((store.root / "blobs" / "sha256").iterdir()):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, f"partial blob {path}"
        blobs.append(path.name)
    return {name: str(d.digest) for name, d in store.refs().items()}, blobs
