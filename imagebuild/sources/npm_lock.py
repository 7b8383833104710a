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
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from imagebuild.errors import UserError, quoted

DEPENDENCY_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_RELOCK = "run `npm install` (it rewrites package-lock.json) and commit both files"
# Bounds on what is read whole into memory: a lock of some thousand packages is a few MiB, and npm nests
# it four levels deep; package.json is a page. Larger or deeper is no file npm wrote.
MAX_LOCK_BYTES = 64 * 1024 * 1024
MAX_PACKAGE_JSON_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64


@dataclass(frozen=True)
class NpmLock:
    """The parts of package-lock.json a bake depends on."""

    digest: str                    # sha256 of the file's bytes: the libraries layer's cache key
    packages: Mapping[str, str]    # node_modules/<name> path -> version, installed ones only
    root: Mapping[str, Mapping[str, str]]   # what the lock's root entry declares, per dependency field


def _too_large(what: str, limit: int) -> UserError:
    return UserError(f"{what} is over the {limit // (1024 * 1024)} MiB imagebuild reads",
                     hint="check it is the file npm wrote; " + _RELOCK)


def _depth(value: Any) -> int:
    """How deeply `value` nests arrays and objects, found without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _load(data: bytes, what: str, limit: int) -> dict[str, Any]:
    if len(data) > limit:
        raise _too_large(what, limit)
    try:
        parsed = json.loads(data)
    except RecursionError:
        raise UserError(f"{what} is JSON nested too deeply", hint=_RELOCK) from None
    except ValueError as exc:   # also a byte that is no UTF-8, and an integer too long to read
        raise UserError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:80]})", hint=_RELOCK) from None
    if not isinstance(parsed, dict):
        raise UserError(f"{what} is not a JSON object", hint=_RELOCK)
    if _depth(parsed) > MAX_DEPTH:
        raise UserError(f"{what} nests objects more than {MAX_DEPTH} deep", hint=_RELOCK)
    return parsed


def _wrong_type(what: str, where: str, expected: str) -> UserError:
    return UserError(f"{what}: {where} is not {expected}", hint=_RELOCK)


def _declared(entry: Mapping[str, Any], what: str) -> dict[str, dict[str, str]]:
    out = {}
    for field in DEPENDENCY_FIELDS:
        value = entry.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _wrong_type(what, field, "an object of package names and versions")
        for name, spec in value.items():
            if not isinstance(spec, str):
                raise _wrong_type(what, f"{field}[{quoted(name)}]", "a version string")
        out[field] = dict(sorted(value.items()))
    return out


def parse_npm_lock(data: bytes, what: str = "package-lock.json") -> NpmLock:
    """The lock's pins; a lock npm ci could not install the same way everywhere is a UserError."""
    lock = _load(data, what, MAX_LOCK_BYTES)
    version = lock.get("lockfileVersion")
    if isinstance(version, bool) or version not in (2, 3):
        shown = quoted(version, 20) if isinstance(version, str) else \
            repr(version)[:20] if isinstance(version, (int, float)) and not isinstance(version, bool) else \
            type(version).__name__
        raise UserError(f"{what} has lockfileVersion {shown}; imagebuild needs 2 or 3",
                        hint="write it with npm 7 or newer: `npm install --package-lock-only`")
    if not isinstance(lock.get("packages"), dict):
        raise _wrong_type(what, "packages", "an object")
    packages: dict[str, str] = {}
    for path, entry in sorted(lock["packages"].items()):
        if not path:
            continue   # the root
        name = path.rpartition("node_modules/")[2][:80]
        if not isinstance(entry, dict):
            raise _wrong_type(what, f"package {quoted(name)}", "an object")
        if entry.get("link"):
            continue   # a workspace link to a directory in the commit
        version, integrity = entry.get("version"), entry.get("integrity")
        if not version or not integrity:
            raise UserError(f"{what}: {name} has no integrity hash (only registry packages can be pinned)",
                            hint="depend on a published version instead of a git or file: dependency, "
                                 "then " + _RELOCK)
        if not isinstance(version, str) or not isinstance(integrity, str):
            raise _wrong_type(what, f"the version or integrity of {quoted(name)}", "a string")
        packages[path] = version
    root = lock["packages"].get("", {})
    if not isinstance(root, dict):
        raise _wrong_type(what, "the root package (\"\")", "an object")
    return NpmLock(digest="sha256:" + hashlib.sha256(data).hexdigest(), packages=packages,
                   root=_declared(root, what))


def stale_dependencies(package_json: bytes, lock: NpmLock, what: str = "package.json") -> list[str]:
    """The dependency fields of package.json that differ from what the lock was made for."""
    declared = _declared(_load(package_json, what, MAX_PACKAGE_JSON_BYTES), what)
    return [field for field in DEPENDENCY_FIELDS if declared.get(field, {}) != dict(lock.root.get(field, {}))]


def checked_npm_lock(package_json: bytes | None, package_lock: bytes | None, lock_name: str) -> NpmLock:
    """The lock, refused when it or package.json is missing, or when they disagree."""
    if package_lock is None:
        raise UserError(f"{lock_name} is not in the commit", hint=_RELOCK)
    if package_json is None:
        raise UserError(f"package.json is not in the commit beside {lock_name}", hint="commit it")
    lock = parse_npm_lock(package_lock, lock_name)
    stale = stale_dependencies(package_json, lock, posixpath.join(posixpath.dirname(lock_name), "package.json"))
    if stale:
        raise UserError(f"{lock_name} is out of date with package.json's {', '.join(stale)}", hint=_RELOCK)
    return lock
