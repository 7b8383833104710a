"""`imagebuild rm REF [REF...]`: untag images in the local store."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store, say


def rm(refs: List[str] = typer.Argument(..., help="NAME:TAG, or sha256:DIGEST to remove every tag on that manifest"),
       store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Untag images in the local store; `imagebuild gc` then reclaims their space."""
    from imagebuild.stores.gc import remove_refs
    local = open_store(store)
    removed = remove_refs(local, list(refs))
    if json_out:
        emit_json({"store": str(local.root), "removed": removed})
        return
    for row in removed:
        typer.echo(f"untagged {row['ref']}\t{row['digest']}")
    say("run `imagebuild gc` to free the space of blobs no image uses any more")
