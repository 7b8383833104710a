"""Exporting an image from the local store to another place, by a `kind:path` destination."""

from __future__ import annotations

from pathlib import Path

from imagebuild.errors import UserError
from imagebuild.stores.archive import write_docker_archive
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.transfer import copy_image

DESTINATION_KINDS = ("oci", "docker-archive")


def parse_destination(destination: str) -> tuple[str, str]:
    kind, sep, path = destination.partition(":")
    if not sep or kind not in DESTINATION_KINDS or not path:
        raise UserError(f"unknown destination {destination!r}",
                        hint="use oci:DIR or docker-archive:FILE")
    return kind, path


def export_image(store: LayoutStore, image: str, destination: str) -> dict:
    kind, path = parse_destination(destination)
    if not store.exists():
        raise UserError(f"the local store at {store.root} is empty", hint="bake an image first")
    descriptor = store.resolve(image)
    ref_name = next((n for n, d in store.refs().items() if n == image), None) or image
    name, _, tag = ref_name.rpartition(":") if ":" in ref_name else (ref_name, "", "latest")
    if kind == "oci":
        target = Path(path)
        if target.exists() and not target.is_dir():
            raise UserError(f"{path} exists and is not a directory")
        copy_image(store, descriptor, LayoutStore(target), [tag or "latest"])
    else:
        write_docker_archive(store, descriptor.digest, [f"{name}:{tag or 'latest'}"], path)
    return {"image": ref_name, "digest": str(descriptor.digest), "destination": destination}
