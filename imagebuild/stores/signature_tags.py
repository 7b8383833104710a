"""cosign's signature tag: where the sigstore signatures of an image live in its repository.

The signatures of manifest `sha256:<hex>` are one OCI image manifest tagged `sha256-<hex>.sig` in the
same repository: each layer a signed payload (its signature and any certificate in the layer's
annotations), the config an image config listing each layer's digest as a diff_id. cosign and
containers/image (`use-sigstore-attachments: true`) read and write this shape. A tag, not a referrer:
so `stores/copy.copy` carries it by name. This module knows the shape only; evidence/signatures.py
makes and checks the signatures themselves.
"""

from __future__ import annotations

from typing import Sequence

from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import Descriptor, MalformedError, ManifestBytes, ParsedManifest
from imagebuild.stores.place import ImagePlace, manifest_of, put_bytes, referrers_tag

# Signatures pile up (one per key and signing); past this many the manifest is refused, not read.
MAX_SIGNATURE_LAYERS = 256
# A signed payload names an image in some hundred bytes; the config lists one digest per signature. A
# signature manifest's blobs are copied with it, so their sizes are bounded before any is fetched.
MAX_SIGNATURE_BYTES = 1024 * 1024


def signature_tag(subject: str) -> str:
    """The tag of `subject`'s signatures: `sha256-<hex>.sig`."""
    return referrers_tag(subject) + ".sig"


def signature_layers(place: ImagePlace, manifest: ManifestBytes | None) -> list[Descriptor]:
    """The layers (one per signature) of a signature manifest `place` holds, checked; none for None.
    A manifest of another shape is `place`'s malformed error."""
    if manifest is None:
        return []
    try:
        if manifest.media_type != mt.OCI_MANIFEST:
            raise MalformedError(f"it is a {manifest.media_type}, not an OCI image manifest")
        parsed = ParsedManifest.parse(manifest.raw, manifest.media_type)
        layers = parsed.layers
        if len(layers) > MAX_SIGNATURE_LAYERS:
            raise MalformedError(f"it lists {len(layers)} signatures, over {MAX_SIGNATURE_LAYERS}")
        if parsed.config.size > MAX_SIGNATURE_BYTES:
            raise MalformedError(f"its config is {parsed.config.size} bytes, over {MAX_SIGNATURE_BYTES}")
        for layer in layers:   # of any media type: one of another kind is passed over when verifying
            if layer.size > MAX_SIGNATURE_BYTES:
                raise MalformedError(f"signature {layer.digest} is {layer.size} bytes, over {MAX_SIGNATURE_BYTES}")
    except MalformedError as exc:
        raise place.malformed(f"signature manifest {manifest.digest}", exc) from None
    return list(layers)


def write_signatures(place: ImagePlace, subject: str, layers: Sequence[Descriptor]) -> ManifestBytes:
    """Tag `subject`'s signature manifest in `place` anew, listing `layers` (their blobs already there)."""
    config = {"architecture": "", "config": {}, "os": "",
              "rootfs": {"type": "layers", "diff_ids": [str(layer.digest) for layer in layers]}}
    config_descriptor = put_bytes(place, canonical_json(config), mt.OCI_CONFIG)
    manifest = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_descriptor.to_dict(),
        "layers": [layer.to_dict() for layer in layers]}))
    place.put_manifest(manifest, [signature_tag(subject)])
    return manifest


def same_signature(a: Descriptor, b: Descriptor) -> bool:
    """One signature: the same payload, media type and annotations (where the signature itself is)."""
    return (a.media_type, a.digest, dict(a.annotations)) == (b.media_type, b.digest, dict(b.annotations))


def merged_layers(ours: Sequence[Descriptor], theirs: Sequence[Descriptor]) -> list[Descriptor]:
    """`ours`, then each of `theirs` that is not among them: signatures are only ever added."""
    out = list(ours)
    out += [layer for layer in theirs if not any(same_signature(layer, kept) for kept in out)]
    return out
