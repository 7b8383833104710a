"""`imagebuild sign REF --key KEY`: sign an image where it lies, in cosign's format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, PassphraseEnvOption, StoreOption, emit_json, open_store


def sign(image: str = typer.Argument(..., help="HOST[:PORT]/NAME[:TAG|@DIGEST] in a registry, or NAME:TAG "
                                                "in the local store"),
         key: Path = typer.Option(..., "--key", help="The private key (from `imagebuild keygen` or cosign)."),
         passphrase_env: Optional[str] = PassphraseEnvOption,
         identity: Optional[str] = typer.Option(None, "--identity", metavar="HOST/NAME",
                                                help="The repository the signature names (default: the image's)."),
         insecure: Optional[bool] = InsecureOption, store: Optional[Path] = StoreOption,
         json_out: bool = JsonOption) -> None:
    """Sign an image's digest with a key; the signature is added beside the image (sha256-<hex>.sig)."""
    from imagebuild.evidence.images import open_image
    from imagebuild.evidence.keys import key_id, load_private_key
    from imagebuild.evidence.signatures import sign_image

    private = load_private_key(key, passphrase_env)
    with open_image(image, open_store(store), insecure) as found:
        reference = identity or found.repository
        sign_image(found.place, found.digest, reference, private)
    if json_out:
        emit_json({"image": image, "digest": found.digest, "identity": reference, "key_id": key_id(private)})
        return
    typer.echo(f"signed {found.repository}@{found.digest} as {reference} with key {key_id(private)}")
