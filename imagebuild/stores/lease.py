"""The writers' lease on a local store, which `gc` waits for.

A process that writes or looks up blobs in a store takes a shared flock on
`<store>/.gc-lease` and keeps it until it exits (or calls `release_lease`).
Blobs land before the tag that makes them reachable; holding the lease from
the first blob to the end of the process covers that gap, including a
layer reused from the cache or a config already present from an earlier,
removed image. `gc` takes the lock exclusively, so it only marks and sweeps
while no such process is running and no new one can start.

The kernel drops a flock when its process dies, so a killed bake leaves no
stale lease behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

LEASE_FILE = ".gc-lease"

# realpath of a store -> the descriptor through which this process holds its lease.
_held: dict[str, int] = {}
_held_guard = threading.Lock()    # a push's upload threads may all reach for the lease at once


def _key(root: Path) -> str:
    return os.path.realpath(root)


def _open(root: Path) -> int | None:
    path = Path(root) / LEASE_FILE
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags | os.O_CLOEXEC, 0o644)
        except OSError:
            continue
    # No store directory yet, or one this user can only read: there is nothing this process can write to protect.
    return None


def hold_lease(root: Path) -> None:
    """Take this process's shared lease on the store at `root`, once; a no-op when already held."""
    key = _key(root)
    if key in _held:
        return
    with _held_guard:
        if key in _held:
            return
        fd = _open(root)
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:    # a file system without locks: gc cannot lock it either, and refuses to run
            os.close(fd)
            return
        _held[key] = fd


def release_lease(root: Path) -> None:
    """Give up this process's lease (for long-lived processes between units of work)."""
    fd = _held.pop(_key(root), None)
    if fd is not None:
        os.close(fd)


class StoreBusy(Exception):
    """Another process holds the lease and the caller chose not to wait."""


@contextlib.contextmanager
def exclusive_lease(root: Path, *, wait: bool = True,
                    on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lease alone: no other process is writing to the store or can start to.

    This process's own shared lease, if any, is turned exclusive and back.
    """
    key = _key(root)
    own = _held.get(key)
    fd = own if own is not None else _open(root)
    if fd is None:
        raise OSError(errno.EACCES, "cannot open the store's lease file", str(Path(root) / LEASE_FILE))
    _held[key] = fd    # nested look-ups in this process must not take a second, conflicting lock
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise StoreBusy() from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if own is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            _held.pop(key, None)
            os.close(fd)
