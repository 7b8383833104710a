"""cosign-format image signatures in memory: the payload, the `sha256-<hex>.sig` manifest, verification,
and copy carrying (and merging) signatures."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from imagebuild.errors import EvidenceError, ImageBuildError
from imagebuild.evidence.keys import key_id
from imagebuild.evidence.signatures import (SIGNATURE_ANNOTATION, parse_simple_signing, sign_image,
                                            simple_signing_payload, verify_image)
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import MalformedError, ParsedManifest, parse_config
from imagebuild.stores.copy import copy
from imagebuild.stores.memory import MemoryPlace
from imagebuild.stores.place import manifest_of
from imagebuild.stores.signature_tags import signature_tag
from tests.evidence_support import small_image

REPO = "127.0.0.1:5000/acme/hello"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def test_the_payload_is_cosigns_simple_signing_json():
    digest = "sha256:" + "ab" * 32
    assert simple_signing_payload(digest, REPO) == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/acme/hello"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    assert parse_simple_signing(simple_signing_payload(digest, REPO)) == (digest, REPO)


def test_what_containers_image_writes_is_read_too():
    digest = "sha256:" + "cd" * 32
    payload = json.dumps({"critical": {"type": "cosign container image signature",
                                       "image": {"docker-manifest-digest": digest},
                                       "identity": {"docker-reference": REPO}},
                          "optional": {"creator": "containers/image 5.34", "timestamp": 1700000000}}).encode()
    assert parse_simple_signing(payload) == (digest, REPO)


@pytest.mark.parametrize("change", [
    lambda d: d.update(extra=1),
    lambda d: d["critical"].update(type="atomic container signature"),
    lambda d: d["critical"]["image"].update({"docker-manifest-digest": "md5:00"}),
    lambda d: d["critical"]["identity"].update({"docker-reference": 7}),
    lambda d: d["critical"].pop("identity"),
    lambda d: d.update(optional={"timestamp": 1.5}),
    lambda d: d.update(optional=[]),
])
def test_a_payload_of_another_shape_is_refused(change):
    document = json.loads(simple_signing_payload("sha256:" + "ab" * 32, REPO))
    change(document)
    with pytest.raises(MalformedError):
        parse_simple_signing(json.dumps(document).encode())


def test_a_signed_image_verifies_with_its_key_only():
    place = MemoryPlace()
    image = small_image(place)
    layer = sign_image(place, image.digest, REPO, KEY)
    assert verify_image(place, image.digest, [OTHER.public_key(), KEY.public_key()]) == [key_id(KEY)]
    with pytest.raises(EvidenceError, match="none of the 1 signature .* verifies") as failure:
        verify_image(place, image.digest, [OTHER.public_key()])
    assert failure.value.exit_code == 2
    # The signature is plain ECDSA/SHA-256 over the payload bytes, as cosign checks it.
    payload = place.blobs[str(layer.digest)]
    KEY.public_key().verify(base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION]), payload,
                            ec.ECDSA(hashes.SHA256()))


def test_the_signature_manifest_has_cosigns_shape():
    place = MemoryPlace()
    image = small_image(place)
    sign_image(place, image.digest, REPO, KEY)
    manifest = place.manifest(signature_tag(image.digest))
    assert signature_tag(image.digest) == "sha256-" + image.digest.hex + ".sig"
    parsed = ParsedManifest.parse(manifest.raw, manifest.media_type)
    assert manifest.media_type == mt.OCI_MANIFEST and parsed.config.media_type == mt.OCI_CONFIG
    (layer,) = parsed.layers
    assert layer.media_type == mt.COSIGN_SIMPLESIGNING and set(layer.annotations) == {SIGNATURE_ANNOTATION}
    config = parse_config(place.blobs[str(parsed.config.digest)])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [str(layer.digest)]}


def test_signatures_are_added_not_replaced_and_not_repeated():
    place = MemoryPlace()
    image = small_image(place)
    sign_image(place, image.digest, REPO, KEY)
    sign_image(place, image.digest, REPO, OTHER)
    sign_image(place, image.digest, REPO, KEY)          # already signed by this key: kept, not doubled
    layers = ParsedManifest.parse(place.manifest(signature_tag(image.digest)).raw, mt.OCI_MANIFEST).layers
    assert len(layers) == 2
    assert verify_image(place, image.digest, [KEY, OTHER]) == [key_id(KEY), key_id(OTHER)]


def test_a_signature_of_another_digest_does_not_count():
    place = MemoryPlace()
    image, other = small_image(place), small_image(place, b"other layer")
    sign_image(place, other.digest, REPO, KEY)
    # Someone copies other's signatures under image's tag: the payload still names other.
    place.tagged[signature_tag(image.digest)] = place.tagged[signature_tag(other.digest)]
    with pytest.raises(EvidenceError, match="verifies"):
        verify_image(place, image.digest, [KEY])


def test_an_unsigned_image_and_a_missing_image_are_refused():
    place = MemoryPlace()
    image = small_image(place)
    with pytest.raises(EvidenceError, match="has no signature"):
        verify_image(place, image.digest, [KEY])
    with pytest.raises(EvidenceError, match="does not hold"):
        sign_image(place, "sha256:" + "0" * 64, REPO, KEY)


def test_a_malformed_signature_manifest_is_the_places_error():
    place = MemoryPlace()
    image = small_image(place)
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}))
    place.put_manifest(index, [signature_tag(image.digest)])
    with pytest.raises(ImageBuildError, match="malformed"):
        verify_image(place, image.digest, [KEY])


def test_copy_carries_signatures_and_merges_with_the_targets():
    home, target = MemoryPlace("home"), MemoryPlace("target")
    image = small_image(home)
    sign_image(home, image.digest, REPO, KEY)
    copy(home, target, image.digest, ["v1"], attachments=[mt.COSIGN_SIMPLESIGNING])
    assert verify_image(target, image.digest, [KEY]) == [key_id(KEY)]

    sign_image(target, image.digest, REPO, OTHER)        # the target gains a signature of its own...
    sign_image(home, image.digest, "elsewhere/hello", KEY)   # ... and home another one
    copy(home, target, image.digest, ["v1"], attachments=True)
    assert verify_image(target, image.digest, [KEY, OTHER]) == [key_id(KEY), key_id(OTHER)]
    layers = ParsedManifest.parse(target.manifest(signature_tag(image.digest)).raw, mt.OCI_MANIFEST).layers
    assert len(layers) == 3


def test_copy_without_attachments_leaves_signatures_behind():
    home, target = MemoryPlace("home"), MemoryPlace("target")
    image = small_image(home)
    sign_image(home, image.digest, REPO, KEY)
    copy(home, target, image.digest, ["v1"])
    assert target.manifest(signature_tag(image.digest)) is None
