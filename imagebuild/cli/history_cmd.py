"""`imagebuild history ENV`: an environment's promotions, newest first."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json, open_places, say


def history_command(environment: str = typer.Argument(..., help="An environment named in the recipe"),
                    recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                    store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """List the promotions into one environment, newest first."""
    from imagebuild.release.promote import history
    loaded, places = open_places(recipe, store, insecure)
    try:
        records = history(places.home, loaded.environments, environment, places.target_for)
    finally:
        places.close()
    if json_out:
        emit_json({"environment": environment, "promotions": [r.to_dict() for r in records]})
        return
    if not records:
        # stderr: stdout holds one line per promotion
        say(f"no promotions to {environment} yet")
    for record in records:
        mark = ("  rollback" if record.rollback else "") + (f"  checks: {','.join(record.checks)}" if record.checks else "")
        typer.echo(f"{record.sequence:>6}  {record.time}  {record.version:<20} {record.digest}{mark}")
