"""Exporting an image from the local store to another place, by a `kind:path` destination."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from imagebuild.errors import UserError, quoted
from imagebuild.oci.digest import is_digest
from imagebuild.stores.archive import write_docker_archive
from imagebuild.oci.model import Descriptor
from imagebuild.stores.lease import LEASE_FILE, release_lease
from imagebuild.stores.layout import LayoutStore, os_error_for
from imagebuild.stores.copy import copy
from imagebuild.stores.place import LayoutPlace

DESTINATION_KINDS = ("oci", "docker-archive")


def parse_destination(destination: str) -> tuple[str, str]:
    kind, sep, path = destination.partition(":")
    if not sep or kind not in DESTINATION_KINDS or not path:
        raise UserError(f"unknown destination {quoted(destination)}",
                        hint="use oci:DIR or docker-archive:FILE")
    return kind, path


def check_destination(destination: str) -> tuple[str, str]:
    """Every refusal an export can know before it reads the store, so a caller (bake) can
    refuse a bad destination before any work is done. Returns (kind, path)."""
    kind, path = parse_destination(destination)
    try:
        return _check_target(kind, path)
    except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES on a parent: the path given cannot be used
        raise UserError(f"cannot use {quoted(path)} for {kind}: {exc.strerror or exc}",
                        hint="choose another (shorter) path") from None


def _check_target(kind: str, path: str) -> tuple[str, str]:
    target = Path(path)
    if kind == "docker-archive" and target.is_dir():
        raise UserError(f"{path} is a directory; docker-archive needs a file path")
    if kind == "oci" and target.exists():
        if not target.is_dir():
            raise UserError(f"{target} exists and is not a directory", hint="choose a directory path for oci:DIR")
        if not (target / "oci-layout").is_file() and any(target.iterdir()):
            raise UserError(f"{target} is neither an OCI layout (no oci-layout file) nor empty",
                            hint="choose a new or empty directory, or an existing layout")
        return kind, path
    parent = target.parent
    if not parent.is_dir():
        raise UserError(f"directory {parent} does not exist", hint="create it or choose another path")
    return kind, path


def export_image(store: LayoutStore, image: str, destination: str) -> dict:
    parse_destination(destination)
    if not store.exists():
        raise UserError(f"the local store at {store.root} is empty", hint="bake an image first")
    descriptor = store.resolve(image)
    if store.kind_of(descriptor) in ("artifact", "disk"):
        raise UserError(f"{image} is an artifact (such as a promotion record), not a container image",
                        hint="export an image; `imagebuild images` lists them")
    kind, path = check_destination(destination)
    ref_name = _tagged_name(store, image, descriptor.digest)
    name, _, tag = ref_name.rpartition(":")
    if kind == "oci":
        _export_layout(store, descriptor, Path(path), tag or "latest")
    else:
        write_docker_archive(store, descriptor.digest, [f"{name}:{tag or 'latest'}"], path)
    return {"image": ref_name, "digest": str(descriptor.digest), "destination": destination}


def _tagged_name(store: LayoutStore, image: str, digest: str) -> str:
    """The `name:tag` an export carries: the one asked for, or a tag of the same manifest."""
    refs = store.refs()
    if image in refs:
        return image
    if is_digest(image) or "@" in image:
        names = sorted(n for n, d in refs.items() if d.digest == digest and ":" in n.rsplit("/", 1)[-1])
        if names:
            return names[0]
        raise UserError(f"{image} has no name:tag in the local store; export it by name",
                        hint="run `imagebuild images` to see the names")
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"


def _export_layout(store: LayoutStore, descriptor: Descriptor, target: Path, tag: str) -> None:
    """Into an existing layout, add blobs then the tag; a new layout is staged and renamed into place,
    so a failure (a corrupt blob, a full disk) leaves no half-made directory behind."""
    # check_destination has refused what is neither a layout, nor empty, nor new.
    if (target / "oci-layout").is_file():
        _add_to_layout(store, descriptor, target, tag)
        return
    parent = target.parent
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.tmp-"))
    except OSError as exc:
        raise os_error_for(parent, exc) from None
    try:
        _export_into(store, descriptor, LayoutStore(staging), tag)
        _drop_store_files(staging, lock_was_there=False)
        os.chmod(staging, 0o755)
        # Replaces an empty directory too (rename(2) allows that).
        os.rename(staging, target)
    except OSError as exc:
        raise os_error_for(target, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _add_to_layout(store: LayoutStore, descriptor: Descriptor, target: Path, tag: str) -> None:
    lock_was_there = (target / ".lock").exists()
    lease_was_there = (target / LEASE_FILE).exists()
    _export_into(store, descriptor, LayoutStore(target), tag)
    _drop_store_files(target, lock_was_there, lease_was_there)


def _export_into(store: LayoutStore, descriptor: Descriptor, layout: LayoutStore, tag: str) -> None:
    """The image's blobs (verified) and exact manifest bytes into `layout`, under the bare `tag`."""
    layout.ensure()
    copy(LayoutPlace(store), LayoutPlace(layout), descriptor.digest, [tag], platform=descriptor.platform)


def _drop_store_files(layout: Path, lock_was_there: bool, lease_was_there: bool = False) -> None:
    """The store's own lock and lease files and temp directory are no part of a handed-over layout."""
    if not lock_was_there:
        (layout / ".lock").unlink(missing_ok=True)
    if not lease_was_there:
        release_lease(layout)
        (layout / LEASE_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (layout / "tmp").rmdir()
