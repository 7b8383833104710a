"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from imagebuild.errors import UserError

if TYPE_CHECKING:
    from imagebuild.stores.layout import LayoutStore

# Plain click help and errors, no rich boxes: they read well in CI logs and in a terminal.
PLAIN = {"rich_markup_mode": None}

StoreOption = typer.Option(None, "--store", envvar="IMAGEBUILD_STORE",
                           help="Local store directory (an OCI layout). Default: ~/.cache/imagebuild/store")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else.")
RecipeOption = typer.Option(Path("imagebuild.yaml"), "--recipe",
                            help="The recipe (imagebuild.yaml, or its directory) naming the registry and environments")
InsecureOption = typer.Option(None, "--insecure/--secure",
                              help="Plain HTTP to the registry (default: only for loopback addresses)")

PassphraseEnvOption = typer.Option(None, "--passphrase-env", metavar="NAME",
                                   help="The environment variable holding the private key's passphrase "
                                        "(the passphrase itself is never an option).")

IdentityOption = typer.Option(None, "--identity", "-i", metavar="KEY",
                              help="A private key file (repeatable). Default: ssh-agent and ~/.ssh/id_*.")
KnownHostsOption = typer.Option(None, "--known-hosts", envvar="IMAGEBUILD_KNOWN_HOSTS", metavar="FILE",
                                help="The known_hosts file host keys are checked against. Default: ~/.ssh/known_hosts")
AgentOption = typer.Option(True, "--agent/--no-agent", help="Offer the keys of ssh-agent (SSH_AUTH_SOCK).")


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
