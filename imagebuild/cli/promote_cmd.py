"""`imagebuild promote IMAGE --to ENV`: the same digest into the next environment."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.app import app
from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json, open_store
from imagebuild.errors import UserError



def load_recipe_for(path: Path, required: bool = True):
    if not path.exists():
        if not required:
            return None
        raise UserError(f"recipe {path} not found", hint="run in the app's directory or pass --recipe PATH")
    from imagebuild.recipe.loader import load_recipe

    return load_recipe(path)


def open_places(recipe_path: Path, store: Optional[Path], insecure: Optional[bool]):
    from imagebuild.release.promote import Places
    recipe = load_recipe_for(recipe_path)
    if not recipe.environments:
        raise UserError(f"recipe {recipe_path} names no environments", hint="add an `environments:` list")
    return recipe, Places(recipe.name, recipe.registry, open_store(store), insecure=insecure)


@app.command("promote")
def promote_command(image: str = typer.Argument(..., help="A version (abc1234), NAME:VERSION, or a digest"),
                    to: str = typer.Option(..., "--to", help="The environment to promote into"),
                    dry_run: bool = typer.Option(False, "--dry-run", help="Check the rules and say what would happen"),
                    recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                    store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Promote an image to an environment, keeping its digest. Promoting an older version is a rollback."""
    from imagebuild.release.promote import promote
    loaded, places = open_places(recipe, store, insecure)
    try:
        result = promote(places.home, loaded.environments, image, to, target_for=places.target_for,
                         copy=places.copy, name=loaded.name, dry_run=dry_run)
    finally:
        places.close()
    if json_out:
        emit_json(result.to_dict())
        return
    if result.action == "none":
        typer.echo(f"{result.version} ({result.digest}) is already in {result.environment}")
        for line in result.messages:
            typer.echo(f"  {line}")
        return
    what = "would promote" if dry_run else ("rolled back" if result.rollback else "promoted")
    typer.echo(f"{what} {result.version} ({result.digest}) to {result.environment}")
    for line in result.messages:
        typer.echo(f"  {'would ' if dry_run else ''}{line}")
    if result.blobs:
        typer.echo(f"  blobs: {result.blobs['blobs_mounted']} mounted, {result.blobs['blobs_uploaded']} uploaded, "
                   f"{result.blobs['blobs_skipped']} already there")
