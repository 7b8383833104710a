"""`imagebuild provenance REF [--key PUB]`: print the provenance attached to an image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import InsecureOption, StoreOption, emit_json, open_store, say


def provenance(image: str = typer.Argument(..., help="HOST[:PORT]/NAME[:TAG|@DIGEST] in a registry, or NAME:TAG "
                                                      "in the local store"),
               keys: Optional[List[Path]] = typer.Option(None, "--key", help="A public key (repeatable): print the "
                                                                              "statement only when one verifies it."),
               insecure: Optional[bool] = InsecureOption, store: Optional[Path] = StoreOption,
               json_out: bool = typer.Option(False, "--json", help="The statement is JSON already; with --json a "
                                                                  "failure is one JSON object on stdout too.")
               ) -> None:
    """Print the image's SLSA provenance statement (JSON); verified, exit 2 otherwise, when --key is given."""
    from imagebuild.evidence.images import open_image
    from imagebuild.evidence.keys import load_public_key
    from imagebuild.evidence.provenance import read_provenance, source_of

    public = [load_public_key(path) for path in keys] if keys else None
    with open_image(image, open_store(store), insecure) as found:
        statement = read_provenance(found.place, found.digest, public)
    source = source_of(statement)
    state = "verified" if public else "NOT verified (no --key)"
    say(f"provenance of {found.repository}@{found.digest}, {state}: built from {source.get('uri')} "
        f"({'clean' if (source.get('annotations') or {}).get('clean') else 'dirty'} tree)")
    emit_json(statement)
