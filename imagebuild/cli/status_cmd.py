"""`imagebuild status`: what each environment runs, read from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.app import app
from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json
from imagebuild.cli.promote_cmd import open_places


@app.command("status")
def status_command(recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                   store: Optional[Path] = StoreOption, json_out: bool = JsonOption) -> None:
    """Each environment's current digest, version and promotion time."""
    from imagebuild.promote import status
    loaded, places = open_places(recipe, store, insecure)
    try:
        rows = status(places.home, loaded.environments, places.target_for)
    finally:
        places.close()
    if json_out:
        emit_json({"image": loaded.name, "home": places.home.label, "environments": [r.to_dict() for r in rows]})
        return
    for row in rows:
        line = f"{row.environment:<12} {row.version or '-':<20} {row.digest or '-':<71} {row.promoted_at or '-'}"
        if row.note:
            line += f"  ({row.note})"
        typer.echo(line)
