"""Deterministic compressors that hash what passes through them.

The gzip header is written by hand: mtime 0, no file name, OS byte 255, so
the bytes depend only on the input, zlib and the level.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import BinaryIO

GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class _GzipStream:
    def __init__(self, level: int):
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY)
        self._crc = 0
        self._length = 0
        self._header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + (b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00") + b"\xff"
        self._started = False

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._length += len(data)
        out = self._deflate.compress(data)
        if not self._started:
            self._started = True
            out = self._header + out
        return out

    def flush(self) -> bytes:
        out = b"" if self._started else self._header
        self._started = True
        out += self._deflate.flush(zlib.Z_FINISH)
        return out + struct.pack("<II", self._crc & 0xFFFFFFFF, self._length & 0xFFFFFFFF)


class _ZstdStream:
    def __init__(self, level: int):
        import zstandard

        params = zstandard.ZstdCompressionParameters.from_level(level, threads=0, write_checksum=1,
                                                                write_content_size=0)
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def make_compressor(compression: str):
    if compression == "gzip":
        return _GzipStream(GZIP_LEVEL)
    if compression == "zstd":
        return _ZstdStream(ZSTD_LEVEL)
    if compression == "none":
        return _Identity()
    raise ValueError(f"unknown compression {compression!r}; use gzip, zstd or none")


class HashingSink:
    """A write-only stream: hashes the raw bytes, compresses, hashes and writes the result.

    One pass gives the diff_id (raw), the digest and the size (compressed).
    """

    def __init__(self, out: BinaryIO, compression: str = "gzip"):
        self._out = out
        self._compressor = make_compressor(compression)
        self.raw_hash = hashlib.sha256()
        self.compressed_hash = hashlib.sha256()
        self.raw_size = 0
        self.compressed_size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.raw_hash.update(data)
        self.raw_size += len(data)
        self._emit(self._compressor.compress(bytes(data)))
        return len(data)

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self.compressed_hash.update(chunk)
            self.compressed_size += len(chunk)
            self._out.write(chunk)

    def finish(self) -> None:
        if not self.closed:
            self._emit(self._compressor.flush())
            self.closed = True

    def close(self) -> None:
        # tarfile's stream mode closes its fileobj only when it opened it; keep explicit.
        self.finish()

    def flush(self) -> None:
        pass


def decompressing(stream: BinaryIO, compression: str) -> BinaryIO:
    """A reader of the uncompressed bytes of `stream`, compressed as `compression` ('gzip', 'zstd', 'none')."""
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")   # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream)   # type: ignore[return-value]
    return stream
