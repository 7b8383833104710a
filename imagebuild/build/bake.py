"""`bake`: one git commit of an app → one reproducible image in the local store.

Two calls. `read_input` loads the recipe, reads git, and refuses a lock that is
not the committed one and a dirty tree; its `BakeInput` is what the outputs
(`imagebuild/publish/`) check before anything is built. `bake` then gathers each
layer's builder, plans (cache keys), builds or reuses each layer and writes the
image; it delivers nothing: publishing the `BakeResult` is the outputs' part.
Every user mistake is found before anything is written to the store.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from imagebuild import plan as planning
from imagebuild.build.builder import LayerBuilder, Prebuilt
from imagebuild.build.cache import LayerCache
from imagebuild.build.layers import debian
from imagebuild.build.layers.app import AppLayer, app_files, credential_warnings
from imagebuild.build.layers.config import ConfigLayer
from imagebuild.build.layers.libraries import (LibrariesLayer, lock_python, locked_closure, pip_version,
                                               python_lock_fits, requirements_bytes)
from imagebuild.build.layers.server import ServerLayer
from imagebuild.errors import RecipeError, UserError
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import Descriptor, Image, Layer, ParsedManifest, Platform, image_index, rfc3339
from imagebuild.oci.reference import tag_for
from imagebuild.progress import Progress
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.sql_lint import refuse_breaking_expand
from imagebuild.recipe.templates import server_command
from imagebuild.sources import app_tree
from imagebuild.sources.git import GitFacts, git_facts, remote_url, require_git
from imagebuild.sources.lockfile import (DebianLock, PythonLock, lock_path_for, parse_lock, platform_lock, read_lock,
                                         write_lock)
from imagebuild.stores.engine import EngineSession
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.reserved_tags import refuse_version_tag

if TYPE_CHECKING:   # the registry's layer cache (and httpx) is imported only by a bake that has one
    from imagebuild.build.remote_cache import RemoteCache, RemoteLayer


@dataclass(frozen=True)
class LayerOutcome:
    name: str
    digest: Digest
    diff_id: Digest
    size: int
    cached: bool
    seconds: float
    media_type: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "digest": str(self.digest), "size": self.size, "cached": self.cached}


@dataclass(frozen=True)
class BakeInput:
    """What a bake is made from, read once: the loaded recipe, git's facts, the version, and the lock.
    Outputs check themselves against it before anything is built."""

    recipe: Recipe
    facts: GitFacts
    commit: planning.Commit
    lock: DebianLock | None        # the committed lock, when it is the one to build from
    update_lock: bool              # the committed lock does not fit; --allow-dirty lets it be resolved
    architectures: tuple[str, ...] = ()  # set in one platform's input: every platform's, in order

    def for_architecture(self, architecture: str) -> "BakeInput":
        """One platform's image of a multi-platform recipe: its recipe and its part of the lock."""
        lock = self.lock.for_architecture(architecture) if self.lock is not None else None
        return replace(self, recipe=self.recipe.for_architecture(architecture), lock=lock,
                       architectures=self.recipe.architectures)

    @property
    def version(self) -> str:
        return self.commit.version

    @property
    def dirty(self) -> bool:
        return self.commit.dirty

    @property
    def local_ref(self) -> str:
        """NAME:VERSION in the local store."""
        return f"{self.recipe.name}:{tag_for(self.version)}"


@dataclass(frozen=True)
class BakeResult:
    image: str                         # the reference: NAME:VERSION locally, the registry's once pushed
    digest: Digest                     # manifest digest
    version: str
    layers: tuple[LayerOutcome, ...]
    recipe: Recipe                     # as loaded once, so nothing downstream loads it again
    facts: GitFacts                    # likewise git's facts
    dirty: bool = False
    local_ref: str = ""                # NAME:VERSION in the local store
    warnings: tuple[str, ...] = ()     # e.g. files in the app layer that look like credentials
    keys: tuple[tuple[str, LayerResult], ...] = ()   # each layer's cache key, for the registry's layer cache
    remote: tuple[RemoteLayer, ...] = ()  # layers the registry's cache lent (the store may lack their blobs)
    python: PythonLock | None = None   # the libraries' closure installed (the lock's, or resolved by this bake)
    debian: DebianLock | None = None   # the lock the os and runtime layers were built from, when they are the base
    platforms: tuple[tuple[str, Digest], ...] = ()  # a multi-platform index: each OS/ARCH and its image
    images: tuple["BakeResult", ...] = ()  # a multi-platform index: each platform's own result

    def pushed_as(self, reference: str) -> "BakeResult":
        return replace(self, image=reference)

    def with_warnings(self, lines: Sequence[str]) -> "BakeResult":
        return replace(self, warnings=tuple(dict.fromkeys([*self.warnings, *lines])))

    def to_json(self) -> dict:
        """Exactly the keys `bake --json` promises."""
        out = {"image": self.image, "digest": str(self.digest), "version": self.version,
               "layers": [layer.to_dict() for layer in self.layers], "warnings": list(self.warnings)}
        if self.platforms:
            out["platforms"] = [{"platform": platform, "digest": str(digest)} for platform, digest in self.platforms]
        return out


def read_input(recipe_path: str | Path, allow_dirty: bool = False) -> BakeInput:
    """The recipe and the commit it is baked from; refuses a lock that is not the committed one
    and a dirty tree (unless `allow_dirty`). Reads nothing of the store and writes nothing."""
    recipe_path = Path(recipe_path)
    # One look at git serves both the recipe's `git.*` variables and the bake.
    facts = git_facts(recipe_path if recipe_path.is_dir() else recipe_path.parent)
    recipe = load_recipe(recipe_path, {"git": facts.as_context()})
    # An expand migration that would break the serving version is a mistake to catch before an image exists.
    refuse_breaking_expand(recipe.root, recipe.deploy.migrations.sql)
    facts = require_git(recipe.root, facts)
    toplevel = Path(facts.toplevel)
    lock_problem, lock = _lock_problem(recipe, toplevel, facts.commit)
    if lock_problem is not None and not allow_dirty:
        raise lock_problem
    # A lock resolved (or taken) from outside the commit makes the image as unrebuildable as a dirty file.
    dirty = facts.dirty or lock_problem is not None
    if dirty and not allow_dirty:
        app_tree.refuse_dirty(toplevel)
    version = facts.version + ("-dirty" if dirty else "")
    commit = planning.Commit(revision=facts.commit, time=facts.commit_time, version=version, dirty=dirty,
                             source=remote_url(toplevel))
    # Version tags share the image's tag namespace with environments, records and disks: refuse a clash first.
    refuse_version_tag(tag_for(version), recipe.environment_names())
    return BakeInput(recipe, facts, commit, lock, update_lock=lock_problem is not None)


def bake(source: BakeInput, store: LayoutStore, progress: Progress | None = None,
         engine: EngineSession | None = None, remote: RemoteCache | None = None) -> BakeResult:
    """Build (or reuse) every layer of SOURCE's image and write it to STORE as NAME:VERSION.

    `engine`: the Docker engine an `os.dockerfile` base is built by; the caller's, so that
    one connection serves the whole command (over ssh:// each costs a handshake).
    `remote`: a registry's layer cache, asked for each layer the local cache lacks; its hits
    stay in the registry (`BakeResult.remote`) until an output needs their bytes.
    """
    progress = progress or Progress.quiet()
    own_engine = engine is None
    engine = engine or EngineSession()
    try:
        return _bake(source, store, progress, engine, remote)
    finally:
        if own_engine:
            engine.close()


def _bake(source: BakeInput, store: LayoutStore, progress: Progress, engine: EngineSession,
          remote: RemoteCache | None) -> BakeResult:
    if not source.recipe.multi_platform:
        return _bake_image(source, store, progress, engine, remote)
    images = []
    for architecture in source.recipe.architectures:
        progress.note(f"baking the linux/{architecture} image ...")
        images.append(_bake_image(source.for_architecture(architecture), store, progress, engine, remote,
                                  tagged=False))
    return _index(source, store, images)


def _index(source: BakeInput, store: LayoutStore, images: Sequence[BakeResult]) -> BakeResult:
    """The image index over each platform's image, tagged NAME:VERSION as a single image would be.
    It carries the images' annotations (version, revision, environments), which promotion reads."""
    children = []
    for result in images:
        raw = store.read_blob(result.digest)
        children.append(Descriptor(mt.OCI_MANIFEST, result.digest, len(raw),
                                   platform=Platform("linux", result.recipe.os.architecture)))
    annotations = ParsedManifest.parse(store.read_blob(images[0].digest)).annotations
    raw = image_index(children, annotations)
    descriptor = store.put_manifest(raw, mt.OCI_INDEX, [source.local_ref])
    first = images[0]
    return replace(first, digest=Digest(descriptor.digest), recipe=source.recipe,
                   layers=tuple(layer for result in images for layer in result.layers),
                   warnings=tuple(dict.fromkeys(line for result in images for line in result.warnings)),
                   keys=tuple(dict.fromkeys(key for result in images for key in result.keys)),
                   remote=tuple(dict.fromkeys(layer for result in images for layer in result.remote)),
                   platforms=tuple((f"linux/{result.recipe.os.architecture}", result.digest) for result in images),
                   images=tuple(images))


def _bake_image(source: BakeInput, store: LayoutStore, progress: Progress, engine: EngineSession,
                remote: RemoteCache | None, tagged: bool = True) -> BakeResult:
    """One platform's image; `tagged`: NAME:VERSION names it (not when an index will)."""
    recipe, commit = source.recipe, source.commit
    store.ensure()  # a --store that cannot be a store is refused here, not after the layers are built
    tree = app_tree.SourceTree(Path(source.facts.toplevel), commit.revision, working_tree=commit.dirty)
    with tempfile.TemporaryDirectory(prefix="imagebuild-bake-") as scratch, tree:
        prefix, files = app_files(recipe, tree)
        warnings = list(credential_warnings(recipe, prefix, files))
        for line in warnings:
            progress.note(f"warning: {line}")
        builders, base_env, java_main = _builders(source, store, tree, (prefix, files), Path(scratch), progress,
                                                  engine, remote)
        env = {**base_env, "IMAGEBUILD_VERSION": commit.version, "IMAGEBUILD_REVISION": commit.revision}
        plan = planning.make_plan(recipe, commit, [builder.inputs for builder in builders],
                                  server_command(recipe, java_main), env=env)
        outcomes, keys = _build(plan, builders, store, progress, remote)
    closure = next((builder.closure for builder in builders if isinstance(builder, LibrariesLayer)), None)
    debian_lock = None
    if recipe.os.image is None and recipe.os.dockerfile is None:
        # the committed lock; one this bake (--allow-dirty) resolved or completed is the file beside the recipe
        debian_lock = source.lock if not source.update_lock else read_lock(lock_path_for(recipe.source))
    image = _image(recipe, plan, outcomes)
    local_ref = source.local_ref
    elsewhere = _elsewhere(remote, keys)
    for line in remote.warnings if remote is not None else ():
        progress.note(f"warning: {line}")
        warnings.append(line)
    descriptor = store.write_image(image, [local_ref] if tagged else [],
                                   frozenset(str(layer.result.digest) for layer in elsewhere))
    if elsewhere:
        # Where the lent blobs lie, so a later export, run or push fetches (or mounts) them.
        from imagebuild.stores.registry import remember_blobs
        for layer in elsewhere:
            remember_blobs(store, remote.client.host, layer.repository, [str(layer.result.digest)])
    return BakeResult(image=local_ref, digest=Digest(descriptor.digest), version=commit.version,
                      layers=tuple(outcomes), recipe=recipe, facts=source.facts, dirty=commit.dirty,
                      local_ref=local_ref, warnings=tuple(warnings), keys=tuple(keys), remote=elsewhere,
                      python=closure, debian=debian_lock)


def _elsewhere(remote: RemoteCache | None,
               keys: list[tuple[str, LayerResult]]) -> tuple[RemoteLayer, ...]:
    """The registry cache's hits this image uses (their blobs may be missing from the store; a push
    mounts each from where it lies, also one fetched to build a layer above it)."""
    if remote is None:
        return ()
    hits = {str(layer.result.digest): layer for layer in remote.hits.values()}
    return tuple(dict.fromkeys(hits[str(result.digest)] for _, result in keys if str(result.digest) in hits))


_RELOCK = "run `imagebuild lock`, commit it, and bake again, or bake with --allow-dirty"
_COMMIT_LOCK = "commit it and bake again, or bake with --allow-dirty"


def _lock_problem(recipe: Recipe, toplevel: Path,
                  revision: str) -> tuple[UserError | None, DebianLock | None]:
    """Why the lock in the commit cannot pin this bake's Debian layers (None when it can),
    and the lock, when it is the committed one (read once here for the whole bake).

    A clean image must be rebuildable from its commit alone, so the lock it is
    built from has to be the committed one, byte for byte, and made for the
    os and runtime sections the recipe has now.
    """
    if recipe.os.image is not None:
        return None, None    # the base image's digest pins it; there is nothing to lock
    lock_path = lock_path_for(recipe.source)
    tree = app_tree.SourceTree(toplevel, revision)
    committed = tree.read(tree.repo_path(lock_path))
    try:
        on_disk: bytes | None = lock_path.read_bytes()
    except FileNotFoundError:
        on_disk = None
    except OSError as exc:
        raise UserError(f"cannot read {lock_path}: {exc.strerror}") from None
    if committed is None and on_disk is None:
        return UserError(f"{lock_path} is missing", hint=_RELOCK), None
    if committed is None:
        return UserError(f"{lock_path} is not committed", hint=_COMMIT_LOCK), None
    if on_disk != committed:
        return UserError(f"{lock_path} has uncommitted changes", hint=_COMMIT_LOCK), None
    lock = parse_lock(committed, lock_path)
    if not _lock_fits_platforms(lock, recipe):
        assert recipe.source is not None
        return UserError(f"{lock_path} is out of date with {recipe.source.name}'s os/runtime sections",
                         hint=_RELOCK), lock
    return None, lock


def _lock_fits_platforms(lock: DebianLock, recipe: Recipe) -> bool:
    """The lock pins the Debian layers of every platform's image."""
    if not recipe.multi_platform:
        return debian.lock_fits(lock, recipe.os, recipe.runtime)
    for architecture in recipe.architectures:
        own, wanted = lock.for_architecture(architecture), recipe.for_architecture(architecture)
        if own is None or not debian.lock_fits(own, wanted.os, wanted.runtime):
            return False
    return True


def _own_lock(source: BakeInput) -> DebianLock | None:
    """The lock this image builds from: the committed one as read, else the file's (this platform's part)."""
    if source.lock is not None:
        return source.lock
    lock = read_lock(lock_path_for(source.recipe.source))
    if lock is None or not source.architectures:
        return lock
    return lock.for_architecture(source.recipe.os.architecture)


def _write_own_lock(source: BakeInput, path: Path, lock: DebianLock) -> None:
    """Write this image's lock; one platform's of several goes into its place beside the others'."""
    if source.architectures:
        whole = read_lock(path)
        parts = {architecture: whole.for_architecture(architecture) if whole is not None else None
                 for architecture in source.architectures}
        parts[source.recipe.os.architecture] = replace(lock, platforms={})
        present = tuple(architecture for architecture in source.architectures if parts[architecture] is not None)
        lock = platform_lock(parts, present)
    write_lock(path, lock)


def _epoch_of(tree: app_tree.SourceTree, paths: Sequence[Path], fallback: int) -> int:
    """The time of the newest commit that changed `paths`: stable across commits that leave them alone."""
    repo_paths = []
    for path in paths:
        try:
            repo_paths.append(tree.repo_path(path))
        except ValueError:
            continue
    return tree.last_change(repo_paths) or fallback


def _recipe_epoch(recipe: Recipe, tree: app_tree.SourceTree, commit_time: int) -> int:
    assert recipe.source is not None
    rel = tree.repo_path(recipe.source)
    if tree.read(rel) is None:
        raise UserError(f"{recipe.source} is not committed",
                        hint="commit the recipe: an image is baked only from what git tracks")
    return _epoch_of(tree, [recipe.source], commit_time)


def _builders(source: BakeInput, store: LayoutStore, tree: app_tree.SourceTree,
              listing: tuple[str, list], scratch: Path, progress: Progress,
              engine: EngineSession, remote: RemoteCache | None
              ) -> tuple[list[LayerBuilder], dict[str, str], str | None]:
    """Each layer's builder, bottom to top, the base image's environment, and a JVM app's main class
    when its build output names it.

    The cheap inputs first (each may refuse the user's input), the base layers last: they
    are the slowest to obtain, so every cheaper check has passed before they are asked for.
    `listing`: the app's files, as listed for the warnings.
    """
    recipe, commit = source.recipe, source.commit
    recipe_epoch = _recipe_epoch(recipe, tree, commit.time)
    builders: list[LayerBuilder] = []

    def read(path: Path, limit: int | None = None) -> bytes | None:
        try:
            return tree.read(tree.repo_path(path), limit)
        except ValueError:
            return None

    pip = None
    unlocked = None     # a closure resolved here (--allow-dirty), to be written into the lock
    requirements = requirements_bytes(recipe, read)
    if requirements is not None or recipe.server.packages:
        pip = pip_version()
    if requirements is not None:
        # Dated by what the libraries come from, so unrelated recipe edits leave the layer cached.
        paths = [recipe.root / recipe.libraries.requirements] if recipe.libraries.requirements else []
        if recipe.libraries.packages:
            paths.append(recipe.source)
        epoch = _epoch_of(tree, paths, commit.time)
        closure, unlocked = _closure(source, requirements)
        builders.append(LibrariesLayer(recipe, closure, epoch, pip, scratch / "libraries"))
    elif recipe.libraries.package_lock is not None:
        builders.append(_npm_layer(recipe, tree, read, scratch, commit.time))
    java_main = None
    if recipe.java is not None:
        from imagebuild.build.layers.java import java_layers
        from imagebuild.sources.java_build import read_build_output

        parts = read_build_output(recipe.root, recipe.java, scratch / "java")
        builders.extend(java_layers(recipe, parts))
        java_main = parts.main_class
    server = ServerLayer(recipe, recipe_epoch, pip, scratch / "server")
    builders.append(server)
    app_epoch = commit.time
    if recipe.java is not None:
        # The compiled app lives in the classes layer: dated by its own files' last change, the app
        # layer (the recipe and what else is tracked) stays the same bytes over a classes-only commit.
        app_epoch = tree.last_change([item.path for item in listing[1]]) or commit.time
    builders.append(AppLayer(recipe, tree, *listing, app_epoch))
    builders.append(ConfigLayer(recipe, recipe_epoch))

    if recipe.os.dockerfile is not None:
        base, base_env = _dockerfile_base(source, store, tree, scratch, progress, engine)
    elif recipe.os.image is not None:
        base, base_env = _base_image(recipe, store)
    else:
        base, base_env = _debian_layers(source, store, progress, remote), {}
        server.os_layer = base[0].result
    if unlocked is not None:
        _write_closure(source, unlocked, progress)
    return base + builders, base_env, java_main


def _npm_layer(recipe: Recipe, tree: app_tree.SourceTree, read, scratch: Path, commit_time: int) -> LayerBuilder:
    """The Node libraries layer, dated by the last commit that changed package-lock.json."""
    from imagebuild.build.layers import npm

    assert recipe.libraries.package_lock is not None
    files = npm.lock_files(recipe, read)
    epoch = _epoch_of(tree, [recipe.root / recipe.libraries.package_lock], commit_time)
    return npm.NpmLayer(recipe, files, epoch, npm.npm_version(), scratch / "npm")


def _closure(source: BakeInput, requirements: bytes) -> tuple[PythonLock, PythonLock | None]:
    """The libraries' closure: imagebuild.lock's, checked against the commit's requirements;
    and, second, the same closure when it was resolved here and is not in the lock yet.

    A base image (os.image) has no imagebuild.lock: its closure is resolved at bake time. With
    --allow-dirty and a lock that does not fit, it is resolved too and written with the Debian pins,
    as those are (the image is -dirty)."""
    recipe = source.recipe
    if recipe.os.image is not None:
        return lock_python(recipe, requirements), None
    lock_path = lock_path_for(recipe.source)
    # With --allow-dirty a lock outgrown by the os/runtime sections is not source.lock: read the file.
    lock = _own_lock(source)
    if lock is None or not debian.lock_fits(lock, recipe.os, recipe.runtime):
        # An unknown package or unshipped runtime version is the first thing to fix: say that one first.
        debian.resolve_packages(recipe.os, recipe.runtime)
    if source.update_lock and not python_lock_fits(lock, recipe, requirements):
        closure = lock_python(recipe, requirements)
        return closure, closure
    return locked_closure(recipe, requirements, lock, lock_path.name), None


def _write_closure(source: BakeInput, closure: PythonLock, progress: Progress) -> None:
    """Put a closure resolved by an --allow-dirty bake into the lock the Debian layers left on disk."""
    lock_path = lock_path_for(source.recipe.source)
    lock = _own_lock(replace(source, lock=None))
    if lock is not None and lock.python != closure:
        _write_own_lock(source, lock_path, replace(lock, python=closure))
        progress.note(f"wrote the Python closure into {lock_path}; commit it")


def _base_image(recipe: Recipe, store: LayoutStore, ref: str | None = None,
                cached: bool = True) -> tuple[list[Prebuilt], dict[str, str]]:
    """`os.image` (or `ref`, a base built from os.dockerfile): the layers of an image in the
    local store, pinned by digest, and its Env.

    The base brings its own packages and runtime; the runtime section then only
    says which Python the libraries are installed for.
    """
    if ref is None and recipe.os.packages:
        raise RecipeError("os.packages need os.debian; a base image (os.image) brings its own packages",
                          file=str(recipe.source), key="os.packages")
    base = debian.base_from_store(store, ref or recipe.os.image, recipe.os.architecture)
    layers = tuple(LayerResult(diff_id=layer.diff_id, digest=layer.digest, size=layer.size, uncompressed_size=0,
                               media_type=layer.descriptor.media_type) for layer in base.layers)
    env = dict(item.split("=", 1) for item in (base.config.get("config") or {}).get("Env") or [] if "=" in item)
    return [Prebuilt(planning.LayerInputs("os", {"image": str(base.manifest_digest)}, 0), layers, cached)], env


def _dockerfile_base(source: BakeInput, store: LayoutStore, tree: app_tree.SourceTree, scratch: Path,
                     progress: Progress, engine: EngineSession) -> tuple[list[Prebuilt], dict[str, str]]:
    """`os.dockerfile`: a base built by the Docker engine FROM os.image, or FROM the Debian os and
    runtime layers, then used by digest like any os.image. The engine is asked only when the
    rendered Dockerfile or its context changed."""
    from imagebuild.build.layers import dockerfile_base

    recipe = source.recipe
    from_ref = recipe.os.image
    if from_ref is None:
        debian_layers = [layer.result for layer in _debian_layers(source, store, progress)]
        from_ref = _store_debian_base(recipe, store, debian_layers)
    prepared = dockerfile_base.prepare(recipe, tree, dockerfile_base.engine_tag_for(from_ref), scratch)
    ref = dockerfile_base.cached(store, prepared)
    built = ref is None
    if ref is None:
        ref = dockerfile_base.build(store, prepared, engine.client(), from_ref, progress)
    return _base_image(recipe, store, ref, cached=not built)


def _store_debian_base(recipe: Recipe, store: LayoutStore, results: list) -> str:
    """The Debian os and runtime layers as an image in the store, for a Dockerfile to start FROM."""
    image = Image(created=rfc3339(0), platform=Platform("linux", recipe.os.architecture),
                  runtime={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})
    for result in results:
        image = image.with_layer(result.as_layer(), created_by="imagebuild bake: Debian layer")
    descriptor = image.manifest_descriptor()
    store.write_image(image, [f"{recipe.name}-debian:{descriptor.digest.hex[:20]}"])
    return f"{recipe.name}-debian@{descriptor.digest}"


def _debian_layers(source: BakeInput, store: LayoutStore, progress: Progress,
                   remote: RemoteCache | None = None) -> list[Prebuilt]:
    """The os and runtime layers, pinned by imagebuild.lock (with `source.update_lock`, written when
    missing or outgrown; otherwise the committed lock, already checked to fit, and read once).

    They are built (or found cached) right away: their cache keys come from
    the lock, which may first have to be resolved.
    """
    recipe, update_lock = source.recipe, source.update_lock
    lock_path = lock_path_for(recipe.source)
    before = _own_lock(source)
    from_cache = _debian_from_caches(source, store, remote, before)
    if from_cache is not None:
        return from_cache
    if before is None or not debian.lock_fits(before, recipe.os, recipe.runtime):
        # Unknown packages and unshipped runtime versions are the user's to fix: say so before any work.
        debian.resolve_packages(recipe.os, recipe.runtime)

    def building(resolving: bool) -> None:
        progress.note("resolving and building the Debian layers ..." if resolving
                      else "building the Debian layers ...")

    started = time.monotonic()
    built = debian.build_debian_layers(store, recipe.os, recipe.runtime, lock_path, update_lock=update_lock,
                                       lock=before, on_build=building,
                                       write=lambda path, lock: _write_own_lock(source, path, lock))
    seconds = time.monotonic() - started
    if before is None or before.to_dict() != built.lock.to_dict():
        progress.note(f"wrote {lock_path}; commit it so every bake of this app uses the same packages "
                      "(until then images are -dirty)")
    epoch = built.lock.source_date_epoch
    layers = [("os", built.os_key, built.os, built.os_cached)]
    if built.runtime is not None:
        layers.append(("runtime", built.runtime_key, built.runtime, built.runtime_cached))
    return [Prebuilt(planning.LayerInputs(name, {"key": key}, epoch), result, cached,
                     0.0 if cached else seconds)
            for name, key, result, cached in layers]


def _debian_from_caches(source: BakeInput, store: LayoutStore, remote: RemoteCache | None,
                        lock: DebianLock | None) -> list[Prebuilt] | None:
    """The os and runtime layers when the committed lock pins them and the local or the registry's
    layer cache holds both: then the Debian mirror is not contacted at all. None otherwise."""
    recipe = source.recipe
    if remote is None or lock is None or source.update_lock or not debian.lock_fits(lock, recipe.os, recipe.runtime):
        return None
    os_key = debian.os_layer_key(recipe.os, lock)
    runtime_key = debian.runtime_layer_key(recipe.os, recipe.runtime, lock, os_key) \
        if recipe.runtime.language else None
    wanted = [("os", os_key)] + ([("runtime", runtime_key)] if runtime_key else [])
    local = LayerCache(store)
    found = {key: local.get(key) for _, key in wanted}
    hits = remote.lookup([key for key, result in found.items() if result is None])
    layers = []
    for name, key in wanted:
        result = found[key] or (hits[key].result if key in hits else None)
        if result is None:
            return None
        layers.append(Prebuilt(planning.LayerInputs(name, {"key": key}, lock.source_date_epoch), result, True))
    return layers


def _build(plan: planning.Plan, builders: Sequence[LayerBuilder], store: LayoutStore,
           progress: Progress, remote: RemoteCache | None = None
           ) -> tuple[list[LayerOutcome], list[tuple[str, LayerResult]]]:
    """Each planned layer: found in the layer cache by its key (the local one, else the registry's),
    or built and put there. Also each single layer's key, for the registry's cache."""
    cache = LayerCache(store)
    by_name = {builder.name: builder for builder in builders}
    outcomes = []
    keys: list[tuple[str, LayerResult]] = []
    if remote is not None:
        # One round of lookups, a few at a time, before anything is built.
        remote.lookup([planned.key for planned in plan.layers if by_name[planned.name].cached is None
                       and cache.get(planned.key) is None])
    progress.begin(len(plan.layers))
    try:
        for planned in plan.layers:
            builder = by_name[planned.name]
            started = time.monotonic()
            if builder.cached is not None:
                # Obtained before planning (Debian layers, a base image): cached under their own keys, if at all.
                found, cached = builder.build(store), builder.cached
            else:
                found = cache.get(planned.key)
                if found is None and remote is not None and planned.key in remote.hits:
                    found = remote.hits[planned.key].result
                cached = found is not None
                if found is None:
                    progress.layer_started(planned.name)
                    _fetch_inputs(builder, store, remote)
                    found = builder.build(store)
                    cache.put(planned.key, found)
            if not isinstance(found, tuple):
                keys.append((_key_of(builder, planned.key), found))
            # A base image (os.image) is several layers under one plan entry.
            results = found if isinstance(found, tuple) else (found,)
            seconds = time.monotonic() - started + builder.seconds
            for result in results:
                progress.layer_done(planned.name, cached, result.size, seconds)
                outcomes.append(LayerOutcome(planned.name, Digest(result.digest), Digest(result.diff_id), result.size,
                                             cached, seconds, result.media_type))
    finally:
        progress.end()
    return outcomes, keys


def _key_of(builder: LayerBuilder, planned_key: str) -> str:
    """The key a layer is cached under: the Debian layers' own (from the lock), else the plan's."""
    own = builder.inputs.inputs.get("key") if builder.cached is not None else None
    return own if isinstance(own, str) else planned_key


def _fetch_inputs(builder: LayerBuilder, store: LayoutStore, remote: RemoteCache | None) -> None:
    """A builder that reads a lower layer (the server layer reads the OS's accounts) gets its bytes first."""
    lower = getattr(builder, "os_layer", None)
    if remote is None or lower is None or store.has_blob(lower.digest):
        return
    from imagebuild.build.remote_cache import fetch_layers

    fetch_layers(remote, store, [layer for layer in remote.hits.values() if layer.result == lower])


def _image(recipe: Recipe, plan: planning.Plan, outcomes: list[LayerOutcome]) -> Image:
    image = Image(created=plan.created, platform=Platform("linux", recipe.os.architecture),
                  runtime=plan.runtime, annotations=plan.annotations)
    for outcome in outcomes:
        layer = Layer(Descriptor(outcome.media_type, outcome.digest, outcome.size), outcome.diff_id)
        image = image.with_layer(layer, created_by=f"imagebuild bake: {outcome.name} layer")
    return image
