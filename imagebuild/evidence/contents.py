"""What an image is made of, as its bake knows it: the Debian packages of its os and runtime
layers, the Python distributions the bake installed, and the commit it was baked from.

Debian layers built from imagebuild.lock: the lock pins every package's version, and keeps what
dpkg recorded of each when it was resolved (architecture, source package) and the tree's
os-release, so no layer is read, not even one the registry's cache lent. Otherwise (an `os.image`
or `os.dockerfile` base, or a lock made before it kept those details) dpkg's own database is read
from the layers (`var/lib/dpkg/status`, as the topmost layer that has one leaves it), once per
layer digest: what was found is kept beside the layer cache (`DPKG_FACTS_DIR`). Both ways give the
same packages. The Python distributions are the libraries' locked closure (each wheel's sha256)
and the server packages the recipe pins.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from imagebuild.atomic import write_atomically
from imagebuild.errors import StoreError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.compress import decompressing
from imagebuild.oci.model import Descriptor
from imagebuild.sources.lockfile import DebianLock, PythonLock
from imagebuild.sources.os_tree import DPKG_STATUS, OS_RELEASE, installed_stanzas, os_release_fields
from imagebuild.stores.layout import DPKG_FACTS_DIR, LayoutStore

_WANTED = (DPKG_STATUS, *OS_RELEASE)
BASE_LAYERS = ("os", "runtime")      # the bake's layer names that may hold Debian packages
_FACTS_FORMAT = 1
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^)]+)\))?$")
_PIN = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(?P<version>[^\s;#]+)")
_HASH = re.compile(r"--hash[= ]sha256:(?P<hex>[0-9a-fA-F]{64})")


@dataclass(frozen=True, order=True)
class DebianPackage:
    """One installed Debian package, as dpkg records it."""

    name: str
    version: str
    architecture: str
    source: str              # the source package it was built from (its own name when dpkg names none)
    source_version: str      # that source's version (the package's own when dpkg names none)


@dataclass(frozen=True, order=True)
class PythonDistribution:
    """One Python distribution the bake installed, where it installed it."""

    name: str
    version: str
    sha256: str              # the wheel's, as locked or pinned ("" when the pin names no hash)
    path: str                # the directory in the image it is installed in (no leading /)


@dataclass(frozen=True)
class Distro:
    """The operating system an image's os-release names (ID, VERSION_ID, VERSION_CODENAME)."""

    id: str
    version_id: str
    codename: str


@dataclass(frozen=True)
class ImageContents:
    """Everything an SBOM of one image says, every field a fact of its bake."""

    name: str                # the image's name (the recipe's)
    version: str
    digest: str              # the image manifest's digest, which the SBOMs are attached to
    created: str             # the image's own creation time (RFC 3339), from its commit
    revision: str            # the commit
    repository: str | None   # the app's git remote (without credentials), when it has one
    architecture: str
    distro: Distro | None
    debian: tuple[DebianPackage, ...]
    python: tuple[PythonDistribution, ...]

    def __post_init__(self):
        object.__setattr__(self, "debian", tuple(sorted(self.debian)))
        object.__setattr__(self, "python", tuple(sorted(self.python, key=lambda d: (d.path, d.name))))


# -- dpkg's database and os-release, as text ----------------------------------------------------

def parse_dpkg_packages(status: str) -> list[DebianPackage]:
    """The installed packages of a dpkg status file (those whose files are on disk: state `installed`)."""
    found = []
    for fields in installed_stanzas(status):
        name, version = fields["Package"], fields.get("Version", "")
        source, source_version = _source_of(name, version, fields.get("Source", ""))
        found.append(DebianPackage(name, version, fields.get("Architecture", ""), source, source_version))
    return sorted(found)


def distro_of(fields: Mapping[str, str]) -> Distro | None:
    """The distribution os-release's ID, VERSION_ID and VERSION_CODENAME name; None without an ID."""
    if not fields.get("ID"):
        return None
    return Distro(fields["ID"], fields.get("VERSION_ID", ""), fields.get("VERSION_CODENAME", ""))


def packages_of_lock(lock: DebianLock, with_runtime: bool) -> list[DebianPackage] | None:
    """The packages of the topmost Debian layer as imagebuild.lock pins them, with what dpkg recorded of
    each when the lock was resolved; None for a lock made before that was kept."""
    versions = lock.runtime_versions() if with_runtime else dict(lock.os)
    if not lock.packages or not set(versions) <= set(lock.packages):
        return None
    found = []
    for name, version in versions.items():
        entry = lock.packages[name]
        source, source_version = _source_of(name, version, entry.get("source", ""))
        found.append(DebianPackage(name, version, entry.get("architecture", ""), source, source_version))
    return sorted(found)


def _source_of(name: str, version: str, field: str) -> tuple[str, str]:
    """(source package, its version) from dpkg's `Source:` field: `NAME`, `NAME (VERSION)`, or absent."""
    match = _SOURCE.match(field)
    if not match:
        return name, version
    return match.group("name"), match.group("version") or version


def python_distributions(closure: PythonLock | None, closure_path: str, pins: Sequence[str],
                         pins_path: str) -> list[PythonDistribution]:
    """The libraries' closure, installed at `closure_path`, and the `name==version --hash=sha256:...`
    pins (the server packages) installed at `pins_path`. A pin without `==` names no version and is left out."""
    found = [PythonDistribution(package.name, package.version, package.sha256, closure_path)
             for package in (closure.packages if closure else ())]
    for pin in pins:
        match = _PIN.match(pin)
        if match:
            digest = _HASH.search(pin)
            found.append(PythonDistribution(match.group("name"), match.group("version"),
                                            digest.group("hex").lower() if digest else "", pins_path))
    return found


# -- reading the layers --------------------------------------------------------------------------

def _layer_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def read_layer_facts(stream, media_type: str) -> dict:
    """From one layer's bytes: the text of each wanted file it holds, and the wanted files it removes
    (an OCI whiteout of the file, or an opaque whiteout of its directory)."""
    files: dict[str, str] = {}
    removed: set[str] = set()
    with tarfile.open(fileobj=decompressing(stream, mt.layer_compression(media_type)), mode="r|") as tar:
        for member in tar:
            path = _layer_path(member.name)
            folder, base = posixpath.split(path)
            if base == ".wh..wh..opq":
                removed.update(w for w in _WANTED if posixpath.dirname(w) == folder)
            elif base.startswith(".wh."):
                gone = posixpath.join(folder, base[4:])
                removed.update(w for w in _WANTED if w == gone or w.startswith(gone + "/"))
            elif path in _WANTED and member.isfile():
                handle = tar.extractfile(member)
                files[path] = handle.read().decode("utf-8", "replace") if handle else ""
    return {"format": _FACTS_FORMAT, "files": dict(sorted(files.items())), "removed": sorted(removed)}


def layer_facts(store: LayoutStore, layer: Descriptor, fetch: Callable[[Descriptor], None] | None = None) -> dict:
    """`read_layer_facts` of a layer in the store, kept per layer digest so each layer is read once.
    `fetch`: brings the layer's blob into the store when the store lacks it (a layer the registry's
    cache lent)."""
    kept = store.root / DPKG_FACTS_DIR / f"{layer.digest.removeprefix('sha256:')}.json"
    try:
        facts = json.loads(kept.read_bytes())
        if facts.get("format") == _FACTS_FORMAT:
            return facts
    except (OSError, ValueError, AttributeError):
        pass     # not kept yet, or garbled: read the layer again
    if not store.has_blob(layer.digest) and fetch is not None:
        fetch(layer)
    if not store.has_blob(layer.digest):
        raise StoreError(f"layer {layer.digest} is not in the store at {store.root}; its packages cannot be listed",
                         hint="bake the image again")
    with store.open_blob(layer.digest) as blob:
        facts = read_layer_facts(blob, layer.media_type)
        blob.read()    # the digest is checked at the blob's end
    kept.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(kept, json.dumps(facts, sort_keys=True).encode())
    return facts


def stacked_files(layers: Iterable[Mapping]) -> dict[str, str]:
    """The wanted files as the stack of layers (lowest first) leaves them."""
    files: dict[str, str] = {}
    for facts in layers:
        for path in facts.get("removed", ()):
            files.pop(path, None)
        files.update(facts.get("files", {}))
    return files


def base_packages(files: Mapping[str, str]) -> tuple[list[DebianPackage], Distro | None]:
    """The Debian packages and the distribution the stacked files name."""
    packages = parse_dpkg_packages(files.get(DPKG_STATUS, ""))
    release = next((files[path] for path in OS_RELEASE if path in files), None)
    return packages, distro_of(os_release_fields(release)) if release is not None else None


# -- a bake's image ----------------------------------------------------------------------------------

def contents_of_bake(store: LayoutStore, result, fetch: Callable[[Descriptor], None] | None = None) -> ImageContents:
    """What the image of `result` (a `BakeResult`) is made of. Its dates, commit and repository are
    read from the image's own manifest and config, so the SBOM says what the image says."""
    from imagebuild.build.layers.libraries import site_packages
    from imagebuild.build.layers.server import SERVER_PACKAGES
    from imagebuild.oci.model import ANNOTATION_REVISION, ANNOTATION_SOURCE

    recipe = result.recipe
    manifest = store.read_manifest(str(result.digest))
    config = store.read_config(manifest)
    base = [Descriptor(layer.media_type, layer.digest, layer.size) for layer in result.layers
            if layer.name in BASE_LAYERS]
    # Debian layers built from imagebuild.lock: the lock says it all, no layer is read (a layer the
    # registry's cache lent stays there). A lock made before it kept dpkg's details, or another base: the layers.
    locked = packages_of_lock(result.debian, "runtime" in {layer.name for layer in result.layers}) \
        if result.debian is not None else None
    if locked is not None:
        packages, distro = locked, distro_of(result.debian.os_release)
    else:
        packages, distro = base_packages(stacked_files(layer_facts(store, layer, fetch) for layer in base))
    closure_path = site_packages(recipe) if result.python is not None else ""
    python = python_distributions(result.python, closure_path, recipe.server.packages, SERVER_PACKAGES)
    annotations = manifest.annotations or {}
    return ImageContents(name=recipe.name, version=result.version, digest=str(result.digest),
                         created=str(config.get("created", "")), revision=annotations.get(ANNOTATION_REVISION, ""),
                         repository=annotations.get(ANNOTATION_SOURCE), architecture=recipe.os.architecture,
                         distro=distro, debian=tuple(packages), python=tuple(python))
