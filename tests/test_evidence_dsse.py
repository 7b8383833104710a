"""DSSE envelopes: the pre-authentication encoding, signing, and opening only with a key that verifies."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from imagebuild.errors import EvidenceError
from imagebuild.evidence.dsse import MAX_ENVELOPE, open_envelope, pae, sign_envelope
from imagebuild.evidence.keys import key_id

TYPE = "application/vnd.in-toto+json"


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other():
    return ec.generate_private_key(ec.SECP256R1())


def test_pae_is_the_specifications_encoding():
    # The example of the DSSE protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_an_envelope_opens_with_its_public_key(key, other):
    envelope = sign_envelope(b'{"a": 1}', TYPE, key)
    document = json.loads(envelope)
    assert set(document) == {"payload", "payloadType", "signatures"}
    assert base64.b64decode(document["payload"]) == b'{"a": 1}'
    assert document["signatures"][0]["keyid"] == key_id(key)
    # The signature is plain ECDSA/SHA-256 over the PAE: any DSSE verifier can check it.
    key.public_key().verify(base64.b64decode(document["signatures"][0]["sig"]), pae(TYPE, b'{"a": 1}'),
                            ec.ECDSA(hashes.SHA256()))
    assert open_envelope(envelope, [other.public_key(), key.public_key()]) == (TYPE, b'{"a": 1}', key_id(key))


def test_another_key_does_not_open_it(key, other):
    envelope = sign_envelope(b"x", TYPE, key)
    with pytest.raises(EvidenceError, match="no given key verifies") as failure:
        open_envelope(envelope, [other.public_key()])
    assert failure.value.exit_code == 2


def test_a_changed_payload_or_type_breaks_the_signature(key):
    document = json.loads(sign_envelope(b"payload", TYPE, key))
    for field, value in (("payload", base64.b64encode(b"payloaD").decode()), ("payloadType", "text/plain")):
        forged = dict(document, **{field: value})
        with pytest.raises(EvidenceError, match="no given key verifies"):
            open_envelope(json.dumps(forged).encode(), [key.public_key()])


def test_url_safe_unpadded_base64_is_accepted(key):
    document = json.loads(sign_envelope(b"\xff\xfe?>" * 5, TYPE, key))
    for item in [document] + document["signatures"]:
        field = "payload" if "payload" in item else "sig"
        item[field] = item[field].replace("+", "-").replace("/", "_").rstrip("=")
    assert open_envelope(json.dumps(document).encode(), [key])[1] == b"\xff\xfe?>" * 5


@pytest.mark.parametrize("envelope, message", [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"payload": "", "signatures": [{"sig": "AA=="}]}', "payloadType"),
    (b'{"payloadType": "t", "payload": 3, "signatures": [{"sig": "AA=="}]}', "payload is missing"),
    (b'{"payloadType": "t", "payload": "", "signatures": []}', "no signatures"),
    (b'{"payloadType": "t", "payload": "", "signatures": [{"keyid": "k"}]}', "no `sig`"),
    (b'{"payloadType": "t", "payload": "!!", "signatures": [{"sig": "AA=="}]}', "payload is not base64"),
    (b'{"payloadType": "t", "payload": "", "signatures": [{"sig": "AA=="}' + b',{"sig": "AA=="}' * 16 + b']}',
     "17 signatures"),
    (b" " * (MAX_ENVELOPE + 1), "over"),
])
def test_a_malformed_envelope_is_one_clear_error(key, envelope, message):
    with pytest.raises(EvidenceError, match=message) as failure:
        open_envelope(envelope, [key])
    assert failure.value.exit_code == 2 and "malformed" in failure.value.message


def test_no_key_at_all_is_a_usage_error():
    with pytest.raises(EvidenceError, match="no key"):
        open_envelope(b"{}", [])
