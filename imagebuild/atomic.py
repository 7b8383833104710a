"""Replace a file so that a reader sees the old bytes or the new ones, never half.

The bytes go to a temp file in the target's directory (same file system, so
the rename is atomic), are synced to disk, get their final mode and are
renamed over the target. Any failure, Ctrl-C included, removes the temp file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

# mkstemp creates files 0600; most files we write are meant to be read by other users and tools.
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class PendingFile:
    """The temp file being written; it replaces the target when the `with` block ends cleanly."""

    file: BinaryIO
    temp_path: Path

    def write(self, data: bytes) -> int:
        return self.file.write(data)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mode: int = PUBLIC_MODE, prefix: str | None = None,
              suffix: str = "") -> Iterator[PendingFile]:
    """Write inside the block; on a clean exit the file replaces `path`.

    Raises OSError as it comes (callers know which error to make of it).
    `prefix` names the temp file (default `.NAME.tmp-`), so a sweeper or a
    test can recognise leftovers of a killed process.
    """
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield PendingFile(handle, Path(temp))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_atomically(path: str | os.PathLike, data: bytes, *, mode: int = PUBLIC_MODE,
                     prefix: str | None = None) -> Path:
    """Replace `path` with `data` in one step."""
    with replacing(path, mode=mode, prefix=prefix) as pending:
        pending.write(data)
    return Path(path)
