"""Signing keys: generated pairs, encrypted keys and their passphrases, cosign's encrypted format."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import nacl.secret
import nacl.utils
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from imagebuild.errors import EvidenceError
from imagebuild.evidence.keys import (generate_keypair, key_id, load_private_key, load_public_key, sign_bytes,
                                      verifying_key)

SECRET = "correct horse battery staple"


def test_a_generated_pair_signs_and_verifies(tmp_path):
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", None)
    private = load_private_key(tmp_path / "k.key")
    public = load_public_key(tmp_path / "k.pub")
    assert private.curve.name == "secp256r1"
    assert key_id(private) == key_id(public)
    assert key_id(public).startswith("sha256:") and len(key_id(public)) == 71
    signature = sign_bytes(private, b"data")
    assert verifying_key([public], signature, b"data") is public
    assert verifying_key([public], signature, b"other") is None


def test_the_private_key_is_0600_and_the_public_key_readable(tmp_path):
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", None)
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k.pub").st_mode) == 0o644
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp file left


def test_an_encrypted_key_opens_only_with_its_passphrase(tmp_path, monkeypatch):
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", SECRET.encode())
    pem = (tmp_path / "k.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem and SECRET.encode() not in pem
    monkeypatch.setenv("KEY_PASS", SECRET)
    assert key_id(load_private_key(tmp_path / "k.key", "KEY_PASS")) == key_id(load_public_key(tmp_path / "k.pub"))

    with pytest.raises(EvidenceError, match="is encrypted") as missing:
        load_private_key(tmp_path / "k.key")
    monkeypatch.setenv("KEY_PASS", "wrong")
    with pytest.raises(EvidenceError, match="passphrase in KEY_PASS does not open") as wrong:
        load_private_key(tmp_path / "k.key", "KEY_PASS")
    monkeypatch.delenv("KEY_PASS")
    with pytest.raises(EvidenceError, match="KEY_PASS is not set") as unset:
        load_private_key(tmp_path / "k.key", "KEY_PASS")
    assert "--passphrase-env" in missing.value.one_line()
    for failure in (missing, wrong, unset):
        assert failure.value.exit_code == 2
        assert SECRET not in failure.value.one_line() and "wrong" not in failure.value.one_line().split("(")[0]


def test_an_existing_file_is_never_replaced(tmp_path):
    (tmp_path / "k.pub").write_text("keep me")
    with pytest.raises(EvidenceError, match="exists already"):
        generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", None)
    assert (tmp_path / "k.pub").read_text() == "keep me"
    assert not (tmp_path / "k.key").exists()


def test_an_empty_passphrase_and_one_path_for_both_are_refused(tmp_path):
    with pytest.raises(EvidenceError, match="empty"):
        generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", b"")
    with pytest.raises(EvidenceError, match="both"):
        generate_keypair(tmp_path / "k", tmp_path / "k", None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, loader, message", [
    (b"", load_private_key, "not a PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", load_private_key, "not a PEM private key"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", load_public_key, "not a readable"),
    (b"x" * 70000, load_public_key, "larger than"),
])
def test_a_file_that_is_no_key_is_one_clear_error(tmp_path, content, loader, message):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(EvidenceError, match=message):
        loader(tmp_path / "f")


def test_a_missing_file_and_a_private_key_given_as_public_are_refused(tmp_path):
    with pytest.raises(EvidenceError, match="does not exist"):
        load_public_key(tmp_path / "nope.pub")
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", None)
    with pytest.raises(EvidenceError, match="not a PEM public key"):
        load_public_key(tmp_path / "k.key")


def test_a_key_that_is_not_ecdsa_is_refused(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(EvidenceError, match="not an ECDSA key"):
        load_public_key(tmp_path / "rsa.pub")


def sigstore_encrypted(key, passphrase: bytes, n: int = 32768) -> bytes:
    """A private key in cosign's encrypted format, built here from its description (scrypt, secretbox)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(32), nacl.utils.random(24)
    box_key = hashlib.scrypt(passphrase, salt=salt, n=n, r=8, p=1, dklen=32, maxmem=64 * 1024 * 1024)
    sealed = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    document = {"kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1},
                        "salt": base64.b64encode(salt).decode()},
                "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
                "ciphertext": base64.b64encode(sealed).decode()}
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    return f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n".encode()


def test_cosigns_encrypted_private_key_opens_with_its_passphrase(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(sigstore_encrypted(key, SECRET.encode()))
    monkeypatch.setenv("COSIGN_PASSWORD", SECRET)
    assert key_id(load_private_key(tmp_path / "cosign.key", "COSIGN_PASSWORD")) == key_id(key)
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    with pytest.raises(EvidenceError, match="does not open"):
        load_private_key(tmp_path / "cosign.key", "COSIGN_PASSWORD")
    with pytest.raises(EvidenceError, match="is encrypted"):
        load_private_key(tmp_path / "cosign.key")


def test_cosigns_key_with_an_empty_passphrase_opens_without_one(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(sigstore_encrypted(key, b""))
    assert key_id(load_private_key(tmp_path / "cosign.key")) == key_id(key)


def test_cosign_key_parameters_that_would_exhaust_memory_are_refused(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = sigstore_encrypted(key, b"", n=1024)
    body = pem.split(b"-----")[2]
    document = json.loads(base64.b64decode(body))
    document["kdf"]["params"]["N"] = 2 ** 30
    forged = base64.encodebytes(json.dumps(document).encode())
    (tmp_path / "cosign.key").write_bytes(pem.replace(body, b"\n" + forged))
    with pytest.raises(EvidenceError, match="not a well-formed"):
        load_private_key(tmp_path / "cosign.key")
