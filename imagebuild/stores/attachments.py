"""Attachments: small artifacts (an SBOM, a provenance envelope, an attestation) whose `subject` is an
image manifest, found again by the subject's digest.

An attachment is an OCI image manifest with an `artifactType`, the empty config, one layer holding the
payload, and a `subject`. It is listed through the place's referrers: the OCI 1.1 referrers API where a
registry has one, the referrers tag schema (`sha256-<hex>`) elsewhere, the local store included. So
`stores/copy.copy(..., attachments=True)` carries every attachment along with the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import (EMPTY_DESCRIPTOR, EMPTY_JSON, Descriptor, MalformedError, ManifestBytes,
                                  ParsedManifest, load_json_object)
from imagebuild.stores.place import ImagePlace, descriptor_of, manifest_of, put_bytes

# An attachment's payload is read whole into memory, so a hostile place cannot make it large; nor can it
# make many of them add up (an image has some: two SBOMs a platform, provenance, attestations).
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_PAYLOADS = 4 * MAX_PAYLOAD


@dataclass(frozen=True)
class Attachment:
    """One attachment as found: its manifest's descriptor and annotations, and its payload's bytes."""
    descriptor: Descriptor
    artifact_type: str
    payload_media_type: str
    payload: bytes
    annotations: Mapping[str, str]


def attachment_manifest(subject: ManifestBytes, artifact_type: str, payload: Descriptor,
                        annotations: Mapping[str, str] | None = None) -> ManifestBytes:
    """The manifest of an attachment of `payload` to `subject` (canonical bytes, so the same inputs
    always give the same digest)."""
    manifest: dict = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR.to_dict(), "layers": [payload.to_dict()],
        "subject": descriptor_of(subject).to_dict(),
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return manifest_of(canonical_json(manifest))


def attach(place: ImagePlace, subject: ManifestBytes, artifact_type: str, payload: bytes,
           payload_media_type: str, annotations: Mapping[str, str] | None = None) -> Descriptor:
    """Write `payload` as an attachment of `subject` into `place` and list it among the subject's
    referrers. Writing the same attachment twice lists it once."""
    if len(payload) > MAX_PAYLOAD:
        raise ImageBuildError(f"the {artifact_type} attachment is {len(payload)} bytes, over the "
                              f"{MAX_PAYLOAD} bytes an attachment may hold", hint="report this")
    put_bytes(place, EMPTY_JSON, mt.OCI_EMPTY)
    layer = put_bytes(place, payload, payload_media_type)
    manifest = attachment_manifest(subject, artifact_type, layer, annotations)
    place.put_manifest(manifest)
    descriptor = descriptor_of(manifest)
    place.add_referrers(str(subject.digest), [(descriptor, manifest)])   # its bytes known: none read back
    return descriptor


def attachments(place: ImagePlace, subject: str, artifact_type: str | None = None) -> list[Attachment]:
    """The attachments of `subject` in `place` (of `artifact_type` only, when given), each checked:
    its manifest names `subject`, and its payload has the digest and size the manifest says. Anything
    else is the place's malformed error. Referrers that are no attachment of this shape (a foreign
    tool's artifact with several layers) are passed over."""
    found = []
    total = 0
    for referrer in place.referrers(subject, artifact_type):
        manifest = place.manifest(referrer.digest)
        if manifest is None:
            continue     # listed but gone: a registry may index lazily, or a delete raced us
        try:
            parsed = ParsedManifest.parse(manifest.raw, manifest.media_type)
            data = load_json_object(manifest.raw, "attachment manifest")
        except MalformedError as exc:
            raise place.malformed(f"attachment {referrer.digest}", exc) from None
        kind = data.get("artifactType") or parsed.config.media_type
        if (data.get("subject") or {}).get("digest") != subject or len(parsed.layers) != 1:
            continue
        if artifact_type is not None and kind != artifact_type:
            continue
        layer = parsed.layers[0]
        if layer.size > MAX_PAYLOAD:
            raise place.malformed(f"attachment {referrer.digest}",
                                  MalformedError(f"its payload is {layer.size} bytes, over {MAX_PAYLOAD}"))
        total += layer.size
        if total > MAX_PAYLOADS:
            raise place.malformed(f"attachment {referrer.digest}", MalformedError(
                f"the attachments of {subject} hold more than {MAX_PAYLOADS} bytes in all"))
        with place.open_blob(layer) as stream:
            payload = stream.read(MAX_PAYLOAD + 1)
        if len(payload) != layer.size or Digest.of(payload) != layer.digest:
            raise place.malformed(f"attachment {referrer.digest}",
                                  MalformedError("its payload does not match its digest"))
        annotations = data.get("annotations") if isinstance(data.get("annotations"), dict) else {}
        found.append(Attachment(descriptor_of(manifest), kind, layer.media_type, payload,
                                {k: v for k, v in annotations.items() if isinstance(v, str)}))
    return found

