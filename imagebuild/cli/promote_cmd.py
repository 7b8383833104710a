"""`imagebuild promote IMAGE --to ENV`: the same digest into the next environment."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json, open_places

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
                         name=loaded.name, dry_run=dry_run, root=loaded.root)
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
    for check in result.checks:
        typer.echo(f"  check {check['name']} passed: {check['why']}")
    for line in result.messages:
        typer.echo(f"  {'would ' if dry_run else ''}{line}")
    if result.blobs:
        typer.echo(f"  blobs: {result.blobs['blobs_mounted']} mounted, {result.blobs['blobs_uploaded']} uploaded, "
                   f"{result.blobs['blobs_skipped']} already there")
