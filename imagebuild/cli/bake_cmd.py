"""`imagebuild bake [PATH]`: one commit → one image."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, StoreOption, emit_json, is_ci, open_store


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
        insecure: Optional[bool] = InsecureOption,
        form: str = typer.Option("image", "--format",
                                 help="image, or disk: also a bootable VM disk of the image (NAME:VERSION-disk)."),
        json_out: bool = JsonOption) -> None:
    """Bake the commit checked out at PATH into an image in the local store."""
    from imagebuild.build.bake import BakeOptions, bake
    from imagebuild.progress import Progress
    disk_outputs = _disk_outputs(form, output)
    image_outputs = tuple(item for item in output if not item.startswith("disk:"))
    options = BakeOptions(allow_dirty=allow_dirty, outputs=image_outputs, load=load, push=push, insecure=insecure)
    the_store = open_store(store)
    result = bake(path, the_store, options, Progress.for_terminal(ci=is_ci()))
    disk = None
    if form == "disk":
        # a progress of its own: a terminal's bar is not restarted once the bake's has ended
        disk = _bake_disk(path, the_store, result, disk_outputs, push, insecure, Progress.for_terminal(ci=is_ci()))
    if json_out:
        emit_json({**result.to_json(), **({"disk": disk.to_json()} if disk else {})})
        return
    typer.echo(f"{result.image} {result.digest}")
    if disk:
        from imagebuild.progress import human_size
        typer.echo(f"{disk.reference} {disk.digest} (raw disk {disk.raw_digest}; qcow2 {human_size(disk.qcow2_size)}, "
                   f"raw {human_size(disk.raw_size)}; container image {human_size(disk.image_size)})")


def _disk_outputs(form: str, output: List[str]) -> list[Path]:
    from imagebuild.errors import UserError
    if form not in ("image", "disk"):
        raise UserError(f"--format {form!r} is neither image nor disk")
    wanted = [item for item in output if item.startswith("disk:")]
    if wanted and form != "disk":
        raise UserError(f"{wanted[0]} needs --format disk")
    from imagebuild.build.disk.artifact import check_disk_output
    return [check_disk_output(item) for item in wanted]


def _bake_disk(path: Path, store, result, outputs: list[Path], push: bool, insecure: Optional[bool], progress):
    """The disk of the image just baked: into the store, to each disk: output, and pushed beside the image."""
    import time
    from imagebuild.build.disk.from_recipe import bake_recipe_disk
    from imagebuild.build.disk.artifact import disk_ref, write_disk
    started = time.monotonic()
    progress.begin(1)
    try:
        progress.layer_started("disk")
        disk = bake_recipe_disk(path, store, result.local_ref)
        progress.layer_done("disk", disk.cached, disk.qcow2_size, time.monotonic() - started)
    finally:
        progress.end()
    for target in outputs:
        write_disk(store, disk.reference, target)
    if push:
        from imagebuild.oci.reference import Reference
        from imagebuild.stores.registry import push_image
        push_image(store, disk.reference, Reference.parse(disk_ref(result.image)), insecure=insecure)
    return disk
