"""`imagebuild images`: what the local store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store, say
from imagebuild.errors import UserError


def images(store: Optional[Path] = StoreOption,
           all_kinds: bool = typer.Option(False, "--all", help="Also list artifacts, such as promotion records."),
           json_out: bool = JsonOption) -> None:
    """List the images tagged in the local store, and the VM disks baked from them (kind "disk")."""
    local = open_store(store)
    # An empty or missing directory is a store yet to be made; anything else is a wrong path.
    if local.root.exists() and not local.exists() and not (local.root.is_dir() and not any(local.root.iterdir())):
        raise UserError(f"{local.root} is not an imagebuild store (it has no index.json)",
                        hint="point --store or IMAGEBUILD_STORE at the store's directory")
    refs = local.refs() if local.exists() else {}
    rows = [{"image": name, "digest": str(d.digest), "size": d.size, "kind": local.kind_of(d)}
            for name, d in sorted(refs.items())]
    for row in rows:
        if row["kind"] == "index":    # a multi-platform image: the platforms it offers
            row["platforms"] = local.platforms_of(row["digest"])
    if not all_kinds:
        rows = [row for row in rows if row["kind"] != "artifact"]
    if json_out:
        emit_json({"store": str(local.root), "images": rows})
        return
    if not rows:
        # stderr: stdout holds one line per image, so `| wc -l` counts them
        say(f"no images in {local.root}")
    for row in rows:
        shown_kind = f"\t{row['kind']}" if row["kind"] in ("artifact", "disk") else ""
        if row.get("platforms"):
            shown_kind = "\t" + ",".join(row["platforms"])
        typer.echo(f"{row['image']}\t{row['digest']}{shown_kind}")
