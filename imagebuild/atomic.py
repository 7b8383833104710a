"""Replace a file so that a reader sees the old bytes or the new ones, never half.

The bytes go to a temp file in the target's directory (same file system, so
the rename is atomic), are synced to disk, get their final mode and are
renamed over the target. Any failure, Ctrl-C included, removes the temp file.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterator

from imagebuild.frozen import frozen

# Temp files are created 0600; most files we write are meant to be read by other users and tools.
PUBLIC_MODE = 0o644
# The names of temp files: `.tmp-*` (the store's prefix) or `.NAME.tmp-*` (the default); the store's
# sweep recognises what a killed writer left with this.
TEMP_NAME = re.compile(r"^\.(?:.+\.)?tmp-")


@frozen
class PendingFile:
    """The temp file being written; it replaces the target when the `with` block ends cleanly."""

    file: BinaryIO
    temp_path: Path

    def write(self, data: bytes) -> int:
        return self.file.write(data)


def _make_temp(directory: Path, prefix: str, suffix: str, names: list[Path]) -> int:
    """Create a new temp file and return its descriptor. Its name is put in `names` before the file
    exists, so a signal handled at any moment (in any thread's turn) leaves the caller knowing what
    to remove; mkstemp returns the name only after the file is made."""
    for _ in range(100):
        candidate = directory / f"{prefix}{os.urandom(6).hex()}{suffix}"     # secrets.token_hex(6), without its imports
        names.append(candidate)
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            names.pop()
    raise FileExistsError(f"no free temp file name in {directory}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mode: int = PUBLIC_MODE, prefix: str | None = None,
              suffix: str = "") -> Iterator[PendingFile]:
    """Write inside the block; on a clean exit the file replaces `path`.

    Raises OSError as it comes (callers know which error to make of it).
    `prefix` names the temp file (default `.NAME.tmp-`), so a sweeper or a
    test can recognise leftovers of a killed process.
    """
    path = Path(path)
    names: list[Path] = []
    handle = None
    try:
        fd = _make_temp(path.parent, prefix or f".{path.name}.tmp-", suffix, names)
        temp = names[-1]
        handle = os.fdopen(fd, "wb")
        with handle:
            os.fchmod(handle.fileno(), mode)
            yield PendingFile(handle, Path(temp))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()      # closed already unless the signal came before the `with`
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise


def write_atomically(path: str | os.PathLike, data: bytes, *, mode: int = PUBLIC_MODE,
                     prefix: str | None = None) -> Path:
    """Replace `path` with `data` in one step."""
    with replacing(path, mode=mode, prefix=prefix) as pending:
        pending.write(data)
    return Path(path)


def create_new(path: str | os.PathLike, data: bytes, *, mode: int = PUBLIC_MODE) -> Path:
    """Write `data` to `path`, which must not exist yet: whole or not at all, and never over a file
    that appeared meanwhile (the temp file is hard-linked into place, which fails on an existing name).
    Raises FileExistsError then, and OSError as it comes."""
    path = Path(path)
    names: list[Path] = []
    try:
        fd = _make_temp(path.parent, f".{path.name}.tmp-", "", names)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(names[-1], path)
    finally:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name)
    return path
