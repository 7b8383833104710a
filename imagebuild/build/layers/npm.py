"""The libraries layer of a Node app: `npm ci --omit=dev` of the committed package-lock.json.

package-lock.json is the pin: npm ci installs exactly the versions it names
and checks every tarball against its `integrity` hash. The install runs on
the build host's npm into a scratch copy of package.json and the lock, for the
image's platform (npm's `os`/`cpu` settings pick the optional dependencies,
e.g. a native binary per platform), with install scripts off (a script could
write anything, differently on each run) and npm's cache and logs in the
scratch directory, so nothing of the host's ~/.npm is read or baked in. The
resulting node_modules lands at <app.dest>/node_modules, where Node's
`require` looks first; the layer writer fixes every mtime, owner and order.

The layer's cache key is the lock's content (its sha256), the platform and
the npm version: a commit that leaves package-lock.json alone reuses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Callable

from imagebuild.build.cache import store_layer
from imagebuild.build.layers.libraries import normalized_entries
from imagebuild.errors import BuildError, RecipeError, UserError
from imagebuild.oci.layer import DIR, Entry, LayerResult
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.sources.npm_lock import MAX_LOCK_BYTES, MAX_PACKAGE_JSON_BYTES, NpmLock, checked_npm_lock
from imagebuild.stores.layout import LayoutStore
from imagebuild.tool_versions import tool_version

# Node's names for the image's architecture (npm's `cpu` setting, package.json's "cpu" field).
NODE_CPU = {"amd64": "x64", "arm64": "arm64"}


def node_cpu(recipe: Recipe) -> str:
    cpu = NODE_CPU.get(recipe.os.architecture)
    if cpu is None:
        raise RecipeError(f"no npm platform for architecture {recipe.os.architecture!r}",
                          file=str(recipe.source) if recipe.source else None, key="os.architecture",
                          hint="use amd64 or arm64")
    return cpu


def npm_version() -> str:
    """The build host's npm version, part of the layer's cache key: asked once per npm binary
    (starting npm costs a few hundred milliseconds on every bake otherwise)."""
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm is not installed on this machine; it installs the Node libraries",
                         hint="install it (apt-get install npm)")

    def ask() -> str:
        done = subprocess.run([npm, "--version"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"`npm --version` failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return done.stdout.strip()

    return tool_version(npm, ask)


def lock_files(recipe: Recipe, read: Callable[[Path, int], bytes | None]) -> tuple[bytes, bytes, NpmLock]:
    """(package.json, package-lock.json, the checked lock) at the commit; `read` gives a file's bytes, past
    the limit given by one byte at most, so a file too large is refused without being held."""
    assert recipe.libraries.package_lock is not None
    lock_path = recipe.root / recipe.libraries.package_lock
    package_json = read(lock_path.parent / "package.json", MAX_PACKAGE_JSON_BYTES)
    package_lock = read(lock_path, MAX_LOCK_BYTES)
    return package_json or b"", package_lock or b"", checked_npm_lock(package_json, package_lock,
                                                                      recipe.libraries.package_lock)


def modules_prefix(recipe: Recipe) -> str:
    return str(PurePosixPath(recipe.app.dest.strip("/")) / "node_modules")


def inputs(recipe: Recipe, lock: NpmLock, epoch: int, npm: str) -> LayerInputs:
    return LayerInputs("libraries", {"packageLock": lock.digest, "os": "linux", "cpu": node_cpu(recipe),
                                     "prefix": modules_prefix(recipe), "npm": npm, "omit": "dev"}, epoch)


def npm_ci(package_json: bytes, package_lock: bytes, work: Path, cpu: str) -> Path:
    """Run `npm ci --omit=dev` in `work`; return its node_modules (made empty when nothing installs)."""
    project = work / "project"
    project.mkdir(parents=True)
    (project / "package.json").write_bytes(package_json)
    (project / "package-lock.json").write_bytes(package_lock)
    env = {key: value for key, value in os.environ.items() if not key.lower().startswith("npm_config_")}
    env.update({"npm_config_cache": str(work / "cache"), "npm_config_logs_dir": str(work / "logs"),
                "npm_config_userconfig": str(work / "npmrc"), "npm_config_update_notifier": "false",
                "npm_config_fund": "false", "npm_config_audit": "false", "npm_config_os": "linux",
                "npm_config_cpu": cpu, "HOME": str(work), "NODE_ENV": "production"})
    command = [shutil.which("npm") or "npm", "ci", "--omit=dev", "--ignore-scripts", "--no-bin-links",
               "--loglevel=error"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        # npm's first error line is its code ("npm error code EINTEGRITY"); the next one says what happened
        lines = [line.removeprefix("npm error").strip() for line in done.stderr.splitlines()
                 if line.startswith("npm error") and not line.startswith("npm error code")]
        first = next((line for line in lines if line), (done.stderr.strip().splitlines() or ["?"])[-1])[:300]
        if "EINTEGRITY" in done.stderr:
            raise UserError(f"libraries: a package does not match its integrity hash in package-lock.json ({first})",
                            hint="restore package-lock.json from git; if the registry really replaced the "
                                 "package, run `npm install` and review the diff")
        if "E404" in done.stderr or "ETARGET" in done.stderr:
            raise UserError(f"libraries: npm ci could not install package-lock.json: {first}",
                            hint="check the lock's versions and integrity hashes exist on the registry")
        raise BuildError(f"libraries: npm ci failed: {first}")
    modules = project / "node_modules"
    modules.mkdir(exist_ok=True)
    return modules


class NpmLayer:
    """The Node libraries layer's builder: npm ci of the committed lock, for the image's platform."""

    name = "libraries"
    cached = None
    seconds = 0.0

    def __init__(self, recipe: Recipe, files: tuple[bytes, bytes, NpmLock], epoch: int, npm: str,
                 scratch: Path):
        self.recipe, self.epoch, self.scratch = recipe, epoch, scratch
        self.package_json, self.package_lock, lock = files
        self.inputs = inputs(recipe, lock, epoch, npm)

    def build(self, store: LayoutStore) -> LayerResult:
        modules = npm_ci(self.package_json, self.package_lock, self.scratch, node_cpu(self.recipe))
        entries = [Entry(self.recipe.app.dest.strip("/"), DIR, 0o755), Entry(modules_prefix(self.recipe), DIR, 0o755)]
        entries += normalized_entries(modules, modules_prefix(self.recipe))
        return store_layer(store, entries, self.epoch)
