"""`bake`: one git commit of an app → one reproducible image in the local store.

The order of work: load the recipe, read git, refuse a lock that is not the
committed one and a dirty tree, check every requested output, gather each layer's inputs, plan (cache keys), build
or reuse each layer, write the image, then export, load or push it. Every
user mistake is found before anything is written to the store.
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from imagebuild import plan as planning
from imagebuild.errors import RecipeError, UserError
from imagebuild.publish.destinations import check_destination, export_image
from imagebuild.sources.git import git_facts, remote_url, require_git
from imagebuild.build.cache import LayerCache, store_layer
from imagebuild.build.layers import debian
from imagebuild.build.layers import app as app_layer
from imagebuild.sources import app_tree
from imagebuild.build.layers import config as config_layer
from imagebuild.build.layers import libraries as libraries_layer
from imagebuild.build.layers import server as server_layer
from imagebuild.oci.layer import Entry, LayerResult
from imagebuild.sources.lockfile import DebianLock, lock_path_for, parse_lock, read_lock
from imagebuild.oci.model import Descriptor, Image, Layer, Platform, rfc3339
from imagebuild.oci.reference import Reference, tag_for
from imagebuild.progress import Progress
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.templates import server_command
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.reserved_tags import refuse_version_tag



@dataclass(frozen=True)
class LayerOutcome:
    name: str
    digest: str
    diff_id: str
    size: int
    cached: bool
    seconds: float
    media_type: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "digest": self.digest, "size": self.size, "cached": self.cached}


@dataclass(frozen=True)
class BakeResult:
    image: str                         # the reference: NAME:VERSION locally, the registry's when pushed
    digest: str                        # manifest digest
    version: str
    layers: tuple[LayerOutcome, ...]
    dirty: bool = False
    local_ref: str = ""                # NAME:VERSION in the local store
    outputs: tuple[str, ...] = ()      # where else it went: oci:DIR, docker-archive:FILE, docker, pushed refs
    warnings: tuple[str, ...] = ()     # e.g. files in the app layer that look like credentials

    def to_json(self) -> dict:
        """Exactly the keys `bake --json` promises."""
        return {"image": self.image, "digest": self.digest, "version": self.version,
                "layers": [layer.to_dict() for layer in self.layers], "warnings": list(self.warnings)}


@dataclass(frozen=True)
class BakeOptions:
    allow_dirty: bool = False
    outputs: tuple[str, ...] = ()      # oci:DIR, docker-archive:FILE
    load: bool = False                 # into the Docker engine
    push: bool = False                 # to the recipe's registry
    docker_url: str | None = None
    insecure: bool | None = None


@dataclass
class _Step:
    inputs: planning.LayerInputs
    build: Callable[[], LayerResult | tuple[LayerResult, ...]]
    cached: bool | None = None         # known already when the layer was obtained before planning
    seconds: float = 0.0


def bake(recipe_path: str | Path, store: LayoutStore, options: BakeOptions = BakeOptions(),
         progress: Progress | None = None) -> BakeResult:
    engine = _Engine(options.docker_url)
    try:
        return _bake(recipe_path, store, options, progress, engine)
    finally:
        engine.close()


class _Engine:
    """The bake's one connection to the Docker engine, made when first needed: over ssh:// each
    connection costs a handshake, and a bake may need the engine three times (check, build a
    Dockerfile base, load)."""

    def __init__(self, url: str | None):
        self.url = url
        self._client = None

    def client(self):
        if self._client is None:
            from imagebuild.stores.engine import connect

            self._client = connect(self.url)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _bake(recipe_path: str | Path, store: LayoutStore, options: BakeOptions, progress: Progress | None,
          engine: _Engine) -> BakeResult:
    progress = progress or Progress.quiet()
    recipe_path = Path(recipe_path)
    # One look at git serves both the recipe's `git.*` variables and the bake.
    facts = git_facts(recipe_path if recipe_path.is_dir() else recipe_path.parent)
    recipe = load_recipe(recipe_path, {"git": facts.as_context()})
    facts = require_git(recipe.root, facts)
    toplevel = Path(facts.toplevel)
    lock_problem, lock = _lock_problem(recipe, toplevel, facts.commit)
    if lock_problem is not None and not options.allow_dirty:
        raise lock_problem
    # A lock resolved (or taken) from outside the commit makes the image as unrebuildable as a dirty file.
    dirty = facts.dirty or lock_problem is not None
    if dirty and not options.allow_dirty:
        app_tree.refuse_dirty(toplevel)
    version = facts.version + ("-dirty" if dirty else "")
    commit = planning.Commit(revision=facts.commit, time=facts.commit_time, version=version, dirty=dirty,
                             source=remote_url(toplevel))
    local_ref = f"{recipe.name}:{tag_for(version)}"
    # Version tags share the image's tag namespace with environments, records and disks: refuse a clash first.
    refuse_version_tag(tag_for(version), recipe.environment_names())
    push_target = _check_outputs(recipe, options, local_ref, engine)
    store.ensure()  # a --store that cannot be a store is refused here, not after the layers are built

    tree = app_tree.SourceTree(toplevel, facts.commit, working_tree=dirty)
    with tempfile.TemporaryDirectory(prefix="imagebuild-bake-") as scratch, tree:
        warnings = app_layer.credential_warnings(recipe, *app_layer.app_files(recipe, tree))
        for line in warnings:
            progress.note(f"warning: {line}")
        steps, base_env = _steps(recipe, store, tree, commit, Path(scratch), progress,
                                 update_lock=lock_problem is not None, engine=engine, lock=lock)
        env = {**base_env, "IMAGEBUILD_VERSION": version, "IMAGEBUILD_REVISION": commit.revision}
        plan = planning.make_plan(recipe, commit, [step.inputs for step in steps], server_command(recipe), env=env)
        outcomes = _build(plan, steps, store, progress)
    image = _image(recipe, plan, outcomes)
    descriptor = store.write_image(image, [local_ref])
    outputs = _deliver(store, descriptor.digest, local_ref, recipe, options, push_target, progress, engine)
    reference = outputs[-1] if options.push and outputs else local_ref
    return BakeResult(image=reference, digest=str(descriptor.digest), version=version,
                      layers=tuple(outcomes), dirty=dirty, local_ref=local_ref, outputs=tuple(outputs),
                      warnings=tuple(warnings))


def _check_outputs(recipe: Recipe, options: BakeOptions, local_ref: str, engine: _Engine) -> Reference | None:
    """Refuse bad destinations, a missing Docker engine and an unreachable registry before any work is done."""
    for destination in options.outputs:
        check_destination(destination)
    if options.load:
        engine.client()
    if not options.push:
        return None
    if not recipe.registry:
        raise RecipeError("--push needs a registry in the recipe", file=str(recipe.source), key="registry",
                          hint="add e.g. registry: localhost:5000/acme")
    from imagebuild.stores.registry import open_client

    target = Reference.parse(f"{recipe.registry}/{local_ref}")
    with open_client(target.registry, insecure=options.insecure) as client:
        client.ping()
    return target


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
    if not debian.lock_fits(lock, recipe.os, recipe.runtime):
        assert recipe.source is not None
        return UserError(f"{lock_path} is out of date with {recipe.source.name}'s os/runtime sections",
                         hint=_RELOCK), lock
    return None, lock


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


def _steps(recipe: Recipe, store: LayoutStore, tree: app_tree.SourceTree, commit: planning.Commit,
           scratch: Path, progress: Progress, update_lock: bool, engine: _Engine,
           lock: DebianLock | None = None) -> tuple[list[_Step], dict[str, str]]:
    """Each layer's inputs (for the plan) and how to build it, and the base image's environment.

    `update_lock`: the committed lock does not fit, and --allow-dirty lets it be resolved and written.
    `engine`: the Docker engine that builds an `os.dockerfile` base.
    `lock`: imagebuild.lock as already read (it is read when needed otherwise).
    """
    recipe_epoch = _recipe_epoch(recipe, tree, commit.time)
    steps: list[_Step] = []

    def read(path: Path) -> bytes | None:
        try:
            return tree.read(tree.repo_path(path))
        except ValueError:
            return None

    pip = None
    requirements = libraries_layer.requirements_bytes(recipe, read)
    if requirements is not None or recipe.server.packages:
        pip = libraries_layer.pip_version()
    if requirements is not None:
        # Dated by what the libraries come from, so unrelated recipe edits leave the layer cached.
        paths = [recipe.root / recipe.libraries.requirements] if recipe.libraries.requirements else []
        if recipe.libraries.packages:
            paths.append(recipe.source)
        epoch = _epoch_of(tree, paths, commit.time)
        entries = functools.partial(libraries_layer.install_entries, requirements, scratch / "libraries",
                                    libraries_layer.site_packages(recipe), recipe, "libraries")
        steps.append(_Step(libraries_layer.inputs(recipe, requirements, epoch, pip),
                           functools.partial(_store_entries, store, entries, epoch)))

    server_files = server_layer.rendered_files(recipe)
    base: dict[str, LayerResult] = {}

    def server_entries() -> list[Entry]:
        accounts = debian.os_accounts(store, base["os"]) if "os" in base else None
        return server_layer.build_entries(recipe, server_files, scratch / "server", accounts)

    steps.append(_Step(server_layer.inputs(recipe, server_files, recipe_epoch, pip),
                       functools.partial(_store_entries, store, server_entries, recipe_epoch)))

    app_prefix, app_files = app_layer.app_files(recipe, tree)
    entries = functools.partial(app_layer.entries, recipe, tree, app_prefix, app_files)
    steps.append(_Step(app_layer.inputs(recipe, app_prefix, app_files, commit.time),
                       functools.partial(_store_entries, store, entries, commit.time)))

    config_files = config_layer.files(recipe)
    entries = functools.partial(config_layer.build_entries, config_files)
    steps.append(_Step(config_layer.inputs(config_files, recipe_epoch),
                       functools.partial(_store_entries, store, entries, recipe_epoch)))
    # Last: the slowest inputs to obtain, after every cheaper check of the user's input has passed.
    if recipe.os.dockerfile is not None:
        image_steps, base_env = _dockerfile_base_steps(recipe, store, tree, scratch, progress, update_lock,
                                                       engine, lock)
        return image_steps + steps, base_env
    if recipe.os.image is not None:
        image_steps, base_env = _base_image_steps(recipe, store)
        return image_steps + steps, base_env
    debian_steps = _debian_steps(recipe, store, progress, update_lock, lock)
    base["os"] = debian_steps[0].build()
    return debian_steps + steps, {}


def _base_image_steps(recipe: Recipe, store: LayoutStore, ref: str | None = None,
                      cached: bool = True) -> tuple[list[_Step], dict[str, str]]:
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
    step = _Step(planning.LayerInputs("os", {"image": str(base.manifest_digest)}, 0),
                 functools.partial(_given, layers), cached=cached)
    return [step], env


def _dockerfile_base_steps(recipe: Recipe, store: LayoutStore, tree: app_tree.SourceTree, scratch: Path,
                           progress: Progress, update_lock: bool, engine: _Engine,
                           lock: DebianLock | None = None) -> tuple[list[_Step], dict[str, str]]:
    """`os.dockerfile`: a base built by the Docker engine FROM os.image, or FROM the Debian os and
    runtime layers, then used by digest like any os.image. The engine is asked only when the
    rendered Dockerfile or its context changed."""
    from imagebuild.build.layers import dockerfile_base

    from_ref = recipe.os.image
    if from_ref is None:
        debian_layers = [step.build() for step in _debian_steps(recipe, store, progress, update_lock, lock)]
        from_ref = _store_debian_base(recipe, store, debian_layers)
    prepared = dockerfile_base.prepare(recipe, tree, dockerfile_base.engine_tag_for(from_ref), scratch)
    ref = dockerfile_base.cached(store, prepared)
    built = ref is None
    if ref is None:
        ref = dockerfile_base.build(store, prepared, engine.client(), from_ref, progress)
    return _base_image_steps(recipe, store, ref, cached=not built)


def _store_debian_base(recipe: Recipe, store: LayoutStore, results: list) -> str:
    """The Debian os and runtime layers as an image in the store, for a Dockerfile to start FROM."""
    image = Image(created=rfc3339(0), platform=Platform("linux", recipe.os.architecture),
                  runtime={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})
    for result in results:
        image = image.with_layer(result.as_layer(), created_by="imagebuild bake: Debian layer")
    descriptor = image.manifest_descriptor()
    store.write_image(image, [f"{recipe.name}-debian:{descriptor.digest.hex[:20]}"])
    return f"{recipe.name}-debian@{descriptor.digest}"


def _store_entries(store: LayoutStore, entries: Callable[[], Iterable[Entry]], epoch: int) -> LayerResult:
    return store_layer(store, entries(), epoch)


def _debian_steps(recipe: Recipe, store: LayoutStore, progress: Progress, update_lock: bool,
                  lock: DebianLock | None = None) -> list[_Step]:
    """The os and runtime layers, pinned by imagebuild.lock (with `update_lock`, written when missing
    or outgrown; otherwise the committed lock, already checked to fit). `lock`: that lock, when the
    bake has read it already.

    They are built (or found cached) right away: their cache keys come from
    the lock, which may first have to be resolved.
    """
    lock_path = lock_path_for(recipe.source)
    before = lock if lock is not None else read_lock(lock_path)
    if before is None or not debian.lock_fits(before, recipe.os, recipe.runtime):
        # Unknown packages and unshipped runtime versions are the user's to fix: say so before any work.
        debian.resolve_packages(recipe.os, recipe.runtime)

    def building(resolving: bool) -> None:
        progress.note("resolving and building the Debian layers ..." if resolving
                      else "building the Debian layers ...")

    started = time.monotonic()
    built = debian.build_debian_layers(store, recipe.os, recipe.runtime, lock_path, update_lock=update_lock,
                                       lock=before, on_build=building)
    seconds = time.monotonic() - started
    if before is None or before.to_dict() != built.lock.to_dict():
        progress.note(f"wrote {lock_path}; commit it so every bake of this app uses the same packages "
                      "(until then images are -dirty)")
    epoch = built.lock.source_date_epoch
    layers = [("os", built.os_key, built.os, built.os_cached)]
    if built.runtime is not None:
        layers.append(("runtime", built.runtime_key, built.runtime, built.runtime_cached))
    return [_Step(planning.LayerInputs(name, {"key": key}, epoch), functools.partial(_given, result),
                  cached=cached, seconds=0.0 if cached else seconds)
            for name, key, result, cached in layers]


def _given(result: LayerResult | tuple[LayerResult, ...]) -> LayerResult | tuple[LayerResult, ...]:
    return result


def _build(plan: planning.Plan, steps: list[_Step], store: LayoutStore, progress: Progress) -> list[LayerOutcome]:
    cache = LayerCache(store)
    by_name = {step.inputs.name: step for step in steps}
    outcomes = []
    progress.begin(len(plan.layers))
    try:
        for planned in plan.layers:
            step = by_name[planned.name]
            started = time.monotonic()
            if step.cached is not None:
                # Obtained before planning (Debian layers, a base image): cached under their own keys, if at all.
                found, cached = step.build(), step.cached
            else:
                found = cache.get(planned.key)
                cached = found is not None
                if found is None:
                    progress.layer_started(planned.name)
                    found = step.build()
                    cache.put(planned.key, found)
            # A base image (os.image) is several layers under one plan entry.
            results = found if isinstance(found, tuple) else (found,)
            seconds = time.monotonic() - started + step.seconds
            for result in results:
                progress.layer_done(planned.name, cached, result.size, seconds)
                outcomes.append(LayerOutcome(planned.name, str(result.digest), str(result.diff_id), result.size,
                                             cached, seconds, result.media_type))
    finally:
        progress.end()
    return outcomes


def _image(recipe: Recipe, plan: planning.Plan, outcomes: list[LayerOutcome]) -> Image:
    image = Image(created=plan.created, platform=Platform("linux", recipe.os.architecture),
                  runtime=plan.runtime, annotations=plan.annotations)
    for outcome in outcomes:
        layer = Layer(Descriptor(outcome.media_type, outcome.digest, outcome.size), outcome.diff_id)
        image = image.with_layer(layer, created_by=f"imagebuild bake: {outcome.name} layer")
    return image


def _deliver(store: LayoutStore, digest: str, local_ref: str, recipe: Recipe, options: BakeOptions,
             push_target: Reference | None, progress: Progress, engine: _Engine) -> list[str]:
    done: list[str] = []
    for destination in options.outputs:
        export_image(store, local_ref, destination)
        progress.note(f"wrote {destination}")
        done.append(destination)
    if options.load:
        from imagebuild.progress import human_size
        from imagebuild.stores.engine import load_image

        report = load_image(store, digest, [local_ref], client=engine.client())
        sent = (f"sent {report.layers_sent} of {report.layers} layers, {human_size(report.bytes_sent)}"
                if report.layers_sent else "the engine had the image already")
        progress.note(f"loaded into Docker as {', '.join(report.tags) or local_ref} ({sent})")
        done.append("docker:" + local_ref)
    if push_target is not None:
        from imagebuild.stores.registry import push_image

        result = push_image(store, local_ref, push_target, insecure=options.insecure,
                            environments=recipe.environment_names())
        progress.note(f"pushed {result.reference}")
        done.append(f"{push_target.name}:{push_target.tag}")
    return done
