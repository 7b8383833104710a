"""The OS and runtime layers, built from Debian packages.

`os` is the suite plus `os.packages`; `runtime` is what installing the
language runtime changes on top of it. Both root file systems are built by
mmdebstrap with every package pinned to the version in imagebuild.lock, so the
same commit bakes the same bytes; without a lock (or when the recipe asks for
something the lock does not cover) the versions are resolved afresh and the
lock is written. The two layers are cached in the store under keys made of
everything that decides their bytes.

`base_from_store` is the other way to get an OS: an image already in the
local store, pinned by digest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import imagebuild
from imagebuild.errors import BuildError, CorruptBlobError, StoreError, UserError
from imagebuild.build.cache import LayerCache, store_layer
from imagebuild.sources.debian_index import AptIndex, DebianSource
from imagebuild.sources.debian_rootfs import (build_rootfs, locked_version_missing, mmdebstrap_version,
                                             unknown_package)
from imagebuild.sources.os_tree import (diff_entries, installed_details, installed_packages, read_member_text,
                                       release_fields, tree_entries)
from imagebuild.sources.lockfile import DebianLock, PythonLock, read_lock, write_lock
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.compress import decompressing
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult
from imagebuild.oci.model import Descriptor, Layer, ParsedManifest, load_json_object, parse_config, parse_index
from imagebuild.oci.reference import Reference
from imagebuild.recipe.kinds import RUNTIME_VERSIONS
from imagebuild.recipe.model import OsSpec, RuntimeSpec
from imagebuild.stores.layout import VERIFIED_LAYERS_FILE, LayoutStore, StoreNotWritableError
from imagebuild.build.layers.lock_freshness import LAYER_FORMAT, lock_fits, lock_inputs, source_of  # noqa: F401

# -- which packages -----------------------------------------------------------


def resolve_packages(os_spec: OsSpec, runtime_spec: RuntimeSpec,
                     index: AptIndex | None = None) -> tuple[list[str], list[str]]:
    """(OS packages, runtime packages) for the recipe, each checked against the suite's index."""
    source = source_of(os_spec)
    index = index or AptIndex(source)
    base = sorted(set(os_spec.packages))
    found = index.versions(base)
    for name in base:
        if not found[name]:
            raise unknown_package(source, name)
    return base, _runtime_packages(source, runtime_spec, index)


def _runtime_packages(source: DebianSource, spec: RuntimeSpec, index: AptIndex) -> list[str]:
    language, version = spec.language, spec.version
    if not language:
        return []
    version = str(version)
    form, example = RUNTIME_VERSIONS[language]
    if not form.fullmatch(version):
        raise UserError(f"runtime {language} {version!r} is not a version number", hint=f"e.g. {example}")

    def not_shipped(shipped: list[str]) -> UserError:
        has = ", ".join(shipped) if shipped else "none"
        return UserError(f"runtime {language} {version} is not shipped by Debian {source.suite} (it has {has})")

    if language == "python":
        names = index.names_matching(r"python3\.\d+")
        if f"python{version}" not in names:
            raise not_shipped(sorted((n[len("python"):] for n in names), key=_numeric))
        # `python3` (the /usr/bin/python3 name and the stdlib metapackages) only when it is this version
        default = index.versions(["python3"])["python3"]
        extra = ["python3"] if default and default[0].startswith(version + ".") else []
        return [f"python{version}", *extra]
    if language == "java":
        names = index.names_matching(r"openjdk-\d+-jre-headless")
        if f"openjdk-{version}-jre-headless" not in names:
            raise not_shipped(sorted((n.split("-")[1] for n in names), key=_numeric))
        return [f"openjdk-{version}-jre-headless"]
    majors = sorted({v.split(":")[-1].split(".")[0] for v in index.versions(["nodejs"])["nodejs"]}, key=_numeric)
    if version not in majors:
        raise not_shipped(majors)
    return ["nodejs"]


def _numeric(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


# -- cache keys ---------------------------------------------------------------


def _key(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()


def _tool() -> list[str]:
    return [f"imagebuild {imagebuild.__version__}", mmdebstrap_version(), f"format {LAYER_FORMAT}"]


def os_layer_key(os_spec: OsSpec, lock: DebianLock) -> str:
    """The OS layer's cache key: source, variant, architecture, every locked version, epoch, tools."""
    return _key({"layer": "debian-os", "source": source_of(os_spec).describe(),
                 "packages": [f"{n}={v}" for n, v in sorted(lock.os.items())],
                 "sourceDateEpoch": lock.source_date_epoch, "tool": _tool()})


def runtime_layer_key(os_spec: OsSpec, runtime_spec: RuntimeSpec, lock: DebianLock, parent_key: str) -> str:
    """The runtime layer's cache key, chained to the OS layer's."""
    return _key({"layer": "debian-runtime", "source": source_of(os_spec).describe(),
                 "runtime": lock_inputs(os_spec, runtime_spec)["runtime"],
                 "packages": [f"{n}={v}" for n, v in sorted(lock.runtime_versions().items())],
                 "sourceDateEpoch": lock.source_date_epoch, "tool": _tool(), "parent": parent_key})


# -- building -----------------------------------------------------------------


@dataclass(frozen=True)
class DebianLayers:
    """The built (or cached) layers, their keys and the lock they came from."""

    os: LayerResult
    os_key: str
    runtime: LayerResult | None
    runtime_key: str | None
    lock: DebianLock
    os_cached: bool = False            # taken from the layer cache, not built now
    runtime_cached: bool = False

    @property
    def cached(self) -> bool:
        """Nothing was built: every layer came from the cache."""
        return self.os_cached and (self.runtime_cached or self.runtime is None)

    def layers(self) -> list[LayerResult]:
        return [self.os] + ([self.runtime] if self.runtime else [])


@dataclass
class _Trees:
    """The two root file system tars in a scratch directory."""

    work: Path
    log_dir: Path

    @property
    def os_tar(self) -> Path:
        return self.work / "os.tar"

    @property
    def runtime_tar(self) -> Path:
        return self.work / "runtime.tar"


def _default_log_dir(store: LayoutStore | None) -> Path:
    if store is not None:
        return Path(store.root) / "logs"
    return Path(tempfile.gettempdir()) / "imagebuild-logs"


def _resolve(source: DebianSource, os_spec: OsSpec, runtime_spec: RuntimeSpec, trees: _Trees) -> DebianLock:
    """Build both trees from the newest versions and record what got installed."""
    index = AptIndex(source)
    base, runtime = resolve_packages(os_spec, runtime_spec, index)
    epoch = index.release_epoch()
    with index.lists_copy() as lists, index.package_files() as debs:
        build_rootfs(source, base, None, epoch, trees.os_tar, trees.log_dir / "debian-os.log", lists, debs)
        with tarfile.open(trees.os_tar) as tar:
            os_versions = installed_packages(tar)
            # the topmost tree's, for the image's SBOM (the runtime tree's replace them below)
            details, release = installed_details(tar), release_fields(tar)
        runtime_changes: dict[str, str] = {}
        if runtime:
            # pinned to the OS tree's versions, so the runtime tree differs from it only by the runtime
            build_rootfs(source, base + runtime, os_versions, epoch, trees.runtime_tar,
                         trees.log_dir / "debian-runtime.log", lists, debs)
            with tarfile.open(trees.runtime_tar) as tar:
                runtime_versions = installed_packages(tar)
                details, release = installed_details(tar), release_fields(tar)
            runtime_changes = {n: v for n, v in runtime_versions.items() if os_versions.get(n) != v}
            removed = sorted(set(os_versions) - set(runtime_versions))
            if removed:
                raise BuildError(f"installing the runtime removes OS packages ({', '.join(removed)})",
                                 hint="remove them from os.packages")
        index.keep_package_files(debs, set(os_versions.items()) | set(runtime_changes.items()))
    return DebianLock(inputs=lock_inputs(os_spec, runtime_spec), source_date_epoch=epoch,
                      os=os_versions, runtime=runtime_changes, packages=details, os_release=release)


def _check_locked_versions(index: AptIndex, lock: DebianLock, fresh: bool = False) -> None:
    """Fail, naming the package, when the mirror has dropped a locked version."""
    wanted = lock.runtime_versions()
    for attempt in (0, 1):
        if attempt or fresh:
            index.refresh(force=True)     # a stale index must not blame the lock, nor excuse it
        found = index.versions(sorted(wanted))
        missing = sorted(name for name, version in wanted.items() if version not in found[name])
        if not missing:
            return
    raise locked_version_missing(missing[0], wanted[missing[0]])


def _build_locked(source: DebianSource, os_spec: OsSpec, runtime_spec: RuntimeSpec, lock: DebianLock,
                  trees: _Trees, need_runtime: bool) -> None:
    index = AptIndex(source)
    _check_locked_versions(index, lock)
    base = sorted(set(os_spec.packages))
    runtime = _runtime_packages(source, runtime_spec, index) if need_runtime else []
    jobs = [(base, dict(lock.os), trees.os_tar, "debian-os.log")]
    if need_runtime:
        jobs.append((base + runtime, lock.runtime_versions(), trees.runtime_tar, "debian-runtime.log"))
    import concurrent.futures     # here: a bake that finds its Debian layers in the cache starts no threads

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(build_rootfs, source, include, pins, lock.source_date_epoch, tar,
                               trees.log_dir / log) for include, pins, tar, log in jobs]
        for future in futures:
            future.result()
    for _, pins, tar_path, _ in jobs:
        with tarfile.open(tar_path) as tar:
            installed = installed_packages(tar)
        for name in sorted(set(pins) | set(installed)):
            if pins.get(name) != installed.get(name):
                # apt ignores a pin on a version it cannot find; that is the usual cause
                _check_locked_versions(index, lock, fresh=True)
                raise BuildError(f"package {name} was installed as {installed.get(name, 'nothing')} "
                                 f"but imagebuild.lock pins {pins.get(name, 'nothing')}",
                                 hint="run `imagebuild lock --upgrade` to refresh imagebuild.lock")


def _write_layers(store: LayoutStore, trees: _Trees, lock: DebianLock, os_result: LayerResult | None,
                  write_runtime: bool) -> tuple[LayerResult, LayerResult | None]:
    """Write the layers not already cached; `os_result` is the cached OS layer, if any."""
    epoch = lock.source_date_epoch
    runtime_result = None
    with tarfile.open(trees.os_tar) as os_tar:
        if os_result is None:
            os_result = store_layer(store, tree_entries(os_tar), epoch)
        if write_runtime:
            with tarfile.open(trees.runtime_tar) as runtime_tar:
                runtime_result = store_layer(store, diff_entries(os_tar, runtime_tar), epoch)
    return os_result, runtime_result


def build_debian_layers(store: LayoutStore, os_spec: OsSpec, runtime_spec: RuntimeSpec,
                        lock_path: str | Path, *, update_lock: bool = True, use_cache: bool = True,
                        log_dir: str | Path | None = None, lock: DebianLock | None = None,
                        on_build: Callable[[bool], None] | None = None,
                        write: Callable[[Path, DebianLock], Any] = write_lock) -> DebianLayers:
    """The OS layer and (when the recipe names a runtime) the runtime layer, in `store`.

    With a lock matching the recipe, every package is pinned to its locked
    version. Without one, or with one the recipe has outgrown, versions are
    resolved afresh and the lock is (re)written — unless `update_lock` is
    False, as in CI, where that is an error.

    `lock`: the lock at `lock_path` when the caller has read it already.
    `on_build`: called once before a layer is built, with whether versions are resolved first.
    `write`: how a lock resolved here is written (one platform's of several: beside the others').
    """
    source = source_of(os_spec)
    lock_path = Path(lock_path)
    if lock is None:
        lock = read_lock(lock_path)
        # A lock of several platforms: this architecture's part, if it has one.
        lock = lock.for_architecture(os_spec.architecture) or lock if lock is not None else None
    python = lock.python if lock is not None else None   # the libraries' closure survives a Debian re-resolve
    if lock is not None and not lock_fits(lock, os_spec, runtime_spec):
        if not update_lock:
            raise UserError(f"{lock_path} is out of date with the recipe's os and runtime sections",
                            hint="run `imagebuild lock` and commit imagebuild.lock")
        lock = None
    if lock is None and not update_lock:
        raise UserError(f"no {lock_path.name} beside the recipe", hint="run `imagebuild lock` and commit it")
    need_runtime = bool(runtime_spec.language)
    cache = LayerCache(store)
    with tempfile.TemporaryDirectory(prefix="imagebuild-debian-") as work:
        trees = _Trees(Path(work), Path(log_dir) if log_dir else _default_log_dir(store))
        resolved = lock is None
        if lock is None:
            if on_build is not None:
                on_build(True)
            lock = replace(_resolve(source, os_spec, runtime_spec, trees), python=python)
            write(lock_path, lock)
        os_key, runtime_key, os_result, runtime_result = _cached(cache, os_spec, runtime_spec, lock, use_cache)
        # A layer built from fresh trees counts as built even when the cache had it.
        os_cached, runtime_cached = not resolved and os_result is not None, not resolved and runtime_result is not None
        if not resolved:
            if os_result is not None and (runtime_result is not None or not need_runtime):
                return DebianLayers(os_result, os_key, runtime_result, runtime_key, lock, os_cached, runtime_cached)
            if on_build is not None:
                on_build(False)
            # the runtime layer is a diff against the OS tree, so it needs both trees
            _build_locked(source, os_spec, runtime_spec, lock, trees, need_runtime=need_runtime)
        os_result, written = _write_layers(store, trees, lock, os_result, need_runtime and runtime_result is None)
        runtime_result = runtime_result or written
    cache.put(os_key, os_result)
    if runtime_key and runtime_result:
        cache.put(runtime_key, runtime_result)
    return DebianLayers(os_result, os_key, runtime_result, runtime_key, lock, os_cached, runtime_cached)


def _cached(cache: LayerCache, os_spec: OsSpec, runtime_spec: RuntimeSpec, lock: DebianLock,
            use_cache: bool) -> tuple[str, str | None, LayerResult | None, LayerResult | None]:
    """Both keys, and the layers the cache already holds for them."""
    os_key = os_layer_key(os_spec, lock)
    runtime_key = runtime_layer_key(os_spec, runtime_spec, lock, os_key) if runtime_spec.language else None
    os_result = cache.get(os_key) if use_cache else None
    runtime_result = cache.get(runtime_key) if (use_cache and runtime_key) else None
    return os_key, runtime_key, os_result, runtime_result


def resolve_lock(os_spec: OsSpec, runtime_spec: RuntimeSpec, log_dir: str | Path | None = None,
                 python: PythonLock | None = None) -> DebianLock:
    """The newest versions the mirror has, found by building both trees (with `python`, the
    libraries' closure, as it is). Writes nothing."""
    source = source_of(os_spec)
    with tempfile.TemporaryDirectory(prefix="imagebuild-lock-") as work:
        trees = _Trees(Path(work), Path(log_dir) if log_dir else _default_log_dir(None))
        return replace(_resolve(source, os_spec, runtime_spec, trees), python=python)


def fill_records(os_spec: OsSpec, runtime_spec: RuntimeSpec, lock: DebianLock,
                 log_dir: str | Path | None = None) -> DebianLock:
    """`lock` with dpkg's records and os-release added, read from the trees the bake builds from its
    pins; every pinned version stays as it is (a version gone from the mirror is an error). Writes nothing."""
    source = source_of(os_spec)
    need_runtime = bool(runtime_spec.language)
    with tempfile.TemporaryDirectory(prefix="imagebuild-lock-") as work:
        trees = _Trees(Path(work), Path(log_dir) if log_dir else _default_log_dir(None))
        _build_locked(source, os_spec, runtime_spec, lock, trees, need_runtime=need_runtime)
        # the topmost tree's, as `_resolve` keeps them
        with tarfile.open(trees.runtime_tar if need_runtime else trees.os_tar) as tar:
            details, release = installed_details(tar), release_fields(tar)
    return replace(lock, packages=details, os_release=release)


def lock_packages(os_spec: OsSpec, runtime_spec: RuntimeSpec, path: str | Path,
                  log_dir: str | Path | None = None, python: PythonLock | None = None) -> DebianLock:
    """`resolve_lock`, and the lock written to `path`."""
    lock = resolve_lock(os_spec, runtime_spec, log_dir, python)
    write_lock(path, lock)
    return lock


# -- reading the OS layer back ----------------------------------------------------


def os_accounts(store: LayoutStore, os_layer: LayerResult) -> tuple[str, str]:
    """(/etc/passwd, /etc/group) of an OS layer in the store, for adding the app's user."""
    found: dict[str, str] = {}
    with store.open_blob(os_layer.digest) as blob:
        stream = decompressing(blob, mt.layer_compression(os_layer.media_type))
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.name in ("etc/passwd", "etc/group") and member.isfile():
                    found[member.name] = tar.extractfile(member).read().decode("utf-8", "replace")
                    if len(found) == 2:
                        break
    if len(found) != 2:
        raise BuildError(f"the OS layer {os_layer.digest} has no etc/passwd or etc/group")
    return found["etc/passwd"], found["etc/group"]


# -- a base image instead -------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    reference: str
    manifest_digest: Digest
    layers: tuple[Layer, ...]
    config: dict[str, Any]


def base_from_store(store: LayoutStore, ref: str, architecture: str = "amd64") -> BaseImage:
    """An image already in the local store, pinned by digest, as layers and config.

    Whatever a new image takes from it is checked first: each layer's size, digest and
    diff_id, and the config's shape, so a damaged base is refused instead of baked in."""
    reference = Reference.parse(ref)
    if reference.digest is None:
        raise UserError(f"os.image {ref!r} is not pinned by digest", hint="write it as REF@sha256:...")
    pull = f"run `imagebuild pull {ref}` first"
    if not store.has_blob(reference.digest):
        raise UserError(f"base image {ref} is not in the local store at {store.root}", hint=pull)
    digest = reference.digest
    raw = store.read_blob(digest)
    try:
        media = load_json_object(raw, "manifest").get("mediaType")
        if media in mt.INDEX_TYPES:
            digest = _platform_manifest(raw, architecture, ref)
            if not store.has_blob(digest):
                raise UserError(f"the {architecture} image of {ref} is not in the local store", hint=pull)
            raw = store.read_blob(digest)
        manifest = ParsedManifest.parse(raw)
    except ValueError as exc:  # MalformedError
        raise UserError(f"{digest} in the local store is not an image manifest ({exc})") from None
    for descriptor in manifest.blobs():
        if not store.has_blob(descriptor.digest):
            raise UserError(f"blob {descriptor.digest} of base image {ref} is missing from the local store",
                            hint=pull)
        _check_size(store, ref, descriptor)
    try:
        config = parse_config(store.read_blob(manifest.config.digest))
    except ValueError as exc:  # MalformedError
        raise StoreError(f"base image {ref} has a malformed config {manifest.config.digest}: {exc}",
                         hint=f"remove it from the store and {pull}") from None
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(manifest.layers):
        raise UserError(f"base image {ref} lists {len(manifest.layers)} layers but "
                        f"{len(diff_ids)} diff_ids in its config")
    layers = tuple(Layer(_oci_layer(descriptor), Digest(diff_id))
                   for descriptor, diff_id in zip(manifest.layers, diff_ids))
    verified = _verified_layers(store)
    checked = {}
    for layer in layers:
        key = _verified_key(store, layer)
        if verified.get(str(layer.digest)) != key:
            _check_layer(store, ref, layer)
            checked[str(layer.digest)] = key
    if checked:
        _remember_verified(store, checked)
    return BaseImage(reference=ref, manifest_digest=Digest(digest), layers=layers, config=config)


# A base layer's check unpacks all of it (a Debian base: some 100 MB, on every bake). One that passed
# is remembered by its digest, with the diff_id it unpacked to and its file's size, mtime and inode:
# a blob file replaced or rewritten since is checked again (VERIFIED_LAYERS_FILE in the store).


def _verified_key(store: LayoutStore, layer: Layer) -> str:
    stat = store.blob_path(layer.digest).stat()
    return f"{layer.diff_id} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}"


def _verified_layers(store: LayoutStore) -> dict[str, str]:
    try:
        known = json.loads((store.root / VERIFIED_LAYERS_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _remember_verified(store: LayoutStore, checked: dict[str, str]) -> None:
    try:
        with store.locked():
            known = {**_verified_layers(store), **checked}
            store._atomic_write(store.root / VERIFIED_LAYERS_FILE, canonical_json(known))
    except (OSError, StoreError, StoreNotWritableError):
        pass    # only saves the next bake a check; a read-only store still bakes


def _check_size(store: LayoutStore, ref: str, descriptor: Descriptor) -> None:
    size = store.blob_size(descriptor.digest)
    if size != descriptor.size:
        raise StoreError(f"blob {descriptor.digest} of base image {ref} is {size} bytes, but its manifest "
                         f"says {descriptor.size}", hint="the image is damaged; pull it again from its source")


def _check_layer(store: LayoutStore, ref: str, layer: Layer) -> None:
    """Read the layer once: its digest is checked by the store's reader, its diff_id on what it unpacks to."""
    compression = mt.layer_compression(layer.descriptor.media_type)
    unpacked = hashlib.sha256()
    try:
        try:
            with store.open_blob(layer.digest) as blob:
                if compression == "gzip":
                    stream = gzip.GzipFile(fileobj=blob, mode="rb")
                elif compression == "zstd":
                    import zstandard

                    stream = zstandard.ZstdDecompressor().stream_reader(blob)
                else:
                    stream = blob
                while chunk := stream.read(1024 * 1024):
                    unpacked.update(chunk)
                blob.read()  # the digest check fires at the blob's end, which a decompressor may not reach
        except (OSError, EOFError, zlib.error, ValueError) as exc:  # not the compressed stream it claims
            store.verify_blob(layer.digest)  # a damaged blob says so first
            raise StoreError(f"layer {layer.digest} of base image {ref} does not unpack as "
                             f"{layer.descriptor.media_type} ({exc})",
                             hint="the image is damaged; pull it again from its source") from None
    except CorruptBlobError as exc:
        raise CorruptBlobError(f"base image {ref}: {exc.message}", hint=exc.hint) from None
    if Digest.from_hasher(unpacked) != layer.diff_id:
        raise StoreError(f"layer {layer.digest} of base image {ref} unpacks to {Digest.from_hasher(unpacked)}, "
                         f"not the diff_id {layer.diff_id} its config names",
                         hint="the image is damaged; pull it again from its source")


def _platform_manifest(raw: bytes, architecture: str, ref: str) -> Digest:
    for entry in parse_index(raw):
        platform = entry.platform
        if platform is not None and platform.os == "linux" and platform.architecture == architecture:
            return entry.digest
    raise UserError(f"base image {ref} has no linux/{architecture} image")


def _oci_layer(descriptor: Descriptor) -> Descriptor:
    # Docker's gzip layer type names the same bytes as OCI's; an OCI manifest wants OCI's name.
    if descriptor.media_type == mt.DOCKER_LAYER_GZIP:
        return Descriptor(mt.OCI_LAYER_GZIP, descriptor.digest, descriptor.size, descriptor.annotations)
    return descriptor
