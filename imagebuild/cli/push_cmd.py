"""`imagebuild push IMAGE [--to REF]`: send an image of the local store to a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, everyday


def push(image: str = typer.Argument(..., help="An image in the local store, e.g. hello:abc1234"),
         to: Optional[str] = typer.Option(None, "--to", help="Target HOST[:PORT]/NAME[:TAG]; default: the recipe's registry"),
         recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
         parallel: int = typer.Option(4, "--parallel", min=1, max=32, help="Blobs uploaded at once"),
         store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Push an image to a registry; only the blobs it lacks travel."""
    everyday.push(image=image, to=to, recipe=recipe, insecure=insecure, parallel=parallel, store=store,
                  json_out=json_out)
