"""Signing keys: ECDSA key pairs in PEM files, as cosign and `skopeo generate-sigstore-key` use them.

`generate_keypair` writes a P-256 pair: the private key as PKCS#8 PEM (encrypted with the passphrase
when one is given), mode 0600, and the public key as a PEM `PUBLIC KEY`. `load_private_key` also reads
the encrypted key format of cosign and skopeo (`ENCRYPTED SIGSTORE PRIVATE KEY`: scrypt, then a NaCl
secretbox around the PKCS#8 DER), so one key signs with either tool. A passphrase comes only from an
environment variable the caller names, and no message quotes it or the key file.

Signatures are ECDSA over SHA-256 in ASN.1 DER, whatever the curve: what sigstore verifiers expect.
`cryptography` is imported inside the functions, so commands that never sign do not load it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

from imagebuild.atomic import create_new
from imagebuild.errors import EvidenceError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey

    PrivateKey = EllipticCurvePrivateKey
    PublicKey = EllipticCurvePublicKey
    AnyKey = Union[EllipticCurvePrivateKey, EllipticCurvePublicKey]

# A key file is a few hundred bytes; anything much larger is not one, and is not read whole.
MAX_KEY_FILE = 64 * 1024
SIGSTORE_LABELS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")
# scrypt's memory is 128 * N * r bytes: a key file may not make us allocate more than this.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def generate_keypair(private_path: str | os.PathLike, public_path: str | os.PathLike,
                     passphrase: bytes | None) -> None:
    """Write a new ECDSA P-256 key pair; the private key encrypted when `passphrase` is given.
    Refuses to replace an existing file (EvidenceError), and leaves no half-written one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise EvidenceError(f"the private and the public key would both be written to {private_path}",
                            hint="give two different paths")
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise EvidenceError(f"{path} exists already", hint="remove it, or write the new key pair elsewhere")
        if not path.parent.is_dir():
            raise EvidenceError(f"directory {path.parent} does not exist", hint="create it first")
    if passphrase is not None and not passphrase:
        raise EvidenceError("the passphrase is empty", hint="set a passphrase, or generate the key without one")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _create(private_path, private_pem, 0o600)
    try:
        _create(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)     # a pair or nothing
        raise


def load_private_key(path: str | os.PathLike, passphrase_env: str | None = None) -> PrivateKey:
    """The private key in `path` (PKCS#8, SEC1 or cosign's encrypted PEM); its passphrase, when it has
    one, read from the environment variable `passphrase_env`. EvidenceError (exit 2) when the file is
    no supported key, or the passphrase is missing or wrong."""
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(Path(path), "private key")
    label = _pem_label(data)
    passphrase = passphrase_from_env(passphrase_env)
    if label in SIGSTORE_LABELS:
        key = _open_sigstore_key(path, data, passphrase, passphrase_env)
    else:
        encrypted = label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in data
        if encrypted and passphrase is None:
            raise _needs_passphrase(path, passphrase_env)
        try:
            key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
        except (ValueError, TypeError):
            # cryptography says only "bad decrypt" or "could not deserialize": no detail worth showing.
            if encrypted:
                raise EvidenceError(f"the passphrase in {passphrase_env} does not open private key {path}",
                                    hint="set the key's passphrase in that variable") from None
            raise EvidenceError(f"{path} is not a PEM private key",
                                hint="pass the .key file `imagebuild keygen` or cosign wrote") from None
    return _supported(key, path)


def load_public_key(path: str | os.PathLike) -> PublicKey:
    """The public key in `path` (a PEM `PUBLIC KEY`, as imagebuild, cosign and skopeo write it)."""
    from cryptography.hazmat.primitives import serialization

    data = _read_key_file(Path(path), "public key")
    if _pem_label(data) != "PUBLIC KEY":
        raise EvidenceError(f"{path} is not a PEM public key",
                            hint="pass the .pub file `imagebuild keygen`, cosign or skopeo wrote")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise EvidenceError(f"{path} is not a readable PEM public key",
                            hint="pass the .pub file `imagebuild keygen`, cosign or skopeo wrote") from None
    return _supported(key, path)


def public_key_of(key: AnyKey) -> PublicKey:
    """The public half of `key` (a public key is returned as it is)."""
    return key.public_key() if hasattr(key, "private_bytes") else key


def key_id(key: AnyKey) -> str:
    """A key's identity: `sha256:` and the hex SHA-256 of its public key's DER SubjectPublicKeyInfo.
    The same for the private and the public half, and for every tool that reads the same key."""
    from cryptography.hazmat.primitives import serialization

    der = public_key_of(key).public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """An ECDSA signature over SHA-256 of `data`, ASN.1 DER encoded."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verifying_key(keys: Iterable[AnyKey], signature: bytes, data: bytes) -> AnyKey | None:
    """The first of `keys` whose public half verifies `signature` over `data`; None when none does."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    for key in keys:
        try:
            public_key_of(key).verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            continue
        return key
    return None


# -- the files ---------------------------------------------------------------------------------

def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        create_new(path, data, mode=mode)
    except FileExistsError:
        raise EvidenceError(f"{path} exists already", hint="remove it, or write the new key pair elsewhere") from None
    except OSError as exc:
        raise EvidenceError(f"cannot write {path}: {exc.strerror}", hint="check the directory's permissions") from None


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise EvidenceError(f"{what} {path} does not exist", hint="check the path") from None
    except IsADirectoryError:
        raise EvidenceError(f"{what} {path} is a directory", hint="pass the key file") from None
    except OSError as exc:
        raise EvidenceError(f"cannot read {what} {path}: {exc.strerror}", hint="check its permissions") from None
    if len(data) > MAX_KEY_FILE:
        raise EvidenceError(f"{path} is larger than any {what} file ({MAX_KEY_FILE} bytes)",
                            hint="pass the key file itself")
    return data


def _pem_label(data: bytes) -> str | None:
    found = _PEM_LABEL.search(data)
    return found.group(1).decode("ascii") if found else None


def passphrase_from_env(variable: str | None) -> bytes | None:
    """The value of the environment variable `variable` (None for no variable); EvidenceError when unset."""
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise EvidenceError(f"the passphrase variable {variable} is not set",
                            hint=f"export {variable} with the key's passphrase")
    return os.fsencode(value)


def _needs_passphrase(path: str | os.PathLike, variable: str | None) -> EvidenceError:
    if variable is None:
        return EvidenceError(f"private key {path} is encrypted",
                             hint="put its passphrase in an environment variable and pass --passphrase-env NAME")
    return EvidenceError(f"the passphrase in {variable} does not open private key {path}",
                         hint="set the key's passphrase in that variable")


def _supported(key: Any, path: str | os.PathLike):
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        raise EvidenceError(f"{path} holds a {type(key).__name__.lstrip('_')}, not an ECDSA key",
                            hint="use an ECDSA P-256 key, as `imagebuild keygen` writes")
    if key.curve.name not in SUPPORTED_CURVES:
        raise EvidenceError(f"{path} holds an ECDSA key on curve {key.curve.name}",
                            hint=f"use one of {', '.join(SUPPORTED_CURVES)}")
    return key


# -- cosign's and skopeo's encrypted private key -----------------------------------------------------

def _open_sigstore_key(path: str | os.PathLike, data: bytes, passphrase: bytes | None, variable: str | None):
    """`ENCRYPTED SIGSTORE PRIVATE KEY`: a PEM around JSON `{"kdf": {"name": "scrypt", "params": {"N",
    "r", "p"}, "salt"}, "cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}` (byte fields in
    base64), the ciphertext sealing the PKCS#8 DER key with the scrypt-derived 32-byte key. cosign
    allows an empty passphrase, so a key without --passphrase-env is tried with that."""
    from cryptography.hazmat.primitives import serialization

    try:
        sealed = _sigstore_fields(data)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise EvidenceError(f"{path} is not a well-formed encrypted sigstore private key",
                            hint="pass the .key file cosign or skopeo wrote") from None
    n, r, p, salt, nonce, ciphertext = sealed
    box_key = hashlib.scrypt(passphrase or b"", salt=salt, n=n, r=r, p=p, dklen=32,
                             maxmem=MAX_SCRYPT_MEMORY + 1024 * 1024)
    import nacl.exceptions
    import nacl.secret

    try:
        der = nacl.secret.SecretBox(box_key).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise _needs_passphrase(path, variable) from None
    try:
        return serialization.load_der_private_key(der, None)
    except (ValueError, TypeError):
        raise EvidenceError(f"{path} does not hold a private key inside its encryption",
                            hint="pass the .key file cosign or skopeo wrote") from None


def _sigstore_fields(data: bytes) -> tuple[int, int, int, bytes, bytes, bytes]:
    body = re.search(rb"-----BEGIN [A-Z ]+-----(.*?)-----END [A-Z ]+-----", data, re.S)
    if body is None:
        raise ValueError("no PEM body")
    document = json.loads(base64.b64decode(b"".join(body.group(1).split()), validate=True))
    kdf, cipher = document["kdf"], document["cipher"]
    if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
        raise ValueError("unknown kdf or cipher")
    params = kdf["params"]
    n, r, p = (params[name] for name in ("N", "r", "p"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, r, p)) \
            or n & (n - 1) or 128 * n * r > MAX_SCRYPT_MEMORY or p > 16:
        raise ValueError("scrypt parameters out of bounds")
    salt = base64.b64decode(kdf["salt"], validate=True)
    nonce = base64.b64decode(cipher["nonce"], validate=True)
    ciphertext = base64.b64decode(document["ciphertext"], validate=True)
    if len(nonce) != 24:
        raise ValueError("the nonce is not 24 bytes")
    return n, r, p, salt, nonce, ciphertext
