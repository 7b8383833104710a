"""docker-archive: the tarball `docker load` reads.

Written with the reproducible layer writer, so the same image always gives
the same archive bytes. gzip and plain layers keep their stored bytes; zstd
layers go in as plain tars, because `docker load` cannot read zstd from an
archive. `docker load` checks each layer against its diff_id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from pathlib import Path

from imagebuild.atomic import replacing
from imagebuild.errors import CorruptBlobError, UserError
from imagebuild.oci.digest import Digest
from imagebuild.oci.mediatypes import layer_compression
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.layer import Entry, write_tar
from imagebuild.stores.layout import FILE_MODE, READ_CHUNK, LayoutStore, os_error_for


def _blob_entry(store: LayoutStore, digest: str) -> Entry:
    path = f"blobs/sha256/{digest.split(':', 1)[1]}"
    return Entry(path, size=store.blob_size(digest),
                 opener=functools.partial(_verified_opener, store, digest))


def _plain_layer_entry(store: LayoutStore, digest: str, diff_id: str) -> Entry:
    """A zstd layer as its plain tar, named by diff_id: `docker load` reads gzip or plain
    layers from an archive but refuses zstd ones ("invalid tar header")."""
    import zstandard

    hasher, size = hashlib.sha256(), 0
    try:
        with _zstd_plain(store, digest) as plain:
            while chunk := plain.read(READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
    except zstandard.ZstdError as exc:
        raise CorruptBlobError(f"layer {digest} in the store at {store.root} is corrupt: {exc}",
                               hint=f"delete {store.blob_path(digest)} and bake or pull again") from None
    if Digest.from_hasher(hasher) != diff_id:
        raise CorruptBlobError(f"layer {digest} does not decompress to its diff_id {diff_id}",
                               hint="the stored image is damaged; bake or pull it again")
    return Entry(f"blobs/sha256/{Digest(diff_id).hex}", size=size,
                 opener=functools.partial(_zstd_plain, store, digest))


@contextlib.contextmanager
def _zstd_plain(store: LayoutStore, digest: str):
    import zstandard

    with store.open_blob(digest) as reader:
        with zstandard.ZstdDecompressor().stream_reader(reader, closefd=False) as plain:
            yield plain
        reader.read()


@contextlib.contextmanager
def _verified_opener(store: LayoutStore, digest: str):
    with store.open_blob(digest) as reader:
        yield reader
        # drain so a corrupt blob is caught even if tar read exactly `size` bytes
        reader.read()


def write_docker_archive(store: LayoutStore, manifest_digest: str, repo_tags: list[str], target: str) -> Path:
    for repo_tag in repo_tags:
        name, _, tag = repo_tag.rpartition(":")
        if not name or not tag or "/" in tag:
            raise UserError(f"docker-archive tag {repo_tag!r} must have the form name:tag")
    # Refuse a bad path before reading the store: a zstd layer is decompressed in full below.
    target_path = Path(target)
    if target_path.is_dir():
        raise UserError(f"{target} is a directory; docker-archive needs a file path")
    parent = target_path.parent if str(target_path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"directory {parent} does not exist", hint="create it or choose another path")
    manifest = store.read_manifest(manifest_digest)
    diff_ids = store.read_config(manifest).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.layers):
        raise CorruptBlobError(f"image {manifest_digest} lists {len(manifest.layers)} layers "
                               f"but its config has {len(diff_ids)} diff_ids")
    entries = {}
    entries["config"] = _blob_entry(store, manifest.config.digest)
    layer_paths = []
    for descriptor, diff_id in zip(manifest.layers, diff_ids):
        if layer_compression(descriptor.media_type) == "zstd":
            entry = _plain_layer_entry(store, descriptor.digest, diff_id)
        else:
            entry = _blob_entry(store, descriptor.digest)
        entries[entry.path] = entry
        layer_paths.append(entry.path)
    doc = [{
        "Config": entries["config"].path,
        "RepoTags": list(repo_tags),
        "Layers": layer_paths,
    }]
    entries = [Entry.file("manifest.json", canonical_json(doc))] + list(entries.values())
    try:
        with replacing(target_path, mode=FILE_MODE) as pending:
            write_tar(entries, pending.file, source_date_epoch=0)
    except OSError as exc:
        raise os_error_for(parent, exc) from None
    return target_path
