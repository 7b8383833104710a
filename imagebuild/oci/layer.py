"""The reproducible layer writer.

Same entries in, same bytes out: entries are sorted by path, owners are
numeric with blank names, mtimes are integers clamped to SOURCE_DATE_EPOCH,
hardlinks point at the first path in sorted order, and PAX headers carry no
atime/ctime. The tar stream is hashed and compressed in one pass, so memory
stays flat whatever the layer size.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, replace
from typing import BinaryIO, Callable, Iterable, Iterator

from imagebuild.errors import LayerInputError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.compress import HashingSink
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import Descriptor, Layer

FILE, DIR, SYMLINK, HARDLINK, CHARDEV, BLOCKDEV, FIFO = (
    "file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo")

_TAR_TYPES = {FILE: tarfile.REGTYPE, DIR: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE,
              HARDLINK: tarfile.LNKTYPE, CHARDEV: tarfile.CHRTYPE, BLOCKDEV: tarfile.BLKTYPE,
              FIFO: tarfile.FIFOTYPE}

COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One path in a layer. `opener` or `data` supplies a file's content."""

    path: str
    kind: str = FILE
    mode: int = 0o644
    mtime: int | None = None
    size: int = 0
    data: bytes | None = None
    opener: Callable[[], BinaryIO] | None = None
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0

    @classmethod
    def file(cls, path: str, data: bytes, mode: int = 0o644, mtime: int | None = None) -> "Entry":
        return cls(path=path, kind=FILE, mode=mode, mtime=mtime, size=len(data), data=data)

    @classmethod
    def directory(cls, path: str, mode: int = 0o755, mtime: int | None = None) -> "Entry":
        return cls(path=path, kind=DIR, mode=mode, mtime=mtime)

    @classmethod
    def symlink(cls, path: str, target: str, mtime: int | None = None) -> "Entry":
        return cls(path=path, kind=SYMLINK, mode=0o777, mtime=mtime, linkname=target)


@dataclass(frozen=True)
class LayerResult:
    diff_id: Digest
    digest: Digest
    size: int
    uncompressed_size: int
    media_type: str

    def as_layer(self, annotations: dict[str, str] | None = None) -> Layer:
        return Layer(Descriptor(self.media_type, self.digest, self.size, annotations or {}), self.diff_id)


def normalize_path(path: str) -> str:
    """A layer path: relative, POSIX, no `.`/`..` components. Refuses anything else."""
    if not path or path in (".", "./"):
        raise LayerInputError("empty path in layer entries")
    if path.startswith("/"):
        raise LayerInputError(f"absolute path {path!r} refused in a layer",
                              hint="layer entries must be relative to the image root")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise LayerInputError(f"path {path!r} escapes the layer root with '..'",
                              hint="remove the '..' component")
    if not parts:
        raise LayerInputError(f"empty path {path!r} in layer entries")
    return "/".join(parts)


def media_type_for(compression: str) -> str:
    return {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER}[compression]


def _prepare(entries: Iterable[Entry], source_date_epoch: int | None) -> list[Entry]:
    """Normalise, clamp, add missing parents, refuse duplicates, sort."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = normalize_path(entry.path)
        if path in by_path:
            raise LayerInputError(f"path {path!r} appears twice in one layer")
        mtime = entry.mtime if entry.mtime is not None else (source_date_epoch or 0)
        mtime = int(mtime)
        if source_date_epoch is not None:
            mtime = min(mtime, source_date_epoch)
        mtime = max(mtime, 0)
        linkname = entry.linkname
        if entry.kind == HARDLINK:
            linkname = normalize_path(linkname)
        by_path[path] = replace(entry, path=path, mtime=mtime, linkname=linkname)
    _canonical_hardlinks(by_path)
    default_mtime = source_date_epoch or 0
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent and parent not in by_path:
            by_path[parent] = Entry.directory(parent, mtime=default_mtime)
            parent = posixpath.dirname(parent)
    for path, entry in by_path.items():
        if entry.kind != DIR:
            parent = posixpath.dirname(path)
            if parent and by_path[parent].kind != DIR:
                raise LayerInputError(f"{path!r} is inside {parent!r}, which is not a directory")
    return [by_path[p] for p in sorted(by_path, key=_sort_key)]


def _canonical_hardlinks(by_path: dict[str, Entry]) -> None:
    """Give each group of hardlinked paths its content at the first path in sorted order.

    A tar hardlink must follow its target, and which path holds the content
    must not depend on the order entries were given in. Links whose target is
    not in this layer (it may live in a lower one) are left as they are.
    """
    groups: dict[str, list[str]] = {}
    for path, entry in by_path.items():
        if entry.kind != HARDLINK:
            continue
        target, seen = entry.linkname, {path}
        while target in by_path and by_path[target].kind == HARDLINK and target not in seen:
            seen.add(target)
            target = by_path[target].linkname
        if target in seen:
            raise LayerInputError(f"hardlink {path!r} is part of a loop of hardlinks")
        if target not in by_path:
            continue
        if by_path[target].kind != FILE:
            raise LayerInputError(f"hardlink {path!r} points at {target!r}, which is not a regular file")
        groups.setdefault(target, [target]).append(path)
    for content_path, paths in groups.items():
        content = by_path[content_path]
        first = min(paths, key=_sort_key)
        by_path[first] = replace(content, path=first)
        for path in paths:
            if path != first:
                by_path[path] = replace(content, path=path, kind=HARDLINK, linkname=first, size=0,
                                        data=None, opener=None)


def _sort_key(path: str) -> bytes:
    # Byte order of the UTF-8 path matches `tar --sort=name`.
    return path.encode("utf-8", "surrogateescape")


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.type = _TAR_TYPES[entry.kind]
    info.mode = entry.mode & 0o7777
    info.mtime = int(entry.mtime or 0)
    info.uid = entry.uid
    info.gid = entry.gid
    info.uname = ""
    info.gname = ""
    info.linkname = entry.linkname
    info.size = entry.size if entry.kind == FILE else 0
    info.devmajor = entry.devmajor
    info.devminor = entry.devminor
    return info


def write_tar(entries: Iterable[Entry], out, source_date_epoch: int | None = None) -> None:
    """Write the sorted, normalised entries as an uncompressed tar stream to `out`."""
    prepared = _prepare(entries, source_date_epoch)
    # Plain "w" mode on a counting writer, not stream mode ("w|"): the stream buffer
    # grows by concatenation and costs many copies per byte; the tar bytes are the same.
    with tarfile.TarFile(fileobj=_CountingWriter(out), mode="w", format=tarfile.PAX_FORMAT,
                         encoding="utf-8", copybufsize=COPY_BUFFER) as tar:
        for entry in prepared:
            info = _tarinfo(entry)
            if entry.kind != FILE:
                tar.addfile(info)
            elif entry.data is not None:
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.opener is not None:
                with entry.opener() as handle:
                    tar.addfile(info, _ExactReader(handle, entry.size, entry.path))
            else:
                raise LayerInputError(f"file entry {entry.path!r} has no content")


class _CountingWriter:
    """Forward writes; `tell` is the count so far, which is all TarFile asks of its file."""

    def __init__(self, out):
        self._out = out
        self._count = 0

    def write(self, data) -> int:
        self._out.write(data)
        self._count += len(data)
        return len(data)

    def tell(self) -> int:
        return self._count


class _ExactReader:
    """Refuses a file that changed size between scan and write, rather than writing a corrupt tar."""

    def __init__(self, handle: BinaryIO, size: int, path: str):
        self._handle = handle
        self._left = size
        self._path = path

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        # Pipes and decompressors may return short reads before the end; only EOF is a shrink.
        chunk = self._handle.read(n)
        while len(chunk) < n:
            more = self._handle.read(n - len(chunk))
            if not more:
                break
            chunk += more
        if len(chunk) < n:
            raise UserError(f"{self._path} shrank while it was being written into a layer",
                            hint="do not change files while baking")
        self._left -= len(chunk)
        return chunk


def write_layer(entries: Iterable[Entry], out: BinaryIO, compression: str = "gzip",
                source_date_epoch: int | None = None) -> LayerResult:
    """Write one layer blob to `out`; return its diff_id, digest and size."""
    sink = HashingSink(out, compression)
    write_tar(entries, sink, source_date_epoch)
    sink.finish()
    return LayerResult(diff_id=Digest.from_hasher(sink.raw_hash),
                       digest=Digest.from_hasher(sink.compressed_hash),
                       size=sink.compressed_size, uncompressed_size=sink.raw_size,
                       media_type=media_type_for(compression))


def entries_from_directory(root: str, prefix: str = "", *, follow_root_symlink: bool = True,
                           keep_owner: bool = False) -> Iterator[Entry]:
    """Every path under `root` as entries rooted at `prefix`.

    Hardlinked files become one file plus hardlinks to the first path in
    sorted order, so the bytes do not depend on the directory's listing order.
    """
    if not os.path.exists(root):
        raise UserError(f"path not found: {root}", hint="check the path exists")
    if not os.path.isdir(root):
        raise UserError(f"not a directory: {root}")
    prefix = prefix.strip("/")
    found: list[tuple[str, str, os.stat_result]] = []

    def unreadable(exc: OSError) -> None:
        # os.walk would otherwise skip the directory's contents without a word.
        raise LayerInputError(f"cannot read {exc.filename}: {exc.strerror}",
                              hint="make it readable, or move it out of the tree") from None

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            found.append((posixpath.join(prefix, rel) if prefix else rel, full, os.lstat(full)))
    found.sort(key=lambda item: _sort_key(item[0]))
    first_of_inode: dict[tuple[int, int], str] = {}
    for layer_path, full, st in found:
        owner = {"uid": st.st_uid, "gid": st.st_gid} if keep_owner else {}
        mode = stat.S_IMODE(st.st_mode)
        mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            yield Entry(layer_path, DIR, mode, mtime, **owner)
        elif stat.S_ISLNK(st.st_mode):
            yield Entry(layer_path, SYMLINK, 0o777, mtime, linkname=os.readlink(full), **owner)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_of_inode:
                yield Entry(layer_path, HARDLINK, mode, mtime, linkname=first_of_inode[key], **owner)
                continue
            if st.st_nlink > 1:
                first_of_inode[key] = layer_path
            try:
                # Found now, not halfway through writing the layer.
                os.close(os.open(full, os.O_RDONLY))
            except OSError as exc:
                unreadable(exc)
            yield Entry(layer_path, FILE, mode, mtime, size=st.st_size,
                        opener=functools.partial(open, full, "rb"), **owner)
        elif stat.S_ISFIFO(st.st_mode):
            yield Entry(layer_path, FIFO, mode, mtime, **owner)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = CHARDEV if stat.S_ISCHR(st.st_mode) else BLOCKDEV
            yield Entry(layer_path, kind, mode, mtime, devmajor=os.major(st.st_rdev),
                        devminor=os.minor(st.st_rdev), **owner)
        # sockets cannot live in a tar; they are skipped on purpose


def entries_from_tar(tar: tarfile.TarFile, drop: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Re-express an existing tar (opened for random access) as entries, keeping owners."""
    kinds = {v: k for k, v in _TAR_TYPES.items()}
    kinds[tarfile.AREGTYPE] = FILE
    kinds[tarfile.CONTTYPE] = FILE
    for member in tar.getmembers():
        path = member.name.lstrip("./") if member.name.startswith("./") else member.name
        path = path.strip("/")
        if not path or path == ".":
            continue
        if drop and drop(path):
            continue
        kind = kinds.get(member.type)
        if kind is None:
            continue
        linkname = member.linkname
        if kind == HARDLINK:
            linkname = linkname[2:] if linkname.startswith("./") else linkname.lstrip("/")
            if drop and drop(linkname):
                continue
        opener = functools.partial(tar.extractfile, member) if kind == FILE else None
        yield Entry(path, kind, member.mode, int(member.mtime), size=member.size if kind == FILE else 0,
                    opener=opener, linkname=linkname, uid=member.uid, gid=member.gid,
                    devmajor=member.devmajor, devminor=member.devminor)
