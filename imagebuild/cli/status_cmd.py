"""`imagebuild status`: what each environment runs, read from the registry, and on its hosts."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import (AgentOption, IdentityOption, InsecureOption, JsonOption, KnownHostsOption, RecipeOption,
                                   StoreOption, everyday)


def status_command(recipe: Path = RecipeOption, insecure: Optional[bool] = InsecureOption,
                   store: Optional[Path] = StoreOption, json_out: bool = JsonOption,
                   hosts: bool = typer.Option(True, "--hosts/--no-hosts",
                                              help="Also ask each environment's hosts what runs there (over SSH)."),
                   identity: Optional[List[Path]] = IdentityOption, known_hosts: Optional[Path] = KnownHostsOption,
                   agent: bool = AgentOption) -> None:
    """Each environment's current digest, version and promotion time, and what runs on its hosts since when."""
    everyday.status(recipe=recipe, insecure=insecure, store=store, json_out=json_out, hosts=hosts, identity=identity,
                    known_hosts=known_hosts, agent=agent)
