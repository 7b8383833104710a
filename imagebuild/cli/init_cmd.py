"""`imagebuild init [DIR]`: write a starting imagebuild.yaml for the app in DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imagebuild.cli.common import JsonOption, emit_json, say


def init(directory: Path = typer.Argument(Path("."), help="The app's directory (default: the current one)"),
         force: bool = typer.Option(False, "--force", help="Replace an existing imagebuild.yaml."),
         extends: Optional[str] = typer.Option(None, "--extends", metavar="NAME",
                                               help="Use this stock recipe instead of guessing."),
         name: Optional[str] = typer.Option(None, "--name", help="Image name (default: the directory's name)."),
         json_out: bool = JsonOption) -> None:
    """Detect the kind of app in DIR and write a recipe for it that loads cleanly."""
    from imagebuild.recipe.initapp import init_app
    result = init_app(directory, force=force, extends=extends, name=name)
    found = result.detection
    if json_out:
        emit_json({"path": str(result.path), "extends": found.stock, "app": found.app,
                   "requirements": found.requirements, "found": found.reason})
    else:
        say(f"wrote {result.path} (extends {found.stock}: found {found.reason})")
