"""An image's layers applied in order, as one tar: the root file system a disk holds.

The result is what a container engine would show the app: each layer's entries
in order, whiteouts (`.wh.NAME`) removing what lower layers put at NAME, opaque
markers (`.wh..wh..opq`) hiding a directory's lower contents. File bytes,
modes, owners and times are copied as they are; names of owners are dropped so
that no tool maps them through the build host's user database.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from imagebuild.errors import BuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import Descriptor
from imagebuild.stores.layout import LayoutStore

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


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


def unpack_layer(store: LayoutStore, layer: Descriptor, into: Path) -> Path:
    """The layer's uncompressed tar as a file (tarfile needs to seek to read members out of order)."""
    compression = mt.layer_compression(layer.media_type)
    with store.open_blob(str(layer.digest)) as blob, open(into, "wb") as out:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=blob) as plain:
                shutil.copyfileobj(plain, out, 1 << 20)
        elif compression == "zstd":
            import zstandard
            with zstandard.ZstdDecompressor().stream_reader(blob) as plain:
                shutil.copyfileobj(plain, out, 1 << 20)
        else:
            shutil.copyfileobj(blob, out, 1 << 20)
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

    def write_tar(self, out: BinaryIO) -> tuple[int, int]:
        """Write the merged tree; returns (entries, bytes of file content)."""
        first_of_group: dict[tuple[int, str], str] = {}
        count = content = 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
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
        return count, content


def image_layers(store: LayoutStore, layers: list[Descriptor], workdir: Path) -> Iterator[Path]:
    for number, layer in enumerate(layers):
        yield unpack_layer(store, layer, workdir / f"layer-{number}.tar")
