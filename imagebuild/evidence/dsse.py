"""DSSE v1 envelopes (the signed wrapper of in-toto attestations): sign a payload, open one checked.

An envelope is JSON `{"payload": base64, "payloadType": TYPE, "signatures": [{"keyid", "sig"}]}`; each
signature is over the pre-authentication encoding (PAE)
`DSSEv1 <len(TYPE)> TYPE <len(payload)> payload` (lengths in ASCII decimal, one space between fields),
so the type cannot be swapped without breaking the signature. The signature is ECDSA over SHA-256, DER,
in base64 (keys.sign_bytes). `keyid` is only a hint: `open_envelope` tries every given key on every
signature and reports the id of the key that verified, computed from the key itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Iterable

from imagebuild.errors import EvidenceError
from imagebuild.evidence.keys import key_id, sign_bytes, verifying_key

# Envelopes are read whole: bounded so a hostile registry cannot make them large. An attachment's
# payload is bounded the same (stores/attachments.MAX_PAYLOAD).
MAX_ENVELOPE = 16 * 1024 * 1024
MAX_SIGNATURES = 16
MAX_SIGNATURE_B64 = 4096       # an ECDSA P-521 DER signature is under 140 bytes


def pae(payload_type: str, payload: bytes) -> bytes:
    """The pre-authentication encoding: the bytes a DSSE signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_envelope(payload: bytes, payload_type: str, key) -> bytes:
    """A DSSE v1 envelope of `payload` signed with the private `key`, as compact JSON bytes."""
    signature = sign_bytes(key, pae(payload_type, payload))
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_id(key), "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode("utf-8")


def open_envelope(envelope: bytes, keys: Iterable) -> tuple[str, bytes, str]:
    """(payload type, payload, id of the key that verified) of a DSSE envelope. EvidenceError (exit 2)
    when it is malformed or too large, or none of `keys` verifies any of its signatures."""
    keys = list(keys)
    if not keys:
        raise EvidenceError("no key to verify the envelope with", hint="pass the public key with --key")
    payload_type, payload, signatures = _parse(envelope)
    signed = pae(payload_type, payload)
    for signature in signatures:
        key = verifying_key(keys, signature, signed)
        if key is not None:
            return payload_type, payload, key_id(key)
    raise EvidenceError(f"no given key verifies the {payload_type} envelope "
                        f"({len(signatures)} signature{'s' if len(signatures) != 1 else ''})",
                        hint="pass the public key of the key that signed it")


def _parse(envelope: bytes) -> tuple[str, bytes, list[bytes]]:
    if len(envelope) > MAX_ENVELOPE:
        raise _malformed(f"it is {len(envelope)} bytes, over {MAX_ENVELOPE}")
    try:
        document = json.loads(envelope)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("it is not JSON") from None
    if not isinstance(document, dict):
        raise _malformed("it is not a JSON object")
    payload_type, payload, signatures = (document.get(name) for name in ("payloadType", "payload", "signatures"))
    if not isinstance(payload_type, str) or not payload_type:
        raise _malformed("payloadType is missing or not a string")
    if not isinstance(payload, str):
        raise _malformed("payload is missing or not a string")
    if not isinstance(signatures, list) or not signatures:
        raise _malformed("it has no signatures")
    if len(signatures) > MAX_SIGNATURES:
        raise _malformed(f"it has {len(signatures)} signatures, over {MAX_SIGNATURES}")
    decoded = []
    for entry in signatures:
        sig = entry.get("sig") if isinstance(entry, dict) else None
        if not isinstance(sig, str) or not sig or len(sig) > MAX_SIGNATURE_B64:
            raise _malformed("a signature has no `sig` string of a plausible size")
        decoded.append(_b64(sig, "a signature"))
    return payload_type, _b64(payload, "the payload"), decoded


def _b64(text: str, what: str) -> bytes:
    """Standard or URL-safe base64, padded or not: DSSE lets a signer use either."""
    try:
        raw = text.encode("ascii").translate(bytes.maketrans(b"-_", b"+/")).rstrip(b"=")
        return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise _malformed(f"{what} is not base64") from None


def _malformed(why: str) -> EvidenceError:
    return EvidenceError(f"the DSSE envelope is malformed: {why}",
                         hint="it was not written by a DSSE signer, or was damaged")



def read_unverified(envelope: bytes) -> tuple[str, bytes]:
    """(payload type, payload) of a well-formed envelope, its signatures unchecked: for showing what
    an envelope claims, never for a decision. EvidenceError when it is malformed."""
    payload_type, payload, _ = _parse(envelope)
    return payload_type, payload
