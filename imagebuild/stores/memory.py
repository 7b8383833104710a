"""An image place held in memory: for tests and dry runs; the same rules as the layout place."""

from __future__ import annotations

import contextlib
import io
from typing import BinaryIO, ContextManager, Sequence

from imagebuild.errors import CorruptBlobError, StoreError
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import Descriptor, Platform
from imagebuild.registry.client import ManifestBytes
from imagebuild.stores.place import ImagePlace, LocalPlace, Opener, manifest_of


class MemoryPlace(LocalPlace):
    """Blobs and manifests in dicts. `host` set to a name makes places of one host lend blobs by mount."""

    def __init__(self, label: str = "memory", host: str | None = None):
        self.label = label
        self.host = host
        self.blobs: dict[str, bytes] = {}
        self.tagged: dict[str, str] = {}
        self.mounted: list[str] = []

    def tags(self) -> list[str]:
        return sorted(self.tagged)

    def manifest(self, reference: str) -> ManifestBytes | None:
        digest = reference if is_digest(reference) else self.tagged.get(reference)
        raw = self.blobs.get(digest) if digest else None
        return manifest_of(raw) if raw is not None else None

    def put_manifest(self, manifest: ManifestBytes, tags: Sequence[str] = (),
                     platform: Platform | None = None) -> None:
        self.blobs[manifest.digest] = manifest.raw
        for tag in tags:
            self.tagged[tag] = manifest.digest

    def remove(self, tag: str) -> bool:
        self.tagged.pop(tag, None)
        return True

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def open_blob(self, descriptor: Descriptor) -> ContextManager[BinaryIO]:
        data = self.blobs.get(descriptor.digest)
        if data is None:
            raise StoreError(f"blob {descriptor.digest} is not in {self.label}")
        if Digest.of(data) != descriptor.digest:
            raise CorruptBlobError(f"blob {descriptor.digest} in {self.label} is corrupt")
        if len(data) != descriptor.size:
            raise StoreError(f"blob {descriptor.digest} in {self.label} is {len(data)} bytes, "
                             f"but the image's manifest says {descriptor.size}")
        return contextlib.nullcontext(io.BytesIO(data))

    def put_blob(self, descriptor: Descriptor, opener: Opener) -> int:
        with opener() as reader:
            data = reader.read()
        if Digest.of(data) != descriptor.digest:
            raise CorruptBlobError(f"received blob does not match {descriptor.digest}",
                                   hint="the source sent different bytes; retry")
        self.blobs[descriptor.digest] = data
        return len(data)

    def mount(self, descriptor: Descriptor, source: ImagePlace) -> bool:
        if not isinstance(source, MemoryPlace) or self.host is None or source.host != self.host or \
                source is self or descriptor.digest not in source.blobs:
            return False
        self.blobs[descriptor.digest] = source.blobs[descriptor.digest]
        self.mounted.append(descriptor.digest)
        return True
