"""`imagebuild images`: what the local store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.app import app
from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store


@app.command("images")
def images(store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """List the images tagged in the local store."""
    local = open_store(store)
    refs = local.refs() if local.exists() else {}
    rows = [{"image": name, "digest": str(d.digest), "size": d.size} for name, d in sorted(refs.items())]
    if json_out:
        emit_json({"store": str(local.root), "images": rows})
        return
    if not rows:
        typer.echo(f"no images in {local.root}")
    for row in rows:
        typer.echo(f"{row['image']}\t{row['digest']}")
