"""A session-scoped Debian bookworm OS layer plus Python 3.11 runtime layer.

mmdebstrap takes about a minute, so the layers are built once per session,
and kept across sessions in ~/.cache/imagebuild-test/ (keyed by the inputs)
as long as the mirror still carries every locked version. Set
IMAGEBUILD_TEST_FRESH=1 to ignore that cache. Tests that need a genuinely
fresh build (reproducibility) build again themselves.

Use it from another test module through tests/conftest.py:

    from tests.debian_fixtures import debian_python_base  # noqa: F401

and copy the layers into your own store with `base.copy_into(store)`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from imagebuild.errors import UserError
from imagebuild.build.layers.debian import DebianLayers, build_debian_layers, source_of
from imagebuild.sources.debian_index import AptIndex
from imagebuild.evidence.contents import DPKG_STATUS, read_layer_facts, stacked_files
from imagebuild.sources.lockfile import LOCK_NAME, read_lock, write_lock
from imagebuild.sources.os_tree import OS_RELEASE, os_release_fields, package_details
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.layer import LayerResult
from imagebuild.oci.model import Layer
from imagebuild.recipe.model import OsSpec, RuntimeSpec
from imagebuild.stores.layout import LayoutStore

PYTHON_OS = OsSpec(debian="bookworm", packages=("ca-certificates",))
PYTHON_RUNTIME = RuntimeSpec(python="3.11")


@dataclass(frozen=True)
class DebianBase:
    """The built layers, the store holding them, and the lock they were built from."""

    store: LayoutStore
    layers: DebianLayers
    lock_path: Path
    os_spec: OsSpec
    runtime_spec: RuntimeSpec

    @property
    def results(self) -> list[LayerResult]:
        return self.layers.layers()

    def oci_layers(self) -> list[Layer]:
        return [result.as_layer() for result in self.results]

    def copy_into(self, store: LayoutStore) -> list[Layer]:
        """Put the OS and runtime blobs into another store (hard links when possible)."""
        store.ensure()
        for result in self.results:
            target = store.blob_path(result.digest)
            if target.exists():
                continue
            try:
                os.link(self.store.blob_path(result.digest), target)
            except OSError:
                shutil.copyfile(self.store.blob_path(result.digest), target)
        return self.oci_layers()


def _cache_dir(os_spec: OsSpec, runtime_spec: RuntimeSpec) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imagebuild-test"
    ident = hashlib.sha256(canonical_json([repr(os_spec), repr(runtime_spec)])).hexdigest()[:16]
    return base / f"debian-{ident}"


def _lock_still_installable(os_spec: OsSpec, lock_path: Path) -> bool:
    try:
        lock = read_lock(lock_path)
    except UserError:
        return False
    if lock is None:
        return False
    wanted = lock.runtime_versions()
    found = AptIndex(source_of(os_spec)).versions(sorted(wanted))
    return all(version in found[name] for name, version in wanted.items())


def build_cached_base(root: Path, os_spec: OsSpec, runtime_spec: RuntimeSpec) -> DebianBase:
    """Build (or reuse) the layers in `root`: a store plus the lock beside it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+b") as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)     # other test processes wait for one build
        lock_path = root / LOCK_NAME
        if lock_path.exists() and not _lock_still_installable(os_spec, lock_path):
            shutil.rmtree(root / "store", ignore_errors=True)
            lock_path.unlink()
        store = LayoutStore(root / "store").ensure()
        layers = build_debian_layers(store, os_spec, runtime_spec, lock_path)
        if not layers.lock.packages:
            layers = _with_dpkg_details(store, layers, lock_path)
    return DebianBase(store, layers, lock_path, os_spec, runtime_spec)


def _with_dpkg_details(store: LayoutStore, layers: DebianLayers, lock_path: Path) -> DebianLayers:
    """A base cached before locks kept what dpkg records of each package: its lock completed from its
    own layers, as `imagebuild lock` would have written it (the versions, and so the layers, unchanged)."""
    facts = []
    for result in layers.layers():
        with store.open_blob(result.digest) as blob:
            facts.append(read_layer_facts(blob, result.media_type))
    files = stacked_files(facts)
    release = next((files[path] for path in OS_RELEASE if path in files), "")
    lock = replace(layers.lock, packages=package_details(files.get(DPKG_STATUS, "")),
                   os_release=os_release_fields(release))
    write_lock(lock_path, lock)
    return replace(layers, lock=lock)


@pytest.fixture(scope="session")
def debian_python_base(tmp_path_factory) -> DebianBase:
    """bookworm + ca-certificates (OS layer) and python3.11 (runtime layer), built once."""
    if os.environ.get("IMAGEBUILD_TEST_FRESH"):
        root = tmp_path_factory.mktemp("debian-python")
    else:
        root = _cache_dir(PYTHON_OS, PYTHON_RUNTIME)
    return build_cached_base(root, PYTHON_OS, PYTHON_RUNTIME)
