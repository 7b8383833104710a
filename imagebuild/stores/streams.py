"""File-like readers over iterators of byte pieces: what HTTP bodies and `docker save` hand out."""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

from imagebuild.oci.digest import Digest


class IterReader:
    """A forward-only file over an iterator of byte pieces (what tarfile's stream mode reads).
    Reads are served from the current piece by offset: tarfile asks for 10 KiB at a time."""

    def __init__(self, pieces: Iterable[bytes]):
        self._pieces = iter(pieces)
        self._piece = b""
        self._offset = 0

    def _next_piece(self) -> bytes | None:
        return next(self._pieces, None)

    def read(self, n: int = -1) -> bytes:
        parts = []
        wanted = n
        while wanted != 0:
            if self._offset >= len(self._piece):
                piece = self._next_piece()
                if piece is None:
                    break
                self._piece, self._offset = piece, 0
                continue
            end = len(self._piece) if wanted < 0 else min(len(self._piece), self._offset + wanted)
            parts.append(self._piece[self._offset:end])
            if wanted > 0:
                wanted -= end - self._offset
            self._offset = end
        return b"".join(parts)

    def readable(self) -> bool:
        return True


class VerifyingIterReader(IterReader):
    """An IterReader that checks digest and size once the pieces run out, for streams no store write verifies.

    `mismatch` builds the error to raise: the source decides whose fault a changed blob is."""

    def __init__(self, pieces: Iterable[bytes], digest: str, size: int | None,
                 mismatch: Callable[[str], Exception]):
        super().__init__(pieces)
        self._hash = hashlib.sha256()
        self._digest = digest
        self._size = size
        self._seen = 0
        self._mismatch = mismatch
        self._checked = False

    def _next_piece(self) -> bytes | None:
        piece = super()._next_piece()
        if piece is not None:
            self._hash.update(piece)
            self._seen += len(piece)
            return piece
        if not self._checked:
            self._checked = True
            if Digest.from_hasher(self._hash) != self._digest or (self._size is not None and self._seen != self._size):
                raise self._mismatch(self._digest)
        return None
