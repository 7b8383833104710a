"""Options and output helpers shared by the commands."""

from __future__ import annotations

from pathlib import Path

import typer

# The helpers and the everyday commands' and bake's bodies need no typer; the command modules import them from here.
from imagebuild.cli import bake_run, everyday  # noqa: F401
from imagebuild.cli.helpers import (emit_json, is_ci, load_recipe_for, open_places, open_store, say,  # noqa: F401
                                    ssh_options)

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
