"""An image's layers applied in order, as one tar: the root file system a disk holds.

The result is what a container engine would show the app: each layer's entries
in order, whiteouts (`.wh.NAME`) removing what lower layers put at NAME, opaque
markers (`.wh..wh..opq`) hiding a directory's lower contents. File bytes,
modes, owners and times are copied as they are; names of owners are dropped so
that no tool maps them through the build host's user database.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from imagebuild.errors import BuildError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import Descriptor
from imagebuild.stores.layout import LayoutStore

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20


@dataclass
class _Member:
    layer: int
    info: tarfile.TarInfo


def _normal(name: str) -> str:
    parts = [part for part in PurePosixPath(name.lstrip("/")).parts if part not in (".", "")]
    if ".." in parts:
        raise BuildError(f"a layer holds the path {name!r}, which leaves the root")
    return "/".join(parts)


def _sort_key(path: str) -> tuple[str, ...]:
    # parents before children, siblings by name
    return tuple(path.split("/"))


class Budget:
    """What the image's files may expand to (the recipe's disk.max_size), spent as bytes come out of the
    layers: a small layer that decompresses to gigabytes is refused as soon as it passes the bound."""

    def __init__(self, limit: int):
        self.limit = limit
        self.spent = 0

    def spend(self, amount: int, what: str) -> None:
        self.spent += amount
        if self.spent > self.limit:
            raise UserError(f"{what} expand to more than disk.max_size ({_size(self.limit)}), the bound on "
                            "an image's files on a disk",
                            hint="raise disk.max_size in the recipe if the image really is that large")


def _size(count: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


class SparseWriter:
    """A file written through write() whose runs of zero bytes become holes (a seek, not zeros on disk)."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._end = 0

    def write(self, data) -> int:
        length = len(data)
        if length and data.count(0) == length:
            self._out.seek(length, 1)
        else:
            self._out.write(data)
        self._end += length
        return length

    def finish(self) -> None:
        """End the file where the writes ended, holes at the end included."""
        if self._out.seek(0, 2) < self._end:              # it ended in a hole: one byte fixes the length
            self._out.seek(self._end - 1)
            self._out.write(b"\0")


def unpack_layer(store: LayoutStore, layer: Descriptor, into: Path, budget: Budget | None = None) -> Path:
    """The layer's uncompressed tar as a sparse file (tarfile needs to seek to read members out of order),
    every decompressed chunk counted against BUDGET before it is written."""
    compression = mt.layer_compression(layer.media_type)
    try:
        with store.open_blob(str(layer.digest)) as blob, open(into, "wb") as out:
            writer = SparseWriter(out)
            plain: BinaryIO = blob
            with contextlib.ExitStack() as stack:
                if compression == "gzip":
                    plain = stack.enter_context(gzip.GzipFile(fileobj=blob))
                elif compression == "zstd":
                    import zstandard
                    plain = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(blob))
                while chunk := plain.read(CHUNK):
                    if budget is not None:
                        budget.spend(len(chunk), "the image's layers")
                    writer.write(chunk)
            writer.finish()
    except BaseException:
        into.unlink(missing_ok=True)
        raise
    return into


class MergedTree:
    """The paths an image shows after applying its layers (uncompressed tars, lowest first)."""

    def __init__(self, layer_tars: list[Path]):
        self._tars = [tarfile.open(path, "r:") for path in layer_tars]
        self._by_name: list[dict[str, tarfile.TarInfo]] = []     # per layer, for hard link targets
        self.members: dict[str, _Member] = {}
        for number, tar in enumerate(self._tars):
            self._apply(number, tar)

    def close(self) -> None:
        for tar in self._tars:
            tar.close()

    def __enter__(self) -> "MergedTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _drop_below(self, path: str, keep_self: bool) -> None:
        prefix = path + "/" if path else ""
        for name in [name for name in self.members if name.startswith(prefix)]:
            del self.members[name]
        if not keep_self:
            self.members.pop(path, None)

    def _apply(self, number: int, tar: tarfile.TarFile) -> None:
        entries = tar.getmembers()
        self._by_name.append({_normal(info.name): info for info in entries})
        # whiteouts hide lower layers only, so they go first
        for info in entries:
            path = _normal(info.name)
            base = PurePosixPath(path).name
            parent = str(PurePosixPath(path).parent) if "/" in path else ""
            if base == OPAQUE:
                self._drop_below(parent, keep_self=True)
            elif base.startswith(WHITEOUT):
                self._drop_below(f"{parent}/{base[len(WHITEOUT):]}".lstrip("/"), keep_self=False)
        for info in entries:
            path = _normal(info.name)
            if not path or PurePosixPath(path).name.startswith(WHITEOUT):
                continue
            old = self.members.get(path)
            if old is not None and old.info.isdir() and not info.isdir():
                self._drop_below(path, keep_self=False)
            self.members[path] = _Member(number, info)

    def read(self, path: str) -> bytes | None:
        """A regular file's bytes (following hard links), or None."""
        member = self.members.get(path)
        if member is None:
            return None
        info = member.info
        tar = self._tars[member.layer]
        if info.islnk():
            info = self._link_target(member)
        handle = tar.extractfile(info)
        return handle.read() if handle else None

    def _link_target(self, member: _Member) -> tarfile.TarInfo:
        target = self._by_name[member.layer].get(_normal(member.info.linkname))
        if target is None or not target.isreg():
            raise BuildError(f"the hard link {member.info.name} points at {member.info.linkname}, "
                             "which its layer does not hold as a file")
        return target

    def exists(self, path: str) -> bool:
        return _normal(path) in self.members

    def content_bytes(self) -> int:
        """The regular files' sizes, sparse files at their full length (what reading them gives)."""
        return sum(member.info.size for member in self.members.values() if member.info.isreg())

    def data_blocks(self, block: int) -> int:
        """BLOCK-sized blocks the files' data takes, each file rounded up; a sparse file's holes take none."""
        total = 0
        for member in self.members.values():
            info = member.info
            if not info.isreg():
                continue
            if info.sparse is not None:
                total += sum(-(-length // block) + 1 for _, length in info.sparse)
            else:
                total += -(-info.size // block)
        return total

    def write_tar(self, out: BinaryIO) -> tuple[int, int]:
        """Write the merged tree, zero runs as holes when OUT is a file; returns (entries, bytes of file content)."""
        first_of_group: dict[tuple[int, str], str] = {}
        count = content = 0
        sparse = SparseWriter(out) if out.seekable() else None
        with tarfile.open(fileobj=sparse or out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.members, key=_sort_key):
                member = self.members[path]
                layer_tar = self._tars[member.layer]
                info = member.info
                source = info
                if info.islnk():
                    source = self._link_target(member)
                new = tarfile.TarInfo(path)
                new.mode, new.uid, new.gid, new.mtime = info.mode, info.uid, info.gid, info.mtime
                new.uname = new.gname = ""
                new.type = info.type
                new.linkname = info.linkname
                new.devmajor, new.devminor = info.devmajor, info.devminor
                data = None
                if info.isreg() or info.islnk():
                    # members of one hard-link group share a layer's file; the first written carries
                    # the bytes, the others link to it (whatever became of the original path)
                    group = (member.layer, _normal(source.name))
                    earlier = first_of_group.get(group)
                    if earlier is not None:
                        new.type, new.linkname = tarfile.LNKTYPE, earlier
                    else:
                        first_of_group[group] = path
                        new.type, new.linkname, new.size = tarfile.REGTYPE, "", source.size
                        data = layer_tar.extractfile(source)
                        content += source.size
                tar.addfile(new, data)
                count += 1
        if sparse is not None:
            sparse.finish()
        return count, content


def image_layers(store: LayoutStore, layers: list[Descriptor], workdir: Path,
                 budget: Budget | None = None) -> Iterator[Path]:
    for number, layer in enumerate(layers):
        yield unpack_layer(store, layer, workdir / f"layer-{number}.tar", budget)
