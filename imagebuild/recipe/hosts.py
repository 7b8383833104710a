"""Deploy targets: `ssh://[user@]host[:port][?port=PUBLIC]`, from the recipe or the command line."""

from __future__ import annotations

import getpass
import urllib.parse
from dataclasses import dataclass

from imagebuild.errors import UserError, quoted

SSH_PORT = 22
QUERY_KEYS = ("port",)


@dataclass(frozen=True)
class Host:
    url: str                        # as written, for messages and state
    user: str
    address: str
    ssh_port: int
    public_port: int | None = None  # ?port=N overrides deploy.port for this host

    def __str__(self) -> str:
        return self.url


def parse_host(url: str, where: str = "host") -> Host:
    """One target; a bad one is a UserError naming it and the expected form."""
    form = "write ssh://user@host[:port], optionally ?port=PUBLIC_PORT"
    try:
        parsed = urllib.parse.urlsplit(url)
        hostname = parsed.hostname
    except ValueError:  # an unclosed IPv6 bracket, for one
        raise UserError(f"{where} {quoted(url)} is not a valid ssh:// URL", hint=form) from None
    if parsed.scheme != "ssh" or not hostname:
        raise UserError(f"{where} {quoted(url)} is not an ssh:// URL", hint=form)
    if parsed.password is not None:
        raise UserError(f"{where} {_without_password(parsed)!r} carries a password; deploy logs in with keys only",
                        hint="remove the password and use --identity KEY or ssh-agent")
    if parsed.path not in ("", "/") or parsed.fragment:
        raise UserError(f"{where} {quoted(url)} has a path; a host is only ssh://user@host[:port]", hint=form)
    try:
        ssh_port = parsed.port or SSH_PORT
    except ValueError as exc:
        raise UserError(f"{where} {quoted(url)} has a bad port", hint=form) from exc
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - set(QUERY_KEYS))
    if unknown:
        raise UserError(f"{where} {quoted(url)}: unknown setting {unknown[0]!r}", hint="the only setting is ?port=")
    public_port = None
    if "port" in query:
        text = query["port"][-1]
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise UserError(f"{where} {quoted(url)}: ?port= must be a port number", hint="e.g. ?port=8080")
        public_port = int(text)
    return Host(url=url, user=urllib.parse.unquote(parsed.username) if parsed.username else getpass.getuser(),
                address=parsed.hostname, ssh_port=ssh_port, public_port=public_port)


def _without_password(parsed: urllib.parse.SplitResult) -> str:
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc = f"{netloc}:{parsed.port}"
    if parsed.username:
        netloc = f"{parsed.username}@{netloc}"
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, parsed.query, parsed.fragment))


def parse_hosts(urls, where: str = "host") -> list[Host]:
    hosts = [parse_host(url, where) for url in urls]
    seen: dict[tuple, str] = {}
    for host in hosts:
        key = (host.address, host.ssh_port, host.public_port)
        if key in seen:
            raise UserError(f"{where} {quoted(host.url)} repeats {quoted(seen[key])}", hint="name each host once")
        seen[key] = host.url
    return hosts
