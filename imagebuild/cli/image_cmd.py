"""`imagebuild image from-dir DIR NAME:TAG`: a one-layer image from a directory."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import PLAIN, JsonOption, StoreOption, emit_json, open_store, say
from imagebuild.errors import UserError

image_app = typer.Typer(no_args_is_help=True, help="Make images in the local store.", **PLAIN)


def _command_line(option: str, text: Optional[str]) -> Optional[list[str]]:
    """A JSON array (`["/bin/sh","-c","x"]`) or a shell-quoted string (`/bin/sh -c x`)."""
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{option} {text!r} is not a JSON array: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{option} must be a JSON array of strings")
        return value
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UserError(f"{option} {text!r} cannot be split: {exc}") from None


@image_app.command("from-dir")
def from_dir(directory: Path = typer.Argument(..., help="Directory whose tree becomes the image's filesystem"),
             name: str = typer.Argument(..., help="NAME[:TAG] to tag it with in the local store"),
             entrypoint: Optional[str] = typer.Option(None, "--entrypoint",
                                                      help='JSON array or shell words, e.g. \'["/bin/app"]\''),
             cmd: Optional[str] = typer.Option(None, "--cmd", help="Default arguments, same forms as --entrypoint"),
             env: List[str] = typer.Option([], "--env", help="KEY=VALUE, repeatable"),
             workdir: Optional[str] = typer.Option(None, "--workdir", help="Working directory in the container"),
             prefix: str = typer.Option("", "--prefix", help="Place the tree under this path in the image"),
             compression: str = typer.Option("gzip", "--compression", help="gzip or zstd"),
             store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Build a single-layer image from DIRECTORY (mtimes clamped to SOURCE_DATE_EPOCH, owners root)."""
    from imagebuild.build.images_from_dir import image_from_directory, store_ref_name
    local = open_store(store)
    descriptor = image_from_directory(local, directory, name, entrypoint=_command_line("--entrypoint", entrypoint),
                                      cmd=_command_line("--cmd", cmd), env=env, workdir=workdir,
                                      prefix=prefix, compression=compression)
    ref_name = store_ref_name(name)
    if json_out:
        emit_json({"image": ref_name, "digest": str(descriptor.digest), "store": str(local.root)})
    else:
        say(f"wrote {ref_name} ({descriptor.digest}) to {local.root}")
        typer.echo(str(descriptor.digest))
