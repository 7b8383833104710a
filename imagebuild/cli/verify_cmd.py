"""`imagebuild verify REF --key PUB`: check an image's cosign-format signatures against public keys."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, StoreOption, emit_json, open_store


def verify(image: str = typer.Argument(..., help="HOST[:PORT]/NAME[:TAG|@DIGEST] in a registry, or NAME:TAG "
                                                  "in the local store"),
           keys: List[Path] = typer.Option(..., "--key", help="A public key (repeatable): any one that verifies "
                                                              "a signature of the digest is enough."),
           insecure: Optional[bool] = InsecureOption, store: Optional[Path] = StoreOption,
           json_out: bool = JsonOption) -> None:
    """Exit 0 when a signature of the image's digest verifies with one of the keys, else exit 2."""
    from imagebuild.evidence.images import open_image
    from imagebuild.evidence.keys import load_public_key
    from imagebuild.evidence.signatures import verify_image

    public = [load_public_key(path) for path in keys]
    with open_image(image, open_store(store), insecure) as found:
        verified = verify_image(found.place, found.digest, public)
    if json_out:
        emit_json({"image": image, "digest": found.digest, "verified_by": verified})
        return
    typer.echo(f"verified {found.repository}@{found.digest}: signed by {', '.join(verified)}")
