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
import itertools
import json
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from imagebuild.atomic import replacing
from imagebuild.errors import CorruptBlobError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.compress import HashingSink
from imagebuild.oci.digest import Digest
from imagebuild.oci.mediatypes import layer_compression
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.layer import Entry, LayerResult, write_tar
from imagebuild.oci.model import Descriptor
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


def check_repo_tags(repo_tags: list[str]) -> None:
    for repo_tag in repo_tags:
        name, _, tag = repo_tag.rpartition(":")
        if not name or not tag or "/" in tag:
            raise UserError(f"docker-archive tag {repo_tag!r} must have the form name:tag")


def docker_archive_entries(store: LayoutStore, manifest_digest: str, repo_tags: list[str],
                           omit_layers: int = 0) -> list[Entry]:
    """The archive's entries; file contents are read only when the tar is written.

    `omit_layers`: leave out the files of that many leading layers (manifest.json
    still lists them). An engine with the graph-driver image store never opens a
    layer file whose chain it already has; see docs/docker-engine.md.
    """
    check_repo_tags(repo_tags)
    manifest_digest = store.image_for(manifest_digest)   # an index: this machine's image
    manifest = store.read_manifest(manifest_digest)
    diff_ids = store.read_config(manifest).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.layers):
        raise CorruptBlobError(f"image {manifest_digest} lists {len(manifest.layers)} layers "
                               f"but its config has {len(diff_ids)} diff_ids")
    entries = {}
    entries["config"] = _blob_entry(store, manifest.config.digest)
    layer_paths = []
    for index, (descriptor, diff_id) in enumerate(zip(manifest.layers, diff_ids)):
        zstd = layer_compression(descriptor.media_type) == "zstd"
        if index < omit_layers:
            layer_paths.append(f"blobs/sha256/{Digest(diff_id if zstd else descriptor.digest).hex}")
            continue
        if zstd:
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
    return [Entry.file("manifest.json", canonical_json(doc))] + list(entries.values())


def write_docker_archive(store: LayoutStore, manifest_digest: str, repo_tags: list[str], target: str) -> Path:
    check_repo_tags(repo_tags)
    # Refuse a bad path before reading the store: a zstd layer is decompressed in full below.
    target_path = Path(target)
    if target_path.is_dir():
        raise UserError(f"{target} is a directory; docker-archive needs a file path")
    parent = target_path.parent if str(target_path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"directory {parent} does not exist", hint="create it or choose another path")
    entries = docker_archive_entries(store, manifest_digest, repo_tags)
    try:
        with replacing(target_path, mode=FILE_MODE) as pending:
            write_tar(entries, pending.file, source_date_epoch=0)
    except OSError as exc:
        raise os_error_for(parent, exc) from None
    return target_path


# -- reading what `docker save` writes ------------------------------------------------

_SMALL = 1 << 20          # members up to this size are read whole: JSON documents, tiny layers
_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"


def read_docker_archive(store: LayoutStore, stream: BinaryIO, ref_names: tuple[str, ...] = (),
                        known: dict[str, LayerResult] | None = None) -> Descriptor:
    """Read a docker-archive (`docker save`, either the classic layout of `<id>/layer.tar`
    or the OCI-layout one of newer engines) from a forward-only stream into the store.

    Layers are stored gzip-compressed, one pass each, so memory stays flat.
    `known` maps diff_ids to layers already in the store: those are not stored
    again. The engine's config is kept byte for byte, so the stored image's
    config digest is the engine's image ID. Returns the manifest's descriptor.
    """
    known = dict(known or {})
    documents: dict[str, bytes] = {}
    layers: dict[str, LayerResult] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                head = handle.read(min(member.size, _SMALL))
                if member.size <= _SMALL and head[:1] in (b"{", b"["):
                    documents[member.name] = head
                    continue
                if member.name.endswith(("/VERSION", "/json")) or member.name in ("oci-layout", "repositories"):
                    continue
                layers[member.name] = _store_archive_layer(store, head, handle, known)
    except tarfile.TarError as exc:
        raise CorruptBlobError(f"the docker-archive stream is not a readable tar: {exc}") from None
    try:
        doc = json.loads(documents["manifest.json"])[0]
        config_raw = documents[doc["Config"]]
        config = json.loads(config_raw)
        paths = list(doc["Layers"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CorruptBlobError(f"the docker-archive has no usable manifest.json ({exc})") from None
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    found = []
    for path, diff_id in zip(paths, diff_ids):
        result = layers.get(path) or known.get(diff_id)
        if result is None or result.diff_id != diff_id:
            raise CorruptBlobError(f"the docker-archive's layer {path} is missing or is not {diff_id}")
        found.append(result)
    if len(paths) != len(diff_ids):
        raise CorruptBlobError(f"the docker-archive lists {len(paths)} layers for {len(diff_ids)} diff_ids")
    config_digest = store.put_blob(config_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor(mt.OCI_CONFIG, config_digest, len(config_raw)).to_dict(),
        "layers": [Descriptor(result.media_type, result.digest, result.size).to_dict() for result in found],
    }
    return store.put_manifest(canonical_json(manifest), mt.OCI_MANIFEST, tuple(ref_names))


def _store_archive_layer(store: LayoutStore, head: bytes, rest: BinaryIO,
                         known: dict[str, LayerResult]) -> LayerResult:
    """One layer file of an archive, gzip or plain (as engines write them), into the store as gzip."""
    chunks = itertools.chain([head], iter(functools.partial(rest.read, READ_CHUNK), b""))
    if head.startswith(_MAGIC_ZSTD):
        raise CorruptBlobError("the docker-archive holds a zstd layer; only plain and gzip layers are read")
    if head.startswith(_MAGIC_GZIP):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunks = (inflater.decompress(chunk) for chunk in chunks)
    with store.blob_writer() as writer:
        sink = HashingSink(writer.file, "gzip")
        for chunk in chunks:
            sink.write(chunk)
        sink.finish()
        diff_id = Digest.from_hasher(sink.raw_hash)
        if diff_id in known:
            return known[diff_id]       # the writer's temp file is dropped uncommitted
        result = LayerResult(diff_id=diff_id, digest=Digest.from_hasher(sink.compressed_hash),
                             size=sink.compressed_size, uncompressed_size=sink.raw_size,
                             media_type=mt.OCI_LAYER_GZIP)
        writer.commit(result.digest)
    known[str(diff_id)] = result
    return result
