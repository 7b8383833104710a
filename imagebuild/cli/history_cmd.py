"""`imagebuild history ENV`: an environment's promotions, newest first."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, everyday


def history_command(environment: str = typer.Argument(..., help="An environment named in the recipe"),
                    recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                    store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """List the promotions into one environment, newest first."""
    everyday.history(environment=environment, recipe=recipe, insecure=insecure, store=store, json_out=json_out)
