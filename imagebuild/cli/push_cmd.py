"""`imagebuild push IMAGE [--to REF]`: send an image of the local store to a registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from imagebuild.cli.common import (InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json, load_recipe_for,
                                   open_store, say)
from imagebuild.errors import UserError

if TYPE_CHECKING:
    from imagebuild.oci.reference import Reference
    from imagebuild.stores.registry import PushResult


def push_target(image: str, to: Optional[str], recipe_path: Path, recipe=None) -> Reference:
    """`--to` when given, else the recipe's registry plus the image's name and tag (`recipe`: already loaded)."""
    from imagebuild.oci.reference import Reference
    if to:
        target = Reference.parse(to)
        if not target.registry:
            raise UserError(f"--to {to!r} names no registry", hint="use HOST[:PORT]/NAME[:TAG]")
        return target
    if recipe is None:
        recipe = load_recipe_for(recipe_path, required=False)
    if recipe is None or not recipe.registry:
        raise UserError("no registry to push to",
                        hint="pass --to HOST[:PORT]/NAME[:TAG] or set `registry:` in imagebuild.yaml")
    local = Reference.parse(image)
    return Reference.parse(f"{recipe.registry.rstrip('/')}/{local.repository.rsplit('/', 1)[-1]}")


def push_summary(result: PushResult) -> str:
    return (f"pushed {result.reference}@{result.digest}: uploaded {result.blobs_uploaded} blobs "
            f"({result.bytes_uploaded} bytes with the manifest), skipped {result.blobs_skipped}, "
            f"mounted {result.blobs_mounted}, {result.requests} requests")


def push(image: str = typer.Argument(..., help="An image in the local store, e.g. hello:abc1234"),
         to: Optional[str] = typer.Option(None, "--to", help="Target HOST[:PORT]/NAME[:TAG]; default: the recipe's registry"),
         recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
         parallel: int = typer.Option(4, "--parallel", min=1, max=32, help="Blobs uploaded at once"),
         store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Push an image to a registry; only the blobs it lacks travel."""
    from imagebuild.stores.registry import push_image
    # Read once: it names the target (without --to) and the environment tags, which are promotion's
    # alone whichever way the target was named.
    loaded = load_recipe_for(recipe, required=False)
    target = push_target(image, to, recipe, loaded)
    result = push_image(open_store(store), image, target, insecure=insecure, parallel=parallel,
                        progress=None if json_out else say,
                        environments=loaded.environment_names() if loaded is not None else ())
    if json_out:
        emit_json(result.to_dict())
    else:
        typer.echo(push_summary(result))
