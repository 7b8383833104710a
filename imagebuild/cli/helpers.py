"""What the commands share that needs no typer: the store, the recipe, output lines and JSON.

Kept apart from cli/common.py (the typer options) so that the everyday commands' fast path
(cli/fast_path.py) can run a command without importing typer or click.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

from imagebuild.errors import UserError

if TYPE_CHECKING:
    from imagebuild.stores.layout import LayoutStore

# What click.echo removes from a line when stdout is not a terminal.
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")


class CollectorHeld:
    """Set by main() when it leaves the cyclic garbage collector off into a command's own imports: a
    bake's imports (httpx's above all) set it off ~55 times, for nothing to free. The command turns it
    back on with `collect_from_here()` where its real work, which may make much garbage, starts."""

    held = False


def collect_from_here() -> None:
    """The cyclic garbage collector back on, if main() left it off through this command's imports.

    What exists by then (modules, classes, the recipe) lives to the end of the process: frozen, it is
    left out of the collector's passes, whose first ones would otherwise walk all of it (~15 ms)."""
    if CollectorHeld.held:
        CollectorHeld.held = False
        gc.freeze()
        gc.enable()


def echo(line: str) -> None:
    """One line on stdout, as click.echo writes it (escape sequences dropped when not a terminal)."""
    out = sys.stdout
    if out is None:
        return
    if not out.isatty():
        line = _ANSI.sub("", line)
    out.write(line + "\n")
    out.flush()


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


def ssh_options(identities: Optional[List[Path]], known_hosts: Optional[Path], agent: bool,
                accept_new: bool = False):
    from imagebuild.release.deploy.ssh import SshOptions

    for key in identities or ():
        if not key.is_file():
            raise UserError(f"identity {key} is not a file", hint="pass the private key, e.g. ~/.ssh/id_ed25519")
    return SshOptions(known_hosts=known_hosts or Path.home() / ".ssh" / "known_hosts",
                      identities=tuple(identities or ()), accept_new_host_key=accept_new, use_agent=agent)


def load_recipe_for(path: Path, required: bool = True, remember_in: Optional[LayoutStore] = None):
    """The recipe at `path`; `remember_in`: a store whose recipe cache (recipe/cache.py) may answer
    for an unchanged recipe, and remembers it otherwise (only a store that exists: the cache
    makes none)."""
    if not path.exists():
        if not required:
            return None
        raise UserError(f"recipe {path} not found", hint="run in the app's directory or pass --recipe PATH")
    from imagebuild.recipe.cache import load_recipe_cached
    from imagebuild.stores.layout import RECIPE_CACHE_DIR

    cache_dir = remember_in.root / RECIPE_CACHE_DIR if remember_in is not None and remember_in.exists() else None
    return load_recipe_cached(path, cache_dir)


def open_places(recipe_path: Path, store: Optional[Path], insecure: Optional[bool]):
    from imagebuild.release.promote import Places
    local = open_store(store)
    recipe = load_recipe_for(recipe_path, remember_in=local)
    if not recipe.environments:
        raise UserError(f"recipe {recipe_path} names no environments", hint="add an `environments:` list")
    return recipe, Places(recipe.name, recipe.registry, local, insecure=insecure)
