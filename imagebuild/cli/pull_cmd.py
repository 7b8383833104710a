"""`imagebuild pull REF`: bring an image from a registry into the local store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, StoreOption, emit_json, open_store, say


def pull(reference: str = typer.Argument(..., help="HOST[:PORT]/NAME[:TAG] or HOST[:PORT]/NAME@sha256:..."),
         insecure: Optional[bool] = InsecureOption, store: Optional[Path] = StoreOption,
         platform: Optional[str] = typer.Option(None, "--platform", metavar="OS/ARCH",
                                                help="The image to take from a multi-platform index "
                                                     "(default: this machine's, e.g. linux/amd64)."),
         json_out: bool = JsonOption) -> None:
    """Pull an image into the local store; blobs already there are not fetched."""
    from imagebuild.oci.model import host_platform, parse_platform
    from imagebuild.stores.registry import pull_image, registry_reference
    wanted = parse_platform(platform) if platform is not None else host_platform()
    result = pull_image(open_store(store), registry_reference(reference), insecure=insecure, platform=wanted,
                        progress=None if json_out else say)
    if json_out:
        emit_json(result.to_dict())
    else:
        typer.echo(f"pulled {result.ref_name} ({result.digest}): fetched {result.blobs_fetched} blobs "
                   f"({result.bytes_downloaded} bytes), {result.blobs_present} already present")
