"""`imagebuild export IMAGE oci:DIR|docker-archive:FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store, say


def export(image: str = typer.Argument(..., help="An image in the local store, e.g. hello:abc1234"),
           destination: str = typer.Argument(..., help="oci:DIR or docker-archive:FILE"),
           store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Write an image from the local store to an OCI layout directory or a docker-archive file."""
    from imagebuild.publish.export import export_image
    result = export_image(open_store(store), image, destination)
    if json_out:
        emit_json(result)
    else:
        say(f"exported {result['image']} ({result['digest']}) to {result['destination']}")
