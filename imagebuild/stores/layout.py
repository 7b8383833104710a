"""The local store: an OCI image layout on disk.

Blobs are content addressed and land by atomic rename from a temp file, so a
crash never leaves a half blob under its digest. Tags live in `index.json`
as `org.opencontainers.image.ref.name` annotations; every change to it is a
read-modify-write under an exclusive lock followed by an atomic rename.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from imagebuild.atomic import TEMP_NAME, write_atomically
from imagebuild.errors import CorruptBlobError, StoreError, UserError, quoted
from imagebuild.frozen import mutable
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import (ANNOTATION_REF_NAME, Descriptor, Image, ParsedManifest, Platform, host_platform,
                                  index_dict, parse_index, platform_child)
from imagebuild.stores.lease import hold_lease

OCI_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
READ_CHUNK = 1024 * 1024
# mkstemp creates files 0600; a layout is meant to be read by other users and tools.
FILE_MODE = 0o644
STALE_TEMP_SECONDS = 24 * 3600
LAYER_CACHE_DIR = "imagebuild-cache/layers"   # cache key → layer JSON files (build/cache.py), read by gc
DPKG_FACTS_DIR = "imagebuild-cache/dpkg"      # layer digest → its dpkg status (evidence/contents.py), dropped by gc
RECIPE_CACHE_DIR = "imagebuild-cache/recipes"  # recipe's real path → the recipe loaded from it (recipe/cache.py), pruned by gc
# Base layers whose diff_id a bake checked (build/layers/debian.py); gc forgets those whose blob is gone.
VERIFIED_LAYERS_FILE = "verified-base-layers.json"
# host/repository -> {cache key -> entry digest} of the registry layer-cache entries written (build/remote_cache.py),
# pruned by gc to the keys the layer cache holds
PUBLISHED_CACHE_ENTRIES_FILE = "registry-cache-entries.json"
_REFERRERS_TAG = re.compile(r"sha256-[0-9a-f]{64}")   # the referrers tag schema's tag (stores/place.py)
DISK_SUFFIX = "-disk"          # NAME:TAG-disk tags the VM disk baked from NAME:TAG (kind "disk")


class StoreNotWritableError(UserError):
    """The store's directory cannot be created or written."""


def default_store_path() -> Path:
    explicit = os.environ.get("IMAGEBUILD_STORE")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "imagebuild" / "store"


def os_error_for(path: Path, exc: OSError) -> UserError | StoreError:
    """The one-line error for an OSError on the store or a layout at `path`; shared by every writer of layouts."""
    if exc.errno == errno.EROFS:
        return StoreNotWritableError(f"cannot write the store at {path}: {exc.strerror}",
                                     hint="point --store or IMAGEBUILD_STORE at a writable directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        # The same errno for a read and a write: name the file (or, for one not made, its directory).
        where = exc.filename or path
        if exc.filename and not os.path.lexists(exc.filename):
            where = os.path.dirname(exc.filename) or path
        return StoreNotWritableError(f"no access to {where} in the store at {path}: {exc.strerror}",
                                     hint="point --store or IMAGEBUILD_STORE at a directory you can read and write")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return StoreNotWritableError(f"cannot use {path} as the store: {exc.strerror}",
                                     hint="point --store or IMAGEBUILD_STORE at a directory")
    if exc.errno == errno.ENOSPC:
        return StoreError(f"no space left for the store at {path}", hint="free disk space and retry")
    return StoreError(f"store at {path}: {exc.strerror or exc}")


@mutable
class BlobWriter:
    """A temp file in the store; `commit` moves it under its digest."""

    store: "LayoutStore"
    file: BinaryIO
    temp_path: Path
    committed: Digest | None = None

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def commit(self, digest: Digest) -> Path:
        self.file.flush()
        os.fchmod(self.file.fileno(), FILE_MODE)
        os.fsync(self.file.fileno())
        self.file.close()
        target = self.store.blob_path(digest)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.temp_path, target)
        except OSError as exc:
            raise os_error_for(self.store.root, exc) from None
        self.committed = digest
        return target


class LayoutStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_path()
        self._ensured = False

    # -- set-up ---------------------------------------------------------

    def ensure(self) -> "LayoutStore":
        """Create the layout if missing. Safe to call from many processes at once."""
        try:
            (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            self._tmp_dir().mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # one unremovable leftover must not stop a bake
                self.sweep_stale_temps()
            if not (self.root / "oci-layout").exists():
                self._atomic_write(self.root / "oci-layout", canonical_json(OCI_LAYOUT_VERSION))
            with self.locked():
                if not (self.root / "index.json").exists():
                    self._atomic_write(self.root / "index.json", canonical_json(index_dict([])))
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        self._ensured = True
        return self

    def sweep_stale_temps(self, older_than: float = STALE_TEMP_SECONDS, *, dry_run: bool = False) -> int:
        """Remove temp files a killed writer left behind (a live writer keeps touching its file):
        every file in tmp/, and the `.tmp-*` files of atomic writes beside index.json and the
        other files of the store's own directories.

        Returns how many were (or, with `dry_run`, would be) removed."""
        cutoff = time.time() - older_than
        removed = 0
        entries: list[os.DirEntry] = []
        for directory in self._atomic_write_dirs():
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                entries.extend(entry for entry in os.scandir(directory) if TEMP_NAME.match(entry.name))
        with contextlib.suppress(FileNotFoundError):
            entries.extend(os.scandir(self._tmp_dir()))
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                if not dry_run:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed += 1
        return removed

    def _atomic_write_dirs(self) -> list[Path]:
        """The store's directories that files are atomically replaced in: the root (index.json,
        oci-layout, the registry hints) and the imagebuild-cache tree (layer-cache entries).
        blobs/ is left out: blobs are written in tmp/ and renamed there."""
        found = [self.root]
        for top, _dirs, _files in os.walk(self.root / "imagebuild-cache"):
            found.append(Path(top))
        return found

    def exists(self) -> bool:
        return (self.root / "index.json").is_file()

    def _tmp_dir(self) -> Path:
        return self.root / "tmp"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the store's index, across processes."""
        try:
            handle = open(self.root / ".lock", "a+b")
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _atomic_write(self, path: Path, data: bytes) -> None:
        write_atomically(path, data, mode=FILE_MODE, prefix=".tmp-")

    # -- blobs ------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / Digest(digest).hex

    def has_blob(self, digest: str) -> bool:
        # A blob found here may be about to be referenced: keep `gc` away until this process ends.
        hold_lease(self.root)
        return self.blob_path(digest).is_file()

    @contextlib.contextmanager
    def blob_writer(self) -> Iterator[BlobWriter]:
        """Write a blob through a temp file; uncommitted temp files are removed."""
        if not self._ensured:  # once per store object: a bake writes many blobs
            self.ensure()
        hold_lease(self.root)    # the blob is unreferenced until its image is tagged; see stores/lease.py
        import tempfile     # with shutil, bz2 and lzma: only for writing blobs, which the everyday reads never do

        try:
            fd, temp = tempfile.mkstemp(dir=self._tmp_dir(), prefix="blob-")
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        writer = BlobWriter(self, os.fdopen(fd, "wb"), Path(temp))
        try:
            yield writer
        finally:
            if writer.committed is None:
                writer.file.close()
                with contextlib.suppress(OSError):
                    os.unlink(temp)

    def put_blob(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        if self.has_blob(digest):
            return digest
        with self.blob_writer() as writer:
            writer.write(data)
            writer.commit(digest)
        return digest

    def put_blob_stream(self, stream: BinaryIO, expected: Digest | None = None) -> tuple[Digest, int]:
        """Copy a stream in, verifying it against `expected` when given."""
        hasher = hashlib.sha256()
        size = 0
        with self.blob_writer() as writer:
            while chunk := stream.read(READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
                writer.write(chunk)
            digest = Digest.from_hasher(hasher)
            if expected is not None and digest != expected:
                raise CorruptBlobError(f"received blob does not match {expected} (got {digest})",
                                       hint="the source sent different bytes; retry")
            writer.commit(digest)
        return digest, size

    def read_blob(self, digest: str) -> bytes:
        """The whole blob, verified against its digest."""
        hold_lease(self.root)
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store at {self.root}",
                             hint="bake or pull the image again") from None
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        if Digest.of(data) != digest:
            raise CorruptBlobError(f"blob {digest} in the store at {self.root} is corrupt",
                                   hint=f"delete {path} and bake or pull again")
        return data

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """A streaming reader that raises CorruptBlobError at end of stream on mismatch."""
        hold_lease(self.root)
        path = self.blob_path(digest)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store at {self.root}",
                             hint="bake or pull the image again") from None
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        with handle:
            yield _VerifyingReader(handle, Digest(digest), path)

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store at {self.root}",
                             hint="bake or pull the image again") from None
        except OSError as exc:
            raise os_error_for(self.root, exc) from None

    def verify_blob(self, digest: str) -> None:
        with self.open_blob(digest) as reader:
            while reader.read(READ_CHUNK):
                pass

    # -- images and tags ----------------------------------------------------

    def write_image(self, image: Image, ref_names: list[str] | tuple[str, ...] = (),
                    elsewhere: frozenset[str] = frozenset()) -> Descriptor:
        """Store config and manifest (layers must already be here, but for the digests `elsewhere`:
        layers a registry's layer cache holds, fetched only by an output that reads them) and tag it."""
        for layer in image.layers:
            if layer.digest not in elsewhere and not self.has_blob(layer.digest):
                raise StoreError(f"layer {layer.digest} is not in the store; cannot write the image")
        self.put_blob(image.config_bytes())
        manifest = image.manifest_bytes()
        self.put_blob(manifest)
        descriptor = image.manifest_descriptor()
        for ref_name in ref_names:
            self.tag(ref_name, descriptor)
        return descriptor

    def put_manifest(self, raw: bytes, media_type: str, ref_names: tuple[str, ...] | list[str] = ()) -> Descriptor:
        """Store manifest bytes exactly as given."""
        digest = self.put_blob(raw)
        descriptor = Descriptor(media_type, digest, len(raw))
        for ref_name in ref_names:
            self.tag(ref_name, descriptor)
        return descriptor

    def _read_index(self) -> dict:
        path = self.root / "index.json"
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError:
            return index_dict([])
        except OSError as exc:
            raise os_error_for(self.root, exc) from None
        except ValueError as exc:
            raise StoreError(f"the store's index {path} is unreadable: {exc}",
                             hint="restore it or remove the store") from None
        entries = index.get("manifests", []) if isinstance(index, dict) else None
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise StoreError(f"the store's index {path} is not an OCI image index (no list of manifests)",
                             hint="restore it or remove the store")
        return index

    def manifests(self) -> list[Descriptor]:
        return self._descriptors(self._read_index())

    def _descriptors(self, index: dict) -> list[Descriptor]:
        try:
            return [Descriptor.from_dict(d) for d in index.get("manifests", [])]
        except (KeyError, TypeError, ValueError, UserError) as exc:
            raise StoreError(f"the store's index {self.root / 'index.json'} holds a garbled descriptor ({exc})",
                             hint="restore it or remove the store") from None

    def tag(self, ref_name: str, descriptor: Descriptor) -> None:
        self.ensure()
        tagged = descriptor.with_annotations(**{ANNOTATION_REF_NAME: ref_name})
        try:
            with self.locked():
                index = self._read_index()
                kept = [d for d in index.get("manifests", [])
                        if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME) != ref_name]
                kept.append(tagged.to_dict())
                kept.sort(key=lambda d: (d.get("annotations") or {}).get(ANNOTATION_REF_NAME, ""))
                index["manifests"] = kept
                self._atomic_write(self.root / "index.json", canonical_json(index))
        except OSError as exc:
            raise os_error_for(self.root, exc) from None

    def untag(self, *ref_names: str, choose: Callable[[dict[str, Descriptor]], Iterable[str]] | None = None,
              held: bool = False) -> dict[str, Descriptor]:
        """Remove tags in one index write under the lock; returns the removed ones.

        `choose`, given the refs as they are under the lock, names the tags instead
        (it may raise to remove nothing), so checking and removing cannot race a writer.
        `held`: the caller holds the lock already (gc)."""
        with contextlib.nullcontext() if held else self.locked():
            index = self._read_index()
            wanted = set(choose(_refs_of(self._descriptors(index))) if choose else ref_names)
            removed: dict[str, Descriptor] = {}
            kept = []
            for entry in index.get("manifests", []):
                name = (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME)
                if name in wanted:
                    removed[name] = Descriptor.from_dict(entry)
                else:
                    kept.append(entry)
            if removed:
                index["manifests"] = kept
                try:
                    self._atomic_write(self.root / "index.json", canonical_json(index))
                except OSError as exc:
                    raise os_error_for(self.root, exc) from None
            return removed

    def refs(self) -> dict[str, Descriptor]:
        return _refs_of(self.manifests())

    def resolve(self, ref_name: str) -> Descriptor:
        """A tagged name (`hello:abc1234`) or a manifest digest to its descriptor."""
        refs = self.refs()
        if ref_name in refs:
            return refs[ref_name]
        for descriptor in refs.values():
            if ref_name.endswith("@" + descriptor.digest) or ref_name == descriptor.digest:
                return descriptor
        if ":" not in ref_name and f"{ref_name}:latest" in refs:
            return refs[f"{ref_name}:latest"]
        raise UserError(f"no image {quoted(ref_name)} in the local store at {self.root}",
                        hint="run `imagebuild images` to list what is there")

    def read_manifest(self, digest: str) -> ParsedManifest:
        raw = self.read_blob(digest)
        try:
            return ParsedManifest.parse(raw)
        except (ValueError, KeyError) as exc:
            raise StoreError(f"blob {digest} is not an image manifest: {exc}") from None

    def kind_of(self, descriptor: Descriptor) -> str:
        """"index", "image", "disk" (the VM disk of an image, tagged NAME:TAG-disk), "referrers" (the
        index of an image's attachments, tagged NAME:sha256-<hex>, the referrers tag schema), or
        "artifact": any other manifest whose config is no image config, such as a promotion record, or a
        signature manifest."""
        if descriptor.media_type in mt.INDEX_TYPES:
            return "referrers" if is_referrers_ref(descriptor.annotations.get(ANNOTATION_REF_NAME, "")) else "index"
        manifest = self.read_manifest(descriptor.digest)
        if manifest.config.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
            # cosign's signature manifest (`sha256-<hex>.sig`) has an image config too, but holds only signatures.
            signatures = manifest.layers and all(layer.media_type == mt.COSIGN_SIMPLESIGNING for layer in manifest.layers)
            return "artifact" if signatures else "image"
        return "disk" if json.loads(manifest.raw).get("artifactType") == mt.IMAGEBUILD_DISK else "artifact"

    def platforms_of(self, digest: str) -> list[str]:
        """OS/ARCH of each image an index in the store lists."""
        try:
            children = parse_index(self.read_blob(digest))
        except ValueError as exc:  # MalformedError
            raise StoreError(f"blob {digest} is not an image index: {exc}") from None
        return [f"{child.platform.os}/{child.platform.architecture}" for child in children if child.platform]

    def image_for(self, digest: str, platform: Platform | None = None) -> str:
        """The image manifest behind `digest`: itself, or, for an index, its child for `platform`
        (default: this machine's), which a Docker engine or a docker-archive can take."""
        raw = self.read_blob(digest)
        try:
            media = json.loads(raw).get("mediaType")
        except (ValueError, AttributeError):
            media = None
        if media not in mt.INDEX_TYPES:
            return digest    # an image (or no manifest at all: its reader says so)
        platform = platform or host_platform()
        try:
            child = platform_child(parse_index(raw), platform)
        except ValueError as exc:  # MalformedError
            raise StoreError(f"blob {digest} is not an image index: {exc}") from None
        if child is None:
            raise UserError(f"{digest} has no image for {platform.os}/{platform.architecture}",
                            hint="bake it with that platform listed under platforms")
        return str(child.digest)

    def read_config(self, manifest: ParsedManifest) -> dict:
        return json.loads(self.read_blob(manifest.config.digest))


class _VerifyingReader:
    """Hashes what is read and checks it against the digest once the last byte is out.

    The check fires when the read total reaches the file's size, not only at
    an empty read: tar and copy loops that read exactly `size` bytes never ask
    for the empty read, and a corrupt blob must not slip through them.
    """

    def __init__(self, handle: BinaryIO, digest: Digest, path: Path):
        self._handle = handle
        self._digest = digest
        self._path = path
        self._hash = hashlib.sha256()
        self._size = os.fstat(handle.fileno()).st_size
        self._read = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        chunk = self._handle.read(n)
        if chunk:
            self._hash.update(chunk)
            self._read += len(chunk)
        if not self._done and (not chunk or self._read >= self._size):
            self._done = True
            if Digest.from_hasher(self._hash) != self._digest:
                raise CorruptBlobError(f"blob {self._digest} in the store is corrupt",
                                       hint=f"delete {self._path} and bake or pull again")
        return chunk

    def readable(self) -> bool:
        return True


def is_referrers_ref(ref_name: str) -> bool:
    """Whether a store ref is an image's referrers tag, NAME:sha256-<hex> (the index of its attachments)."""
    return bool(_REFERRERS_TAG.fullmatch(ref_name.rpartition(":")[2]))


def _refs_of(descriptors: Iterable[Descriptor]) -> dict[str, Descriptor]:
    return {name: d for d in descriptors if (name := d.annotations.get(ANNOTATION_REF_NAME))}


