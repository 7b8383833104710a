"""Image signatures in the sigstore (cosign) format, with a key pair: written and verified.

A signature signs a simple-signing payload, compact JSON with exactly these fields:

    {"critical": {"identity": {"docker-reference": "HOST/REPO"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": null}

with ECDSA over SHA-256 (keys.sign_bytes). The payload is a layer of media type
`application/vnd.dev.cosign.simplesigning.v1+json` whose annotation `dev.cosignproject.cosign/signature`
holds the signature in base64, in the image manifest tagged `sha256-<hex>.sig` beside the image
(stores/signature_tags.py). cosign verifies it, and so does containers/image (skopeo, podman) under a
`sigstoreSigned` policy with `use-sigstore-attachments: true`; `verify_image` reads what they write the
same way, checking the payload as strictly as containers/image does.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable

from imagebuild.errors import EvidenceError
from imagebuild.evidence.keys import key_id, public_key_of, sign_bytes, verifying_key
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest, is_digest
from imagebuild.oci.model import Descriptor, MalformedError
from imagebuild.stores.place import ImagePlace, put_bytes
from imagebuild.stores.signature_tags import signature_layers, signature_tag, write_signatures

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
# A simple-signing payload is a few hundred bytes; a larger layer is no signature of ours to read.
MAX_PAYLOAD = 64 * 1024


def simple_signing_payload(manifest_digest: str, docker_reference: str) -> bytes:
    """The payload a signature of `manifest_digest` as `docker_reference` signs, as cosign writes it."""
    payload = {"critical": {"identity": {"docker-reference": docker_reference},
                            "image": {"docker-manifest-digest": str(manifest_digest)},
                            "type": SIGNATURE_TYPE},
               "optional": None}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def parse_simple_signing(payload: bytes) -> tuple[str, str]:
    """(manifest digest, docker reference) a payload names; MalformedError unless it has exactly the
    fields above (`optional` null, or an object whose `creator` is a string and `timestamp` an integer)."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise MalformedError("the signed payload is not JSON") from None
    critical = _exact(document, {"critical", "optional"}, "the payload")["critical"]
    optional = document["optional"]
    if optional is not None:
        if not isinstance(optional, dict):
            raise MalformedError("the payload's optional is neither null nor an object")
        if "creator" in optional and not isinstance(optional["creator"], str):
            raise MalformedError("the payload's optional.creator is not a string")
        stamp = optional.get("timestamp")
        if "timestamp" in optional and (isinstance(stamp, bool) or not isinstance(stamp, (int, float))
                                        or stamp != int(stamp)):
            raise MalformedError("the payload's optional.timestamp is not an integer")
    _exact(critical, {"type", "image", "identity"}, "the payload's critical")
    if critical["type"] != SIGNATURE_TYPE:
        raise MalformedError(f"the payload's type is {str(critical['type'])[:80]!r}, not {SIGNATURE_TYPE!r}")
    digest = _exact(critical["image"], {"docker-manifest-digest"}, "critical.image")["docker-manifest-digest"]
    reference = _exact(critical["identity"], {"docker-reference"}, "critical.identity")["docker-reference"]
    if not isinstance(digest, str) or not is_digest(digest):
        raise MalformedError("the payload's docker-manifest-digest is not a sha256 digest")
    if not isinstance(reference, str) or not reference:
        raise MalformedError("the payload's docker-reference is not a string")
    return digest, reference


def sign_image(place: ImagePlace, manifest_digest: str, docker_reference: str, key) -> Descriptor:
    """Sign `manifest_digest` as `docker_reference` (HOST/REPO, the repository it is signed for) with the
    private `key`, adding the signature to those `place` holds under `sha256-<hex>.sig`. A valid signature
    by this key of this digest and reference, when there is one already, is kept instead of a second.
    Returns the signature layer's descriptor."""
    manifest_digest = str(Digest(manifest_digest))
    if place.manifest(manifest_digest) is None:
        raise EvidenceError(f"{place.label} does not hold manifest {manifest_digest}",
                            hint="push or bake the image before signing it")
    layers = signature_layers(place, place.manifest(signature_tag(manifest_digest)))
    for layer in layers:
        found = _verified(place, layer, [public_key_of(key)])
        if found is not None and found[1] == (manifest_digest, docker_reference):
            return layer
    payload = simple_signing_payload(manifest_digest, docker_reference)
    signature = base64.b64encode(sign_bytes(key, payload)).decode("ascii")
    layer = put_bytes(place, payload, mt.COSIGN_SIMPLESIGNING).with_annotations(**{SIGNATURE_ANNOTATION: signature})
    write_signatures(place, manifest_digest, layers + [layer])
    return layer


def verify_image(place: ImagePlace, manifest_digest: str, keys: Iterable) -> list[str]:
    """The ids of `keys` that verified a signature in `place` whose payload names `manifest_digest`
    (in the order of `keys`). EvidenceError (exit 2) when none did, or the image has no signature."""
    keys = list(keys)
    manifest_digest = str(Digest(manifest_digest))
    layers = signature_layers(place, place.manifest(signature_tag(manifest_digest)))
    if not layers:
        raise EvidenceError(f"image {manifest_digest} in {place.label} has no signature",
                            hint="sign it with `imagebuild sign` or `bake --sign`")
    verified: set[str] = set()
    for layer in layers:
        found = _verified(place, layer, [key for key in keys if key_id(key) not in verified])
        if found is not None and found[1][0] == manifest_digest:
            verified.add(key_id(found[0]))
    if not verified:
        raise EvidenceError(f"none of the {len(layers)} signature{'s' if len(layers) != 1 else ''} of image "
                            f"{manifest_digest} in {place.label} verifies with the given key"
                            f"{'s' if len(keys) != 1 else ''}", hint="pass the public key of the key that signed it")
    return [key_id(key) for key in keys if key_id(key) in verified]


def _verified(place: ImagePlace, layer: Descriptor, keys: list) -> tuple[Any, tuple[str, str]] | None:
    """(the key, (digest, reference)) of a signature layer that one of `keys` verifies (its payload read
    once); None for another kind of layer, another key's signature, or a signature that does not verify.
    A payload that verifies but is malformed is `place`'s malformed error: its signer wrote nonsense."""
    signature_b64 = layer.annotations.get(SIGNATURE_ANNOTATION)
    if not keys or layer.media_type != mt.COSIGN_SIMPLESIGNING or not signature_b64 or layer.size > MAX_PAYLOAD:
        return None
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    with place.open_blob(layer) as stream:
        payload = stream.read(MAX_PAYLOAD + 1)
    key = verifying_key(keys, signature, payload)
    if key is None:
        return None
    try:
        return key, parse_simple_signing(payload)
    except MalformedError as exc:
        raise place.malformed(f"signature payload {layer.digest}", exc) from None


def _exact(value: Any, fields: set[str], what: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedError(f"{what} is not an object")
    if set(value) != fields:
        raise MalformedError(f"{what} has the fields {sorted(value)[:8]}, not {sorted(fields)}")
    return value
