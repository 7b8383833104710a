"""Copying images between local layouts, keeping manifest bytes exact."""

from __future__ import annotations

import shutil

from imagebuild.oci.model import Descriptor
from imagebuild.stores.layout import LayoutStore


def copy_image(source: LayoutStore, descriptor: Descriptor, target: LayoutStore,
               ref_names: list[str] | tuple[str, ...]) -> Descriptor:
    """Copy one image's blobs (verified) and manifest into `target` and tag it there."""
    target.ensure()
    manifest = source.read_manifest(descriptor.digest)
    for blob in manifest.blobs():
        if target.has_blob(blob.digest):
            continue
        with source.open_blob(blob.digest) as reader, target.blob_writer() as writer:
            shutil.copyfileobj(reader, writer.file, 1024 * 1024)
            reader.read()
            writer.commit(blob.digest)
    plain = Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                       platform=descriptor.platform)
    target.put_blob(manifest.raw)
    for name in ref_names:
        target.tag(name, plain)
    return plain
