"""Image references: `[registry/]repository[:tag][@sha256:...]`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from imagebuild.errors import UserError, quoted
from imagebuild.frozen import frozen
from imagebuild.oci.digest import Digest

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# The distribution spec's domain: host names, IPv4, or IPv6 in brackets, with an optional port.
_DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$")
# The distribution spec's bounds: a name (registry included) of at most 255 characters, a tag of at most 128.
MAX_NAME = 255
MAX_TAG = 128
_MAX_REFERENCE = MAX_NAME + 1 + MAX_TAG + 1 + len("sha256:") + 64
_HOST_FORM = "write HOST[:PORT], e.g. localhost:5000 or [::1]:5000"


def check_registry_host(host: str, original: str | None = None) -> str:
    """`host` as a registry address HOST[:PORT] (an IPv6 address in brackets), or a UserError.

    Checked here so that no malformed address reaches the HTTP client, where it would be a bug."""
    where = f" in {quoted(original)}" if original is not None and original != host else ""
    bad = UserError(f"invalid registry address {quoted(host)}{where}", hint=_HOST_FORM)
    name, port = host, None
    if host.startswith("["):
        close = host.find("]")
        if close < 0:
            raise bad
        name, rest = host[1:close], host[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise bad
            port = rest[1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise bad from None
    else:
        if host.count(":") > 1:
            raise bad
        name, sep, port_text = host.partition(":")
        port = port_text if sep else None
        if not _DOMAIN_NAME_RE.match(name):
            raise bad
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise UserError(f"invalid port {quoted(port)} in registry address {quoted(host)}{where}",
                        hint="a port is a number from 1 to 65535")
    return host


def _looks_like_registry(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


@frozen
class Reference:
    registry: str | None
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> "Reference":
        original = text
        if not text or text.strip() != text:
            raise UserError(f"invalid image reference {quoted(original)}", hint="use NAME[:TAG][@sha256:DIGEST]")
        if len(text) > _MAX_REFERENCE:
            raise UserError(f"image reference {quoted(original)} is too long",
                            hint=f"a name has at most {MAX_NAME} characters and a tag at most {MAX_TAG}")
        if "://" in text:
            raise UserError(f"{quoted(original)} is a URL; an image reference has no scheme",
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
                raise UserError(f"invalid tag {quoted(tag)} in {quoted(original)}",
                                hint=f"tags use letters, digits, '_', '.' and '-', at most {MAX_TAG}")
        if len(text) > MAX_NAME:
            raise UserError(f"the name in {quoted(original)} is too long",
                            hint=f"an image name, its registry included, has at most {MAX_NAME} characters")
        registry = None
        first, sep, rest = text.partition("/")
        if sep and _looks_like_registry(first):
            registry, text = check_registry_host(first, original), rest
        if not _REPO_RE.match(text):
            raise UserError(f"invalid image name {quoted(text)} in {quoted(original)}",
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
