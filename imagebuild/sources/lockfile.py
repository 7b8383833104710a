"""`imagebuild.lock`: the exact Debian package versions of the OS and runtime layers,
and the exact Python closure of the libraries layer.

The lock sits beside the recipe and is committed with it. It records what the
layers were resolved from (suite, mirrors, variant, architecture, requested
packages) and the version of every package installed in each root file
system, so the same commit rebuilds the same bytes until someone runs
`imagebuild lock` again. Its `python` section (format 2) records every
distribution pip resolved from the requirements, with its wheel and sha256,
and the hash of the requirements it was resolved from; a format 1 lock
(without it) still reads. A recipe with several `platforms` gets one such lock
per architecture: the first platform's at the top, as ever, each other one
under `platforms.<architecture>` (format 3). The file is JSON with sorted keys and a trailing
newline, so a refresh shows up as a small, readable diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from imagebuild.atomic import write_atomically
from imagebuild.errors import UserError

LOCK_NAME = "imagebuild.lock"
LOCK_FORMAT = 2
# Format 3 adds the locks of further platforms; it is written only when there are some.
PLATFORMS_FORMAT = 3
# Format 1 has no python section; a lock without one is still written as format 1,
# so an imagebuild that only knows format 1 keeps reading it.
READABLE_FORMATS = (1, 2, 3)


class LockFileError(UserError):
    """imagebuild.lock is unreadable or was written by an unknown format."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


@dataclass(frozen=True)
class PythonPackage:
    """One distribution of the libraries' closure: exactly this wheel, checked by its sha256."""

    name: str
    version: str
    wheel: str
    sha256: str
    url: str = ""       # where pip found it, when that is a public address

    def requirement(self) -> str:
        """Its line in the requirements file bake installs from."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"

    def to_dict(self) -> dict[str, str]:
        data = {"version": self.version, "wheel": self.wheel, "sha256": self.sha256}
        if self.url:
            data["url"] = self.url
        return data


@dataclass(frozen=True)
class PythonLock:
    """The libraries' full closure, resolved by pip for the image's Python and platform.

    `inputs` is what it was resolved from (the requirements' hash, the Python
    version, the wheel platforms); when they differ from what the recipe asks
    for now, the lock is out of date.
    """

    inputs: Mapping[str, Any]
    packages: tuple[PythonPackage, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "inputs", _frozen(self.inputs))
        object.__setattr__(self, "packages", tuple(sorted(self.packages, key=lambda p: p.name)))

    def requirements(self) -> bytes:
        """`name==version --hash=sha256:...` lines, one per distribution, for `pip --require-hashes`."""
        return "".join(package.requirement() + "\n" for package in self.packages).encode()

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs),
                "packages": {package.name: package.to_dict() for package in self.packages}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PythonLock":
        packages = tuple(PythonPackage(name=str(name), version=str(entry["version"]), wheel=str(entry["wheel"]),
                                       sha256=str(entry["sha256"]), url=str(entry.get("url", "")))
                         for name, entry in data["packages"].items())
        return cls(inputs=dict(data["inputs"]), packages=packages)


@dataclass(frozen=True)
class DebianLock:
    """What the Debian layers were resolved from, and what got installed.

    `inputs` is everything the user asked for; when it no longer equals what
    the recipe asks for, the lock is out of date. `os` holds every package of
    the OS root file system; `runtime` only the packages the runtime adds or
    changes on top of it.
    """

    inputs: Mapping[str, Any]
    source_date_epoch: int
    os: Mapping[str, str] = field(default_factory=dict)
    runtime: Mapping[str, str] = field(default_factory=dict)
    python: PythonLock | None = None     # the libraries' closure; None in a lock made without one
    # What dpkg records of each package of the topmost tree beside its version: its architecture and,
    # when dpkg names one, its source (`NAME` or `NAME (VERSION)`); and the tree's os-release ID,
    # VERSION_ID and VERSION_CODENAME. For the image's SBOM; empty in a lock made before they were kept.
    packages: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    os_release: Mapping[str, str] = field(default_factory=dict)
    platforms: Mapping[str, "DebianLock"] = field(default_factory=dict)  # other architectures' locks

    def __post_init__(self):
        object.__setattr__(self, "inputs", _frozen(self.inputs))
        object.__setattr__(self, "os", _frozen(self.os))
        object.__setattr__(self, "runtime", _frozen(self.runtime))
        object.__setattr__(self, "packages", MappingProxyType({name: _frozen(entry) for name, entry
                                                               in sorted((self.packages or {}).items())}))
        object.__setattr__(self, "os_release", _frozen(self.os_release))
        object.__setattr__(self, "platforms", _frozen(self.platforms))

    @property
    def architecture(self) -> str:
        return str(self.inputs.get("architecture", "amd64"))

    def for_architecture(self, architecture: str) -> "DebianLock | None":
        """The lock of one architecture's image (None when this lock has none for it)."""
        if self.architecture == architecture:
            return replace(self, platforms={}) if self.platforms else self
        return self.platforms.get(architecture)

    def runtime_versions(self) -> dict[str, str]:
        """Every package of the runtime root file system: the OS set plus the runtime's changes."""
        merged = dict(self.os)
        merged.update(self.runtime)
        return merged

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": PLATFORMS_FORMAT if self.platforms else LOCK_FORMAT if self.python is not None else 1,
            "debian": {
                "inputs": dict(self.inputs),
                "sourceDateEpoch": self.source_date_epoch,
                "os": dict(self.os),
                "runtime": dict(self.runtime),
            },
        }
        if self.packages:
            data["debian"]["packages"] = {name: dict(entry) for name, entry in self.packages.items()}
        if self.os_release:
            data["debian"]["osRelease"] = dict(self.os_release)
        if self.python is not None:
            data["python"] = self.python.to_dict()
        if self.platforms:
            data["platforms"] = {architecture: {key: value for key, value in lock.to_dict().items() if key != "format"}
                                 for architecture, lock in self.platforms.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DebianLock":
        debian = data["debian"]
        return cls(inputs=debian["inputs"], source_date_epoch=int(debian["sourceDateEpoch"]),
                   os={str(k): str(v) for k, v in debian["os"].items()},
                   runtime={str(k): str(v) for k, v in debian.get("runtime", {}).items()},
                   packages={str(name): {str(k): str(v) for k, v in entry.items()}
                             for name, entry in debian.get("packages", {}).items()},
                   os_release={str(k): str(v) for k, v in debian.get("osRelease", {}).items()},
                   python=PythonLock.from_dict(data["python"]) if data.get("python") is not None else None,
                   platforms={str(architecture): cls.from_dict(entry)
                              for architecture, entry in (data.get("platforms") or {}).items()})


def platform_lock(locks: Mapping[str, DebianLock | None], architectures: tuple[str, ...]) -> DebianLock | None:
    """One lock of several architectures' locks: the first architecture's at the top, the others
    under `platforms`, in the order given; None when the first one is missing."""
    first = locks.get(architectures[0])
    if first is None:
        return None
    others = {architecture: locks[architecture] for architecture in architectures[1:] if locks.get(architecture)}
    return replace(first, platforms=others)


def lock_path_for(recipe_path: str | os.PathLike) -> Path:
    """The lock beside a recipe file (or inside a directory holding one)."""
    path = Path(recipe_path)
    return (path if path.is_dir() else path.parent) / LOCK_NAME


def dumps(lock: DebianLock) -> str:
    return json.dumps(lock.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_lock(path: str | os.PathLike) -> DebianLock | None:
    """The lock at `path`, or None when there is none yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse_lock(text, path)


def parse_lock(text: str | bytes, path: str | os.PathLike) -> DebianLock:
    """A lock's text, already read from `path` (named in the errors)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LockFileError(f"{path} is not valid JSON ({exc})",
                            hint="restore it from git or delete it and run `imagebuild lock`") from None
    if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
        raise LockFileError(f"{path} has an unknown format",
                            hint="delete it and run `imagebuild lock`")
    try:
        return DebianLock.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LockFileError(f"{path} is missing or garbles the field {exc}",
                            hint="restore it from git or delete it and run `imagebuild lock`") from None


def write_lock(path: str | os.PathLike, lock: DebianLock) -> Path:
    """Replace the lock atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    try:
        return write_atomically(path, dumps(lock).encode("utf-8"))
    except OSError as exc:
        raise LockFileError(f"cannot write {path}: {exc.strerror or exc}",
                            hint="make the recipe's directory writable") from None
