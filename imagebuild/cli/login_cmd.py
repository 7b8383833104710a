"""`imagebuild login HOST`: check credentials against a registry and save them."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, emit_json
from imagebuild.errors import UserError, quoted


def login(host: str = typer.Argument(..., help="Registry HOST[:PORT]"),
          username: str = typer.Option(..., "--username", "-u", help="The registry account"),
          password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin"),
          insecure: Optional[bool] = InsecureOption, json_out: bool = JsonOption) -> None:
    """Log in to a registry; the credentials go where the Docker client keeps them."""
    from imagebuild.registry.auth import Credentials, save_credentials
    from imagebuild.registry.client import RegistryClient
    from imagebuild.oci.reference import check_registry_host
    if "/" in host:
        raise UserError(f"{quoted(host)} is not a registry host", hint="give HOST[:PORT] only, e.g. localhost:5000")
    check_registry_host(host)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        # A prompt without a terminal would echo the password or read a script's input.
        raise UserError("no terminal to ask for the password", hint="pass it on stdin with --password-stdin")
    else:
        password = typer.prompt("Password", hide_input=True)
    if not password:
        raise UserError("empty password", hint="pass it on stdin with --password-stdin")
    credentials = Credentials(username, password)
    with RegistryClient(host, insecure=insecure, credentials=credentials) as client:
        client.ping()
    path = save_credentials(host, credentials)
    if json_out:
        emit_json({"registry": host, "username": username, "saved": str(path)})
    else:
        typer.echo(f"logged in to {host} as {username}; credentials saved in {path}")
