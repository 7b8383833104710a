"""`imagebuild images`: what the local store holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, everyday


def images(store: Optional[Path] = StoreOption,
           all_kinds: bool = typer.Option(False, "--all", help="Also list artifacts, such as promotion records, "
                                                             "and the indexes of images' attachments (SBOMs)."),
           json_out: bool = JsonOption) -> None:
    """List the images tagged in the local store, and the VM disks baked from them (kind "disk")."""
    everyday.images(store=store, all_kinds=all_kinds, json_out=json_out)
