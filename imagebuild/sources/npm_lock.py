"""package-lock.json read as the pin of a Node app's libraries. No I/O beyond the bytes given.

npm writes package-lock.json and `npm ci` installs exactly what it names: every
package's version, tarball and `integrity` hash (sha512). imagebuild keeps no
second copy of that closure; it only checks the lock can pin a bake:

- lockfileVersion 2 or 3 (the `packages` map npm ci installs from),
- every installed package has a version and an integrity hash (a git or
  file: dependency has none, and could differ on another machine),
- the dependencies package.json declares are the ones the lock was made for
  (npm ci refuses a lock out of step with package.json; saying it before a
  bake starts is kinder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from imagebuild.errors import UserError

DEPENDENCY_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_RELOCK = "run `npm install` (it rewrites package-lock.json) and commit both files"


@dataclass(frozen=True)
class NpmLock:
    """The parts of package-lock.json a bake depends on."""

    digest: str                    # sha256 of the file's bytes: the libraries layer's cache key
    packages: Mapping[str, str]    # node_modules/<name> path -> version, installed ones only
    root: Mapping[str, Mapping[str, str]]   # what the lock's root entry declares, per dependency field


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise UserError(f"{what} is not valid JSON ({exc})", hint=_RELOCK) from None
    if not isinstance(parsed, dict):
        raise UserError(f"{what} is not a JSON object", hint=_RELOCK)
    return parsed


def _declared(entry: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    out = {}
    for field in DEPENDENCY_FIELDS:
        value = entry.get(field) or {}
        if isinstance(value, dict):
            out[field] = {str(name): str(spec) for name, spec in sorted(value.items())}
    return out


def parse_npm_lock(data: bytes, what: str = "package-lock.json") -> NpmLock:
    """The lock's pins; a lock npm ci could not install the same way everywhere is a UserError."""
    lock = _load(data, what)
    if lock.get("lockfileVersion") not in (2, 3) or not isinstance(lock.get("packages"), dict):
        raise UserError(f"{what} has lockfileVersion {lock.get('lockfileVersion')!r}; imagebuild needs 2 or 3",
                        hint="write it with npm 7 or newer: `npm install --package-lock-only`")
    packages: dict[str, str] = {}
    for path, entry in sorted(lock["packages"].items()):
        if not path or not isinstance(entry, dict) or entry.get("link"):
            continue   # the root, or a workspace link to a directory in the commit
        version, integrity = entry.get("version"), entry.get("integrity")
        if not version or not integrity:
            name = path.rpartition("node_modules/")[2]
            raise UserError(f"{what}: {name} has no integrity hash (only registry packages can be pinned)",
                            hint="depend on a published version instead of a git or file: dependency, "
                                 "then " + _RELOCK)
        packages[path] = str(version)
    root = lock["packages"].get("", {})
    return NpmLock(digest="sha256:" + hashlib.sha256(data).hexdigest(), packages=packages,
                   root=_declared(root if isinstance(root, dict) else {}))


def stale_dependencies(package_json: bytes, lock: NpmLock, what: str = "package.json") -> list[str]:
    """The dependency fields of package.json that differ from what the lock was made for."""
    declared = _declared(_load(package_json, what))
    return [field for field in DEPENDENCY_FIELDS if declared.get(field, {}) != dict(lock.root.get(field, {}))]


def checked_npm_lock(package_json: bytes | None, package_lock: bytes | None, lock_name: str) -> NpmLock:
    """The lock, refused when it or package.json is missing, or when they disagree."""
    if package_lock is None:
        raise UserError(f"{lock_name} is not in the commit", hint=_RELOCK)
    if package_json is None:
        raise UserError(f"package.json is not in the commit beside {lock_name}", hint="commit it")
    lock = parse_npm_lock(package_lock, lock_name)
    stale = stale_dependencies(package_json, lock)
    if stale:
        raise UserError(f"{lock_name} is out of date with package.json's {', '.join(stale)}", hint=_RELOCK)
    return lock
