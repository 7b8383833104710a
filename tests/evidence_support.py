"""A small image in any place, for the evidence tests (signatures, provenance) that need a subject."""

from __future__ import annotations

from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import EMPTY_DESCRIPTOR, EMPTY_JSON, ManifestBytes
from imagebuild.stores.place import ImagePlace, manifest_of, put_bytes


def small_image(place: ImagePlace, content: bytes = b"layer bytes", tag: str = "v1") -> ManifestBytes:
    """A one-layer image (`content` its layer) written to `place` under `tag`."""
    put_bytes(place, EMPTY_JSON, mt.OCI_EMPTY)
    layer = put_bytes(place, content, mt.OCI_LAYER_GZIP)
    manifest = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                           "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [layer.to_dict()]}))
    place.put_manifest(manifest, [tag])
    return manifest
