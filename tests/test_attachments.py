"""Attachments by subject, in memory: written once, found by type, checked when read back, and carried by copy."""

import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import EMPTY_DESCRIPTOR, EMPTY_JSON
from imagebuild.stores.attachments import attach, attachments
from imagebuild.stores.copy import copy
from imagebuild.stores.memory import MemoryPlace
from imagebuild.stores.place import manifest_of, put_bytes

SBOM = "application/spdx+json"
PROVENANCE = "application/vnd.in-toto+json"


def _image(place):
    put_bytes(place, EMPTY_JSON, mt.OCI_EMPTY)
    layer = put_bytes(place, b"layer bytes", mt.OCI_LAYER_GZIP)
    manifest = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [layer.to_dict()]}))
    place.put_manifest(manifest, ["v1"])
    return manifest


def test_attachments_are_found_by_subject_and_type():
    place = MemoryPlace()
    image = _image(place)
    attach(place, image, SBOM, b'{"spdxVersion": "SPDX-2.3"}', "application/spdx+json")
    attach(place, image, PROVENANCE, b"{}", "application/vnd.dsse.envelope.v1+json", {"k": "v"})
    attach(place, image, SBOM, b'{"spdxVersion": "SPDX-2.3"}', "application/spdx+json")   # again: listed once

    assert sorted(a.artifact_type for a in attachments(place, image.digest)) == sorted([SBOM, PROVENANCE])
    (sbom,) = attachments(place, image.digest, SBOM)
    assert sbom.payload == b'{"spdxVersion": "SPDX-2.3"}'
    (provenance,) = attachments(place, image.digest, PROVENANCE)
    assert provenance.annotations == {"k": "v"}
    assert attachments(place, "sha256:" + "0" * 64) == []


def test_a_tampered_payload_is_refused():
    place = MemoryPlace()
    image = _image(place)
    attach(place, image, SBOM, b"genuine", "application/spdx+json")
    from imagebuild.oci.digest import Digest
    place.blobs[str(Digest.of(b"genuine"))] = b"forged!"
    with pytest.raises(ImageBuildError):
        attachments(place, image.digest, SBOM)


def test_copy_carries_attachments_to_another_place():
    home, target = MemoryPlace("home"), MemoryPlace("target")
    image = _image(home)
    attach(home, image, SBOM, b"sbom", "application/spdx+json")
    attach(home, image, PROVENANCE, b"envelope", "application/vnd.dsse.envelope.v1+json")
    copy(home, target, image.digest, ["v1"], attachments=True)
    assert sorted(a.payload for a in attachments(target, image.digest)) == [b"envelope", b"sbom"]
