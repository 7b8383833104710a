"""`imagebuild run IMAGE --env NAME`: an image from the local store in the local Docker engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import JsonOption, StoreOption, emit_json, open_store, say


def run_command(
        image: str = typer.Argument(..., help="NAME:TAG or a manifest digest in the local store."),
        env: Optional[str] = typer.Option(None, "--env",
                                          help="The environment to run as (dev, test, prod, ...); without it "
                                               "the image detects one or uses its default."),
        publish: List[str] = typer.Option([], "--publish", "-p",
                                          help="Publish the server's port: HOSTPORT, HOSTPORT:PORT or "
                                               "IP:HOSTPORT:PORT (default: a free port on 127.0.0.1)."),
        variables: List[str] = typer.Option([], "--env-var", "-e",
                                            help="Set a variable in the container: NAME=VALUE, or NAME to pass "
                                                 "this shell's value on (repeatable; use it for secrets)."),
        detach: bool = typer.Option(False, "--detach", "-d",
                                    help="Start it and return; print the container id."),
        name: Optional[str] = typer.Option(None, "--name", help="The container's name."),
        store: Optional[Path] = StoreOption,
        json_out: bool = JsonOption) -> None:
    """Run an image from the local store in the Docker engine, as ENV would run it.

    The container's output streams here and its exit code is this command's;
    Ctrl-C stops it with SIGTERM, as `docker stop` does, and removes it.
    """
    from imagebuild.release.run import RunOptions, run_image

    options = RunOptions(env=env, publish=tuple(publish), variables=tuple(variables), detach=detach, name=name)
    # With --json, stdout holds the one JSON object, so the container's stdout goes to stderr.
    out = sys.stderr.buffer if json_out else sys.stdout.buffer
    code, started = run_image(open_store(store), image, options, out, sys.stderr.buffer, say)
    if json_out:
        emit_json({"container": started.container_id, "address": started.address,
                   "exit_code": None if detach else code})
    elif detach:
        typer.echo(started.container_id)
    raise typer.Exit(code)
