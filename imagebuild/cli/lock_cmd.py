"""`imagebuild lock [PATH]`: refresh imagebuild.lock, the exact Debian package versions."""

from __future__ import annotations

from pathlib import Path

import typer

from imagebuild.cli.common import JsonOption, emit_json, say
from imagebuild.errors import RecipeError


def lock_command(path: Path = typer.Argument(Path("."), help="The app directory holding imagebuild.yaml, or the file."),
                 json_out: bool = JsonOption) -> None:
    """Resolve the newest Debian packages for the os and runtime layers and write imagebuild.lock."""
    from imagebuild.build.layers.debian import lock_packages
    from imagebuild.sources.lockfile import lock_path_for
    from imagebuild.recipe.loader import load_recipe
    recipe = load_recipe(path)
    if recipe.os.image is not None:
        # The digest in os.image already pins every byte of such a base; there is nothing to resolve.
        raise RecipeError("os.image names a base image, pinned by its digest; imagebuild.lock is only for os.debian",
                          file=str(recipe.source), key="os.image",
                          hint="nothing to lock: bake without imagebuild.lock")
    target = lock_path_for(recipe.source)
    say(f"resolving Debian {recipe.os.debian} packages for {recipe.name} ...")
    lock = lock_packages(recipe.os, recipe.runtime, target)
    summary = {"lock": str(target), "os_packages": len(lock.os), "runtime_packages": len(lock.runtime),
               "source_date_epoch": lock.source_date_epoch}
    if json_out:
        emit_json(summary)
    else:
        typer.echo(f"wrote {target}: {len(lock.os)} OS packages, {len(lock.runtime)} runtime packages; commit it")
