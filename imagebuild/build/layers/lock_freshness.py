"""Whether imagebuild.lock still fits the recipe: what each of its parts is resolved from.

The Debian pins are made from the os and runtime sections (`lock_inputs`), the Python closure
from the requirements, the image's Python and its wheel platforms (`python_lock_inputs`); a
lock made from other inputs is out of date. Kept apart from the layers' builders, so that
`imagebuild lock` with nothing changed reads the lock and the recipe and loads nothing else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from imagebuild.errors import RecipeError, UserError
from imagebuild.recipe.model import OsSpec, Recipe, RuntimeSpec
from imagebuild.sources.debian_index import DEFAULT_MIRROR, DebianSource

if TYPE_CHECKING:
    from imagebuild.sources.lockfile import DebianLock

# Bumped whenever the same recipe would give other packages or other layer bytes (e.g. a
# new drop rule); it is part of the lock's inputs, so older locks are resolved afresh.
LAYER_FORMAT = 2


def source_of(os_spec: OsSpec) -> DebianSource:
    if os_spec.image or not os_spec.debian:
        raise UserError("the OS comes from a base image (os.image), not from Debian packages")
    return DebianSource(suite=os_spec.debian, mirror=(os_spec.mirror or DEFAULT_MIRROR).rstrip("/"),
                        architecture=os_spec.architecture, variant=os_spec.variant)


def lock_inputs(os_spec: OsSpec, runtime_spec: RuntimeSpec) -> dict[str, Any]:
    """What the recipe asks for; a lock made from other inputs is out of date."""
    source = source_of(os_spec)
    runtime = {runtime_spec.language: str(runtime_spec.version)} if runtime_spec.language else {}
    return {**source.describe(), "packages": sorted(set(os_spec.packages)), "runtime": runtime,
            "layerFormat": LAYER_FORMAT}


def lock_fits(lock: DebianLock, os_spec: OsSpec, runtime_spec: RuntimeSpec) -> bool:
    """Whether `lock` was made for what the recipe's os and runtime sections ask for now."""
    return dict(lock.inputs) == _plain(lock_inputs(os_spec, runtime_spec))


def lacks_records(lock: DebianLock, runtime_spec: RuntimeSpec) -> bool:
    """Whether `lock` lacks what dpkg recorded of its topmost tree's packages, or that tree's os-release
    (a lock made before they were kept): the SBOM of a bake would have to read the base layers."""
    versions = lock.runtime_versions() if runtime_spec.language else dict(lock.os)
    return not lock.os_release or not set(versions) <= set(lock.packages)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


# glibc of each Debian suite: wheels built for it or older run there.
GLIBC = {"bullseye": (2, 31), "bookworm": (2, 36), "trixie": (2, 41)}
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


def pip_platforms(recipe: Recipe) -> list[str]:
    machine = MACHINE.get(recipe.os.architecture)
    if machine is None:
        raise RecipeError(f"no Python wheels platform for architecture {recipe.os.architecture!r}",
                          file=_where(recipe), key="os.architecture", hint="use amd64 or arm64")
    platforms = [f"manylinux2014_{machine}"]
    glibc = GLIBC.get(recipe.os.debian or "")
    if glibc:
        platforms.insert(0, f"manylinux_{glibc[0]}_{glibc[1]}_{machine}")
    return platforms


def _where(recipe: Recipe) -> str | None:
    return str(recipe.source) if recipe.source else None


def requirements_bytes(recipe: Recipe, read: Callable[[Path], bytes | None]) -> bytes | None:
    """The pinned requirements at the commit: the file plus `libraries.packages`; None when there are none.

    The recipe loader has already refused unpinned lines.

    `read(path)` returns a file's bytes at the commit, or None when it is not tracked there.
    """
    parts: list[bytes] = []
    if recipe.libraries.requirements:
        content = read(recipe.root / recipe.libraries.requirements)
        if content is None:
            raise RecipeError(f"libraries.requirements: {recipe.libraries.requirements} is not in the commit",
                              file=_where(recipe), key="libraries.requirements",
                              hint="create and commit it, or fix the path (relative to the recipe)")
        parts.append(content.rstrip(b"\n") + b"\n")
    if recipe.libraries.packages:
        parts.append(("\n".join(recipe.libraries.packages) + "\n").encode())
    if not parts:
        return None
    if not recipe.runtime.python:
        raise RecipeError("libraries need runtime.python", file=_where(recipe), key="libraries",
                          hint="set runtime.python, or remove the libraries section")
    return b"".join(parts)


def python_lock_inputs(recipe: Recipe, requirements: bytes) -> dict:
    """What a Python closure is resolved from; a lock made from other inputs is out of date."""
    return {"requirements": "sha256:" + hashlib.sha256(requirements).hexdigest(),
            "python": recipe.runtime.python, "platforms": pip_platforms(recipe)}


def python_lock_fits(lock: DebianLock | None, recipe: Recipe, requirements: bytes) -> bool:
    return (lock is not None and lock.python is not None
            and dict(lock.python.inputs) == _plain(python_lock_inputs(recipe, requirements)))
