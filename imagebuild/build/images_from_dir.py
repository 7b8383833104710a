"""A single-layer image from a directory, written into the local store.

The directory's tree becomes one reproducible layer (owners dropped, mtimes
clamped to SOURCE_DATE_EPOCH); the runtime settings go into the config. This
suits static bundles: a busybox or Go binary plus its files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from imagebuild.errors import UserError, quoted
from imagebuild.oci.layer import entries_from_directory, normalize_path, write_layer
from imagebuild.oci.model import Descriptor, Image, Platform, rfc3339
from imagebuild.oci.reference import Reference
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.reserved_tags import refuse_promotion_tag

COMPRESSIONS = ("gzip", "zstd")


def source_date_epoch_from_env() -> int:
    """SOURCE_DATE_EPOCH as an integer; 0 when unset, so output never depends on the clock."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise UserError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds",
                        hint="set it to e.g. $(git log -1 --format=%ct)")
    return int(raw)


def store_ref_name(name: str) -> str:
    """`name[:tag]` checked as an image reference, with `latest` when no tag is given."""
    reference = Reference.parse(name)
    if reference.digest:
        raise UserError(f"{name!r} carries a digest; give NAME:TAG", hint="the digest is computed, not chosen")
    # Without a recipe the environments are unknown here; a record's tag is promotion's in any case.
    refuse_promotion_tag(reference.tag or "latest", ())
    return str(reference.with_tag(reference.tag or "latest"))


def check_workdir(workdir: str) -> str:
    """The container's working directory: an absolute path, as the OCI config requires
    (engines differ on what a relative one means)."""
    hint = "give the directory inside the image, e.g. --workdir /app"
    if not workdir.startswith("/"):
        raise UserError(f"workdir {quoted(workdir)} is not an absolute path", hint=hint)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7f for ch in workdir):
        raise UserError(f"workdir {quoted(workdir)} holds a control character", hint=hint)
    return workdir


def image_from_directory(store: LayoutStore, directory: str | os.PathLike, name: str, *,
                         entrypoint: Sequence[str] | None = None, cmd: Sequence[str] | None = None,
                         env: Sequence[str] = (), workdir: str | None = None, prefix: str = "",
                         compression: str = "gzip", source_date_epoch: int | None = None,
                         platform: Platform = Platform()) -> Descriptor:
    """Write `directory` as a one-layer image tagged `name` into `store`; return the manifest descriptor."""
    if compression not in COMPRESSIONS:
        raise UserError(f"unknown compression {compression!r}", hint="use gzip or zstd")
    ref_name = store_ref_name(name)
    root = Path(directory)
    if not root.exists():
        raise UserError(f"directory not found: {root}", hint="give the directory holding the image's files")
    if not root.is_dir():
        raise UserError(f"not a directory: {root}", hint="give the directory holding the image's files")
    for item in env:
        if "=" not in item or item.startswith("="):
            raise UserError(f"environment setting {item!r} is not KEY=VALUE")
    if workdir is not None:
        check_workdir(workdir)
    if prefix.strip("/"):
        normalize_path(prefix.strip("/"))
    epoch = source_date_epoch_from_env() if source_date_epoch is None else source_date_epoch
    # Validate every entry before the first byte is written: a refused path leaves nothing behind.
    entries = list(entries_from_directory(str(root), prefix))
    store.ensure()
    with store.blob_writer() as writer:
        result = write_layer(entries, writer, compression=compression, source_date_epoch=epoch)
        writer.commit(result.digest)
    image = Image(created=rfc3339(epoch), platform=platform)
    # The directory's name stays out of the history: the same tree elsewhere gives the same image.
    image = image.with_layer(result.as_layer(), created_by="imagebuild image from-dir")
    image = image.with_runtime(Entrypoint=list(entrypoint) if entrypoint else None,
                               Cmd=list(cmd) if cmd else None, Env=list(env) or None,
                               WorkingDir=workdir or None)
    return store.write_image(image, [ref_name])
