"""Replace a file so that a reader sees the old bytes or the new ones, never half.

The bytes go to a temp file in the target's directory (same file system, so
the rename is atomic), are synced to disk, get their final mode and are
renamed over the target. Any failure, Ctrl-C included, removes the temp file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

# mkstemp creates files 0600; most files we write are meant to be read by other users and tools.
PUBLIC_MODE = 0o644
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# The names of temp files: `.tmp-*` (the store's prefix) or `.NAME.tmp-*` (the default); the store's
# sweep recognises what a killed writer left with this.
TEMP_NAME = re.compile(r"^\.(?:.+\.)?tmp-")


@dataclass(frozen=True)
class PendingFile:
    """The temp file being written; it replaces the target when the `with` block ends cleanly."""

    file: BinaryIO
    temp_path: Path

    def write(self, data: bytes) -> int:
        return self.file.write(data)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the temp file is made: one that came between its creation and
    the caller knowing its name would leave it behind. They are delivered when the block ends."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, *, mode: int = PUBLIC_MODE, prefix: str | None = None,
              suffix: str = "") -> Iterator[PendingFile]:
    """Write inside the block; on a clean exit the file replaces `path`.

    Raises OSError as it comes (callers know which error to make of it).
    `prefix` names the temp file (default `.NAME.tmp-`), so a sweeper or a
    test can recognise leftovers of a killed process.
    """
    path = Path(path)
    temp = handle = None
    try:
        with _stop_signals_held():
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.tmp-", suffix=suffix)
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
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise


def write_atomically(path: str | os.PathLike, data: bytes, *, mode: int = PUBLIC_MODE,
                     prefix: str | None = None) -> Path:
    """Replace `path` with `data` in one step."""
    with replacing(path, mode=mode, prefix=prefix) as pending:
        pending.write(data)
    return Path(path)
