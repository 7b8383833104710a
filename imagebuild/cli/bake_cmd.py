"""`imagebuild bake [PATH]`: one commit → one image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.app import app
from imagebuild.cli.common import InsecureOption, JsonOption, StoreOption, emit_json, is_ci, open_store


@app.command("bake")
def bake_command(
        path: Path = typer.Argument(Path("."), help="The app directory holding imagebuild.yaml, or the file."),
        store: Optional[Path] = StoreOption,
        allow_dirty: bool = typer.Option(False, "--allow-dirty",
                                         help="Bake uncommitted changes of tracked files; the image is marked "
                                              "-dirty and can never be promoted."),
        output: List[str] = typer.Option([], "--output", "-o",
                                         help="Also write the image to oci:DIR or docker-archive:FILE (repeatable)."),
        load: bool = typer.Option(False, "--load", help="Load the image into the Docker engine."),
        push: bool = typer.Option(False, "--push", help="Push the image to the recipe's registry."),
        insecure: Optional[bool] = InsecureOption,
        json_out: bool = JsonOption) -> None:
    """Bake the commit checked out at PATH into an image in the local store."""
    from imagebuild.bake import BakeOptions, bake
    from imagebuild.progress import Progress
    options = BakeOptions(allow_dirty=allow_dirty, outputs=tuple(output), load=load, push=push, insecure=insecure)
    result = bake(path, open_store(store), options, Progress.for_terminal(ci=is_ci()))
    if json_out:
        emit_json(result.to_json())
        return
    typer.echo(f"{result.image} {result.digest}")
