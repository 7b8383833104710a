"""`imagebuild promote IMAGE --to ENV`: the same digest into the next environment."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, everyday

def promote_command(image: str = typer.Argument(..., help="A version (abc1234), NAME:VERSION, or a digest"),
                    to: str = typer.Option(..., "--to", help="The environment to promote into"),
                    dry_run: bool = typer.Option(False, "--dry-run", help="Check the rules and say what would happen"),
                    recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                    store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Promote an image to an environment, keeping its digest. Promoting an older version is a rollback."""
    everyday.promote(image=image, to=to, dry_run=dry_run, recipe=recipe, insecure=insecure, store=store,
                     json_out=json_out)
