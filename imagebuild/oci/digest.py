"""Content digests in the form `sha256:<64 hex>`."""

from __future__ import annotations

import hashlib
import re

from imagebuild.errors import UserError

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class Digest(str):
    """A validated sha256 digest; a str so it serialises and compares naturally."""

    def __new__(cls, value: str) -> "Digest":
        if not _DIGEST_RE.match(value):
            raise UserError(f"not a sha256 digest: {value!r}",
                            hint="expected sha256: followed by 64 lowercase hex characters")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return "sha256"

    @property
    def hex(self) -> str:
        return self[7:]

    @property
    def short(self) -> str:
        """The first 12 hex digits: how a digest is shown to people and in tags (as `docker images` does)."""
        return self.hex[:12]

    @classmethod
    def of(cls, data: bytes) -> "Digest":
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hasher(cls, hasher) -> "Digest":
        return cls("sha256:" + hasher.hexdigest())


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))
