"""`imagebuild.lock`: the exact Debian package versions of the OS and runtime layers.

The lock sits beside the recipe and is committed with it. It records what the
layers were resolved from (suite, mirrors, variant, architecture, requested
packages) and the version of every package installed in each root file
system, so the same commit rebuilds the same bytes until someone runs
`imagebuild lock` again. The file is JSON with sorted keys and a trailing
newline, so a refresh shows up as a small, readable diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from imagebuild.atomic import write_atomically
from imagebuild.errors import UserError

LOCK_NAME = "imagebuild.lock"
LOCK_FORMAT = 1


class LockFileError(UserError):
    """imagebuild.lock is unreadable or was written by an unknown format."""


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted((mapping or {}).items())))


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

    def __post_init__(self):
        object.__setattr__(self, "inputs", _frozen(self.inputs))
        object.__setattr__(self, "os", _frozen(self.os))
        object.__setattr__(self, "runtime", _frozen(self.runtime))

    def runtime_versions(self) -> dict[str, str]:
        """Every package of the runtime root file system: the OS set plus the runtime's changes."""
        merged = dict(self.os)
        merged.update(self.runtime)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LOCK_FORMAT,
            "debian": {
                "inputs": dict(self.inputs),
                "sourceDateEpoch": self.source_date_epoch,
                "os": dict(self.os),
                "runtime": dict(self.runtime),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DebianLock":
        debian = data["debian"]
        return cls(inputs=debian["inputs"], source_date_epoch=int(debian["sourceDateEpoch"]),
                   os={str(k): str(v) for k, v in debian["os"].items()},
                   runtime={str(k): str(v) for k, v in debian.get("runtime", {}).items()})


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
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
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
