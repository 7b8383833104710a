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


# -- a place that lists hostile referrers or signatures: refused whole, the target left as it was --------

def _referrers_tag(place, image, entries):
    """Write `entries` as the subject's referrers index (the tag schema the memory place reads)."""
    from imagebuild.stores.place import referrers_tag
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}))
    place.put_manifest(index, [referrers_tag(image.digest)])


def _entry(digest, media_type=mt.OCI_MANIFEST, size=100):
    return {"mediaType": media_type, "digest": digest, "size": size, "artifactType": SBOM}


def _copy_refused(home, image, match):
    target = MemoryPlace("target")
    with pytest.raises(ImageBuildError, match=match) as refused:
        copy(home, target, image.digest, ["v1"], attachments=True)
    assert refused.value.exit_code == 4     # the place's malformed error: a store's here, a registry's 5
    assert target.blobs == {} and target.tagged == {}, "a refused copy wrote to the target"
    with pytest.raises(ImageBuildError, match=match):
        attachments(home, image.digest)


def test_a_referrers_index_listing_the_image_itself_is_a_loop_refused_before_any_write():
    home = MemoryPlace("home")
    image = _image(home)
    _referrers_tag(home, image, [_entry(image.digest, size=len(image.raw))])
    _copy_refused(home, image, "among its own referrers")


def test_a_referrers_index_of_too_many_entries_is_refused_before_any_write():
    from imagebuild.stores.place import MAX_REFERRERS
    home = MemoryPlace("home")
    image = _image(home)
    entries = [_entry("sha256:%064x" % n) for n in range(MAX_REFERRERS + 1)]
    _referrers_tag(home, image, entries)
    _copy_refused(home, image, f"lists {MAX_REFERRERS + 1} manifests, over {MAX_REFERRERS}")


def test_a_referrer_that_is_no_manifest_is_refused_before_any_write():
    home = MemoryPlace("home")
    image = _image(home)
    _referrers_tag(home, image, [_entry("sha256:" + "1" * 64, media_type=mt.OCI_LAYER_GZIP)])
    _copy_refused(home, image, "not a manifest's")


def test_a_referrer_naming_a_huge_blob_is_not_fetched():
    from imagebuild.stores.copy import MAX_ATTACHMENT_BYTES
    home = MemoryPlace("home")
    image = _image(home)
    huge = {"mediaType": "application/spdx+json", "digest": "sha256:" + "2" * 64, "size": 2 ** 40}
    referrer = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": SBOM,
        "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [huge], "subject": {
            "mediaType": mt.OCI_MANIFEST, "digest": image.digest, "size": len(image.raw)}}))
    home.put_manifest(referrer)
    _referrers_tag(home, image, [_entry(referrer.digest, size=len(referrer.raw))])
    target = MemoryPlace("target")
    with pytest.raises(ImageBuildError, match=f"over the {MAX_ATTACHMENT_BYTES // 2 ** 20} MiB"):
        copy(home, target, image.digest, ["v1"], attachments=True)
    assert target.blobs == {} and target.tagged == {}


@pytest.mark.parametrize("layer, match", [
    ({"mediaType": mt.COSIGN_SIMPLESIGNING, "digest": "sha256:" + "3" * 64, "size": 2 ** 40}, "over 1048576"),
    ({"mediaType": mt.COSIGN_SIMPLESIGNING, "digest": "sha256:XYZ", "size": 10}, "not sha256: and 64 hex digits"),
], ids=["huge", "bad-digest"])
def test_a_signature_manifest_naming_absurd_layers_is_refused_before_any_write(layer, match):
    from imagebuild.stores.signature_tags import signature_tag
    home = MemoryPlace("home")
    image = _image(home)
    signatures = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [layer]}))
    home.put_manifest(signatures, [signature_tag(image.digest)])
    target = MemoryPlace("target")
    with pytest.raises(ImageBuildError, match=match) as refused:
        copy(home, target, image.digest, ["v1"], attachments=True)
    assert refused.value.exit_code == 4 and "\n" not in refused.value.one_line()
    assert target.blobs == {} and target.tagged == {}, "a refused copy wrote to the target"


def test_attachments_that_add_up_past_the_bound_are_refused_before_they_are_all_read(monkeypatch):
    from imagebuild.stores import attachments as attachments_module
    place = MemoryPlace()
    image = _image(place)
    for n in range(5):
        attach(place, image, SBOM, b"%d" % n * 100, "application/spdx+json")
    monkeypatch.setattr(attachments_module, "MAX_PAYLOADS", 450)
    with pytest.raises(ImageBuildError, match="more than 450 bytes in all"):
        attachments(place, image.digest, SBOM)


def test_copy_of_an_index_carries_the_attachments_of_each_platforms_image():
    home, target = MemoryPlace("home"), MemoryPlace("target")
    child = _image(home)
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": child.digest, "size": len(child.raw),
         "platform": {"os": "linux", "architecture": "arm64"}}]}))
    home.put_manifest(index, ["v1"])
    attach(home, child, SBOM, b"arm64 sbom", "application/spdx+json")
    attach(home, index, SBOM, b"arm64 sbom", "application/spdx+json")
    copy(home, target, index.digest, ["v1"], attachments=True)
    assert [a.payload for a in attachments(target, child.digest, SBOM)] == [b"arm64 sbom"]
    assert [a.payload for a in attachments(target, index.digest, SBOM)] == [b"arm64 sbom"]
