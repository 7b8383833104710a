"""`imagebuild disk ...`: name the environment a baked disk boots into, write a stored disk out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.app import PLAIN, app
from imagebuild.cli.common import StoreOption, open_store, say

disk_app = typer.Typer(no_args_is_help=True, help="Bootable disks made by `bake --format disk`.", **PLAIN)
app.add_typer(disk_app, name="disk")


@disk_app.command("set-env")
def set_env(disk: Path = typer.Argument(..., help="A disk file (.qcow2 or .raw) made by `bake --format disk`."),
            environment: Optional[str] = typer.Argument(None, help="The environment; leave out to let the "
                                                                   "launcher detect it.")) -> None:
    """Put imagebuild.env=ENVIRONMENT on the disk's kernel command line, in place."""
    from imagebuild.disk.environment import set_environment
    set_environment(disk, environment)
    say(f"{disk} boots into {environment}" if environment else f"{disk} boots with environment detection")


@disk_app.command("config-drive")
def config_drive(path: Path = typer.Argument(..., help="The image file to write (FAT, 1 MiB)."),
                 environment: str = typer.Argument(..., help="The environment the VM boots into.")) -> None:
    """Write a config drive naming the environment, to attach to the VM as a second disk."""
    from imagebuild.disk.environment import config_drive as write
    write(path, environment)
    say(f"{path}: config drive for {environment}")


@disk_app.command("write")
def write(reference: str = typer.Argument(..., help="NAME:VERSION-disk in the local store."),
          path: Path = typer.Argument(..., help="FILE.qcow2 or FILE.raw"),
          store: Optional[Path] = StoreOption) -> None:
    """Write a disk from the local store to a file."""
    from imagebuild.disk import check_disk_output, write_disk
    write_disk(open_store(store), reference, check_disk_output(f"disk:{path}"))
    say(f"wrote {path}")
