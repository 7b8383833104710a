"""`imagebuild bake [PATH]`: one commit → one image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, PassphraseEnvOption, StoreOption, bake_run


def bake_command(
        path: Path = typer.Argument(Path("."), help="The app directory holding imagebuild.yaml, or the file."),
        store: Optional[Path] = StoreOption,
        allow_dirty: bool = typer.Option(False, "--allow-dirty",
                                         help="Bake uncommitted changes of tracked files; the image is marked "
                                              "-dirty and can never be promoted."),
        output: List[str] = typer.Option([], "--output", "-o",
                                         help="Also write the image to oci:DIR or docker-archive:FILE, or the disk "
                                              "(with --format disk) to disk:FILE.qcow2 or disk:FILE.raw (repeatable)."),
        load: bool = typer.Option(False, "--load", help="Load the image into the Docker engine."),
        push: bool = typer.Option(False, "--push", help="Push the image to the recipe's registry."),
        cache_from: Optional[str] = typer.Option(None, "--cache-from", metavar="HOST/REPO",
                                                 help="Look layers up in this registry layer cache before "
                                                      "building them (default with --push: REGISTRY/NAME-cache)."),
        cache_to: Optional[str] = typer.Option(None, "--cache-to", metavar="HOST/REPO",
                                               help="Write each layer's cache entry here after --push "
                                                    "(default: REGISTRY/NAME-cache)."),
        insecure: Optional[bool] = InsecureOption,
        form: str = typer.Option("image", "--format",
                                 help="image, or disk: also a bootable VM disk of the image (NAME:VERSION-disk)."),
        sign: Optional[Path] = typer.Option(None, "--sign", metavar="KEY",
                                            help="Sign the image with this private key and attach its signed "
                                                 "provenance; --push carries both."),
        passphrase_env: Optional[str] = PassphraseEnvOption,
        json_out: bool = JsonOption) -> None:
    """Bake the commit checked out at PATH into an image in the local store."""
    bake_run.bake(path=path, store=store, allow_dirty=allow_dirty, output=output, load=load, push=push,
                  cache_from=cache_from, cache_to=cache_to, insecure=insecure, form=form, sign=sign,
                  passphrase_env=passphrase_env, json_out=json_out)
