"""`imagebuild keygen [--out PREFIX]`: a new signing key pair, PREFIX.key and PREFIX.pub."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, PassphraseEnvOption, emit_json, say


def keygen(out: Path = typer.Option(Path("imagebuild"), "--out", metavar="PREFIX",
                                    help="Write PREFIX.key (private, mode 0600) and PREFIX.pub."),
           passphrase_env: Optional[str] = PassphraseEnvOption,
           json_out: bool = JsonOption) -> None:
    """Write a new ECDSA P-256 key pair for `sign`, `bake --sign` and `verify` (cosign's key format)."""
    from imagebuild.evidence.keys import generate_keypair, key_id, load_public_key, passphrase_from_env

    private, public = Path(f"{out}.key"), Path(f"{out}.pub")
    generate_keypair(private, public, passphrase_from_env(passphrase_env))
    identity = key_id(load_public_key(public))
    if json_out:
        emit_json({"private_key": str(private), "public_key": str(public), "key_id": identity,
                   "encrypted": passphrase_env is not None})
        return
    if passphrase_env is None:
        say(f"warning: {private} is not encrypted; keep it secret, or pass --passphrase-env NAME to encrypt it")
    typer.echo(f"wrote {private} and {public} (key {identity})")
