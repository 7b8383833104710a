"""A root file system tar as layer entries: the OS layer, and the runtime layer as a diff.

Both read mmdebstrap's tar directly; nothing is extracted to disk. Paths that
are not part of the OS proper (host files copied in for the build, logs,
apt's downloaded lists, backups dpkg and debconf keep of their own
databases, device nodes) are left out; docs/os-layers.md lists each rule and
why. The runtime layer holds what changed between the OS tree and the tree
with the runtime installed, compared member by member (type, mode, owner,
mtime, link target, content hash), plus OCI whiteouts for removed paths.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Iterator

from imagebuild.sources.debian_rootfs import PIN_FILE
from imagebuild.oci.layer import (BLOCKDEV, CHARDEV, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry)

WHITEOUT_PREFIX = ".wh."
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")    # the first regular file of these counts
DPKG_STATUS = "var/lib/dpkg/status"   # what dpkg installed: read from a tree here, from layers by evidence/contents.py
HASH_CHUNK = 1024 * 1024

_KINDS = {tarfile.REGTYPE: FILE, tarfile.AREGTYPE: FILE, tarfile.CONTTYPE: FILE, tarfile.DIRTYPE: DIR,
          tarfile.SYMTYPE: SYMLINK, tarfile.LNKTYPE: HARDLINK, tarfile.CHRTYPE: CHARDEV,
          tarfile.BLKTYPE: BLOCKDEV, tarfile.FIFOTYPE: FIFO}

# Everything below these directories is left out; the directories themselves stay.
_EMPTIED_DIRS = ("dev", "proc", "sys", "tmp", "var/tmp", "var/lib/apt/lists", "var/cache/apt")
# Host files mmdebstrap copies in so maintainer scripts can resolve names; the
# container engine provides its own at run time.
_HOST_FILES = {"etc/hostname", "etc/resolv.conf", PIN_FILE}
# Rebuilt from the real files whenever ldconfig runs; holds inode and time stamps.
_CACHES = {"var/cache/ldconfig/aux-cache"}
# Files every container must get fresh; kept as an empty file.
EMPTIED_FILES = {"etc/machine-id"}


def dropped(path: str, member: tarfile.TarInfo) -> bool:
    """Whether a root file system path stays out of the layers (see docs/os-layers.md)."""
    if path in _HOST_FILES or path in _CACHES:
        return True
    if any(path.startswith(top + "/") for top in _EMPTIED_DIRS):
        return True
    if path.startswith(("var/lib/dpkg/", "var/cache/debconf/")) and path.endswith("-old"):
        return True
    # Logs of the build itself; empty placeholders (wtmp, lastlog) keep their owner and mode.
    if path.startswith("var/log/") and member.isfile() and member.size > 0:
        return True
    return False


def _layer_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    return "" if name == "." else name


@dataclass(frozen=True)
class Node:
    """One kept member of a root file system tar, with what identifies its state."""

    path: str
    kind: str
    member: tarfile.TarInfo
    linkname: str
    fingerprint: tuple


def read_tree(tar: tarfile.TarFile, hash_content: bool = False) -> dict[str, Node]:
    """The kept members by path; with `hash_content`, fingerprints include each file's sha256."""
    nodes: dict[str, Node] = {}
    for member in tar.getmembers():
        path = _layer_path(member.name)
        kind = _KINDS.get(member.type)
        if not path or kind is None or dropped(path, member):
            continue
        linkname = _layer_path(member.linkname) if kind == HARDLINK else member.linkname
        content = ""
        if kind == FILE:
            if path in EMPTIED_FILES:
                content = "emptied"
            elif hash_content:
                content = _sha256(tar, member)
        fingerprint = (kind, member.mode, member.uid, member.gid, int(member.mtime),
                       member.size if kind == FILE else 0, content, linkname,
                       member.devmajor, member.devminor)
        nodes[path] = Node(path, kind, member, linkname, fingerprint)
    for path, node in list(nodes.items()):
        if node.kind != HARDLINK:
            continue
        target = nodes.get(node.linkname)
        if target is None:
            del nodes[path]       # its content was left out, so the link goes too
        else:
            # a link's state is its target's: new content under the target changes the link too
            nodes[path] = Node(path, HARDLINK, node.member, node.linkname,
                               node.fingerprint + target.fingerprint)
    return nodes


def _sha256(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    hasher = hashlib.sha256()
    handle = tar.extractfile(member)
    if handle is not None:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def entry_of(tar: tarfile.TarFile, node: Node) -> Entry:
    member = node.member
    if node.kind == FILE and node.path in EMPTIED_FILES:
        return Entry(node.path, FILE, member.mode, int(member.mtime), size=0, data=b"",
                     uid=member.uid, gid=member.gid)
    opener = functools.partial(tar.extractfile, member) if node.kind == FILE else None
    return Entry(node.path, node.kind, member.mode, int(member.mtime),
                 size=member.size if node.kind == FILE else 0, opener=opener, linkname=node.linkname,
                 uid=member.uid, gid=member.gid, devmajor=member.devmajor, devminor=member.devminor)


def tree_entries(tar: tarfile.TarFile) -> Iterator[Entry]:
    """Every kept path of a root file system tar, owners and modes as they are."""
    for node in read_tree(tar).values():
        yield entry_of(tar, node)


def diff_entries(lower: tarfile.TarFile, upper: tarfile.TarFile) -> list[Entry]:
    """A layer turning the `lower` tree into the `upper` one: changed and new paths, and whiteouts."""
    below = read_tree(lower, hash_content=True)
    above = read_tree(upper, hash_content=True)
    emit = {path for path, node in above.items()
            if path not in below or below[path].fingerprint != node.fingerprint}
    # A hardlink needs its target in the same layer.
    emit |= {above[path].linkname for path in emit if above[path].kind == HARDLINK}
    whiteouts = []
    for path in below:
        if path in above:
            continue
        parent = posixpath.dirname(path)
        # Only the topmost removed path needs a whiteout, and only inside a directory that stays one.
        if parent and (parent not in above or above[parent].kind != DIR):
            continue
        whiteouts.append(posixpath.join(parent, WHITEOUT_PREFIX + posixpath.basename(path)))
    # Parents come from the upper tree, so the layer does not reset their mode or owner.
    for path in list(emit) + whiteouts:
        parent = posixpath.dirname(path)
        while parent and parent not in emit:
            if parent in above:
                emit.add(parent)
            parent = posixpath.dirname(parent)
    entries = [entry_of(upper, above[path]) for path in emit]
    entries += [Entry.file(path, b"", mode=0o644) for path in whiteouts]
    return entries


def read_member_text(tar: tarfile.TarFile, path: str) -> str | None:
    """A text file's content from a root file system tar, or None when absent."""
    for name in (f"./{path}", path, f"/{path}"):
        try:
            member = tar.getmember(name)
        except KeyError:
            continue
        handle = tar.extractfile(member)
        return handle.read().decode("utf-8", "replace") if handle else None
    return None


def installed_packages(tar: tarfile.TarFile) -> dict[str, str]:
    """name → version of every installed package, read from dpkg's status database."""
    status = read_member_text(tar, DPKG_STATUS) or ""
    return parse_dpkg_status(status)


def installed_stanzas(text: str) -> Iterator[dict[str, str]]:
    """The fields (first lines only) of each package a dpkg status file records as installed."""
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            yield fields


def installed_details(tar: tarfile.TarFile) -> dict[str, dict[str, str]]:
    """name → what dpkg records of each installed package beside its version (`package_details`)."""
    return package_details(read_member_text(tar, DPKG_STATUS) or "")


def package_details(status: str) -> dict[str, dict[str, str]]:
    """name → {"architecture", and "source" (dpkg's `Source:` field, `NAME` or `NAME (VERSION)`) when dpkg
    names one} of each package a dpkg status file records as installed."""
    details = {}
    for fields in installed_stanzas(status):
        entry = {"architecture": fields.get("Architecture", "")}
        if fields.get("Source"):
            entry["source"] = fields["Source"]
        details[fields["Package"]] = entry
    return dict(sorted(details.items()))


def release_fields(tar: tarfile.TarFile) -> dict[str, str]:
    """ID, VERSION_ID and VERSION_CODENAME of the tree's os-release (those it has)."""
    for path in OS_RELEASE:
        for name in (f"./{path}", path):
            try:
                member = tar.getmember(name)
            except KeyError:
                continue
            handle = tar.extractfile(member) if member.isfile() else None   # Debian's etc/ one is a symlink
            if handle is not None:
                return os_release_fields(handle.read().decode("utf-8", "replace"))
    return {}


def os_release_fields(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key in ("ID", "VERSION_ID", "VERSION_CODENAME"):
            values[key] = value.strip().strip("\"'")
    return dict(sorted(values.items()))


def parse_dpkg_status(text: str) -> dict[str, str]:
    installed = {fields["Package"]: fields.get("Version", "") for fields in installed_stanzas(text)}
    return dict(sorted(installed.items()))

