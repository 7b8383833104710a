"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from imagebuild.stores.layout import LayoutStore

StoreOption = typer.Option(None, "--store", envvar="IMAGEBUILD_STORE",
                           help="Local store directory (an OCI layout). Default: ~/.cache/imagebuild/store")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else.")
RecipeOption = typer.Option(Path("imagebuild.yaml"), "--recipe",
                            help="The recipe (imagebuild.yaml, or its directory) naming the registry and environments")
InsecureOption = typer.Option(None, "--insecure/--secure",
                              help="Plain HTTP to the registry (default: only for loopback addresses)")


def open_store(store: Optional[Path]) -> LayoutStore:
    # Imported here, not at start-up: most invocations (--help, errors) never open the store.
    from imagebuild.stores.layout import LayoutStore

    return LayoutStore(store)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def say(message: str) -> None:
    """Human-readable progress: always stderr, so stdout stays machine-readable."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def is_ci() -> bool:
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()
