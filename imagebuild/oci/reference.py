"""Image references: `[registry/]repository[:tag][@sha256:...]`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from imagebuild.errors import UserError
from imagebuild.oci.digest import Digest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _looks_like_registry(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


@dataclass(frozen=True)
class Reference:
    registry: str | None
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        original = text
        if not text or text.strip() != text:
            raise UserError(f"invalid image reference {original!r}", hint="use NAME[:TAG][@sha256:DIGEST]")
        if "://" in text:
            raise UserError(f"{original!r} is a URL; an image reference has no scheme",
                            hint="write HOST[:PORT]/NAME[:TAG]; --insecure picks plain HTTP")
        digest = None
        if "@" in text:
            text, _, raw_digest = text.partition("@")
            digest = Digest(raw_digest)
        tag = None
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            text, _, tag = text.rpartition(":")
            if not _TAG_RE.match(tag):
                raise UserError(f"invalid tag {tag!r} in {original!r}",
                                hint="tags use letters, digits, '_', '.' and '-', at most 128")
        registry = None
        first, sep, rest = text.partition("/")
        if sep and _looks_like_registry(first):
            registry, text = first, rest
        if not _REPO_RE.match(text):
            raise UserError(f"invalid image name {text!r} in {original!r}",
                            hint="names are lowercase letters, digits and . _ - separated by /")
        return cls(registry=registry, repository=text, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def with_tag(self, tag: str | None) -> "Reference":
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> "Reference":
        return replace(self, digest=Digest(digest) if digest else None)

    @property
    def identifier(self) -> str:
        """What the registry API takes: the digest when known, else the tag."""
        return str(self.digest) if self.digest else (self.tag or "latest")

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def tag_for(version: str) -> str:
    """A version as a tag: git describe may contain '/' and other characters tags refuse."""
    return _TAG_UNSAFE.sub("-", version)[:128]
