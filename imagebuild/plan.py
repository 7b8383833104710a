"""Recipe + commit facts → the ordered layer plan and the image settings.

Pure: no I/O. Everything that needs the disk, git or the network (hashing the
app's files, reading the lock, rendering templates) is gathered beforehand by
the layer modules into `LayerInputs`; here those inputs are only ordered and
chained into cache keys, and the image's runtime settings are derived.

A layer's cache key is the digest of its own inputs plus its parent's key, so
a change low in the stack invalidates everything above it, and a change high
in the stack (a typical app commit) leaves everything below it cached. The
config layer's parent is the layer under the app: its files come from the
recipe alone, so an app-only commit leaves it cached too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from imagebuild.contract import ANNOTATION_DIRTY, ANNOTATION_ENV_VARIABLE, ANNOTATION_ENVIRONMENTS, LAUNCHER_PATH
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import (ANNOTATION_CREATED, ANNOTATION_REVISION, ANNOTATION_SOURCE,
                                  ANNOTATION_TITLE, ANNOTATION_VERSION, rfc3339)
from imagebuild.recipe.model import Recipe

# Bottom to top, ordered by how rarely each changes. A JVM app built into layers (recipe `java:`)
# has snapshots (its -SNAPSHOT dependencies), resources and classes; the others have none.
LAYER_ORDER = ("os", "runtime", "libraries", "snapshots", "server", "resources", "classes", "app", "config")

# Layers whose keys do not chain through a lower layer, because their bytes cannot depend on it:
# a commit that changes one class leaves the app and config layers cached too.
KEY_SKIPS = {"app": frozenset({"resources", "classes"}), "config": frozenset({"app", "resources", "classes"})}

# Bumped whenever a builder's output for the same inputs changes, so old cache entries stop matching.
PLAN_FORMAT = 2

NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class LayerInputs:
    """What one layer is built from, as plain JSON-able values, and its file timestamp."""

    name: str
    inputs: Mapping[str, Any]
    source_date_epoch: int


@dataclass(frozen=True)
class PlannedLayer:
    name: str
    key: str                    # sha256 hex of (format, name, inputs, parent key)
    parent_key: str | None
    inputs: Mapping[str, Any]
    source_date_epoch: int


@dataclass(frozen=True)
class Commit:
    """The git facts an image is named and dated by."""

    revision: str               # full commit hash
    time: int                   # commit time, seconds since the epoch
    version: str                # short hash, or `git describe` when tagged; `-dirty` appended when dirty
    dirty: bool = False
    source: str | None = None   # where the code lives (remote URL without userinfo, or path)


@dataclass(frozen=True)
class Plan:
    layers: tuple[PlannedLayer, ...]
    commit: Commit
    runtime: Mapping[str, Any] = field(default_factory=dict)      # the image config's `config`
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def created(self) -> str:
        return rfc3339(self.commit.time)

    def layer(self, name: str) -> PlannedLayer | None:
        return next((layer for layer in self.layers if layer.name == name), None)


def layer_key(name: str, inputs: Mapping[str, Any], parent_key: str | None) -> str:
    document = {"format": PLAN_FORMAT, "layer": name, "inputs": inputs, "parent": parent_key}
    return hashlib.sha256(canonical_json(document)).hexdigest()


def chain(layer_inputs: Sequence[LayerInputs]) -> tuple[PlannedLayer, ...]:
    """Order the layers and give each its cache key; absent layers (None) are skipped."""
    by_name = {item.name: item for item in layer_inputs}
    unknown = set(by_name) - set(LAYER_ORDER)
    if unknown:
        raise ValueError(f"unknown layer names {sorted(unknown)}")
    planned: list[PlannedLayer] = []
    for name in LAYER_ORDER:
        item = by_name.get(name)
        if item is None:
            continue
        skips = KEY_SKIPS.get(name, frozenset())
        parent = next((layer.key for layer in reversed(planned) if layer.name not in skips), None)
        # The epoch is an input too: it is written into every entry's mtime.
        inputs = dict(item.inputs)
        inputs["source_date_epoch"] = item.source_date_epoch
        key = layer_key(name, inputs, parent)
        planned.append(PlannedLayer(name, key, parent, inputs, item.source_date_epoch))
    return tuple(planned)


def healthcheck(recipe: Recipe) -> dict[str, Any]:
    """Docker's Healthcheck: bash's /dev/tcp, so the image needs no curl or wget.

    It probes $PORT, as the server does, so a port moved at start stays checked.
    """
    health = recipe.health
    port = recipe.server.port
    path = health.path if health.path.startswith("/") else "/" + health.path
    probe = (f"exec 3<>/dev/tcp/127.0.0.1/${{PORT:-{port}}} && "
             f"printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
             "head -1 <&3 | grep -q ' 200 '")
    return {
        "Test": ["CMD", "bash", "-c", probe],
        "Interval": health.interval * NANOSECONDS,
        "Timeout": health.timeout * NANOSECONDS,
        "Retries": health.retries,
        "StartPeriod": health.start_period * NANOSECONDS,
    }


def image_settings(recipe: Recipe, commit: Commit, server_argv: Sequence[str],
                   env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The image config's runtime settings and the manifest annotations."""
    annotations = {
        ANNOTATION_CREATED: rfc3339(commit.time),
        ANNOTATION_REVISION: commit.revision,
        ANNOTATION_VERSION: commit.version,
        ANNOTATION_TITLE: recipe.name,
        ANNOTATION_ENVIRONMENTS: ",".join(recipe.environment_names()),
        ANNOTATION_ENV_VARIABLE: recipe.detect.variable,
    }
    if commit.source:
        annotations[ANNOTATION_SOURCE] = commit.source
    if commit.dirty:
        annotations[ANNOTATION_DIRTY] = "true"
    base_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "PORT": str(recipe.server.port)}
    if recipe.runtime.python:
        # Output straight to the container log; no .pyc writes into the read-only app tree.
        base_env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    if recipe.runtime.node:
        # Libraries (Express and others) pick their production behaviour from it.
        base_env["NODE_ENV"] = "production"
    base_env.update(env or {})
    runtime = {
        "User": recipe.app.user,
        "WorkingDir": recipe.app.dest,
        "Env": [f"{key}={value}" for key, value in sorted(base_env.items())],
        "Entrypoint": [LAUNCHER_PATH],
        "Cmd": list(server_argv),
        "ExposedPorts": {f"{recipe.server.port}/tcp": {}},
        "Labels": dict(annotations),
        "Healthcheck": healthcheck(recipe),
    }
    return runtime, annotations


def make_plan(recipe: Recipe, commit: Commit, layer_inputs: Sequence[LayerInputs],
              server_argv: Sequence[str], env: Mapping[str, str] | None = None) -> Plan:
    runtime, annotations = image_settings(recipe, commit, server_argv, env)
    return Plan(layers=chain(layer_inputs), commit=commit, runtime=runtime, annotations=annotations)
