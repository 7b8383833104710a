"""The server layer: the app server's pinned packages, its rendered config, and the launcher.

Beside the launcher it carries what the launcher and the app need at start:
/etc/imagebuild/server.sh (how many workers), the stdlib-only
`imagebuild_runtime` module for Python apps (in the interpreter's
dist-packages, so `import imagebuild_runtime` works with no path set up), and
/run/imagebuild owned by the app's user, where the launcher writes the
environment's config.json and features.json.

Server packages go to their own directory, put on sys.path by a .pth file
that Python processes after dist-packages, so the app's own pins always win
over a server dependency of the same name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

from imagebuild.build.cache import store_layer
from imagebuild.build.layers.debian import os_accounts
from imagebuild.build.layers.libraries import install_entries, pip_platforms, site_packages
from imagebuild.contract import RUN_DIR, RUNTIME_MODULE
from imagebuild.launcher.assets import launcher_script, runtime_module
from imagebuild.build.launcher_files import server_script
from imagebuild.oci.layer import DIR, Entry, LayerResult
from imagebuild.contract import CONFIG_DIR, LAUNCHER_PATH
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.templates import render_server_files
from imagebuild.stores.layout import LayoutStore

SERVER_PACKAGES = "usr/local/lib/imagebuild/server-packages"
PTH_NAME = "zz-imagebuild-server.pth"


ServerFiles = Mapping[str, tuple[bytes, int]]


def rendered_files(recipe: Recipe) -> ServerFiles:
    """The stock templates rendered for this recipe, the launcher's server.sh and, for Python
    images, the runtime helper: image path (no leading /) → (bytes, mode)."""
    files = {path.lstrip("/"): content for path, content in render_server_files(recipe).items()}
    nginx = recipe.server.kind == "nginx"
    # the stock nginx.conf marks its listen lines and its error_log line (baked at warn) for the launcher
    port_config, level = (f"{CONFIG_DIR}/nginx.conf", "warn") if nginx else (None, None)
    files[f"{CONFIG_DIR.lstrip('/')}/server.sh"] = (
        server_script(recipe.server.kind, recipe.server.workers, recipe.server.port, port_config, level), 0o644)
    if recipe.runtime.python:
        files[f"{site_packages(recipe)}/{RUNTIME_MODULE}.py"] = (runtime_module(), 0o644)
    return dict(sorted(files.items()))


def _digest(files: ServerFiles) -> str:
    hasher = hashlib.sha256()
    for path, (content, mode) in sorted(files.items()):
        hasher.update(f"{path}\0{mode:o}\0".encode() + hashlib.sha256(content).digest())
    return "sha256:" + hasher.hexdigest()


def inputs(recipe: Recipe, files: ServerFiles, epoch: int, pip: str | None) -> LayerInputs:
    values: dict = {"files": _digest(files), "launcher": "sha256:" + hashlib.sha256(launcher_script()).hexdigest(),
                    "packages": list(recipe.server.packages), "user": recipe.app.user}
    if recipe.server.packages:
        values.update({"python": recipe.runtime.python, "platforms": pip_platforms(recipe), "pip": pip})
    return LayerInputs("server", values, epoch)


def account_entries(recipe: Recipe, passwd: str, group: str) -> list[Entry]:
    """/etc/passwd and /etc/group with an `app` entry for a numeric app.user the OS does not know.

    Some programs look their user up (Java's user.home, Python's getpass); an
    unknown uid makes them guess or fail.
    """
    uid, _, gid = recipe.app.user.partition(":")
    gid = gid or uid
    if not (uid.isdigit() and gid.isdigit()):
        return []
    entries = []
    if not any(line.split(":")[2:3] == [uid] for line in passwd.splitlines()):
        line = f"app:x:{uid}:{gid}:app:{recipe.app.dest}:/usr/sbin/nologin\n"
        entries.append(Entry.file("etc/passwd", (passwd.rstrip("\n") + "\n" + line).encode()))
    if not any(line.split(":")[2:3] == [gid] for line in group.splitlines()):
        entries.append(Entry.file("etc/group", (group.rstrip("\n") + f"\napp:x:{gid}:\n").encode()))
    return entries


def run_dir_entry(recipe: Recipe) -> Entry:
    """/run/imagebuild, writable by the app's user only: the launcher runs as that user."""
    uid, _, gid = recipe.app.user.partition(":")
    return Entry(RUN_DIR.lstrip("/"), DIR, 0o755, uid=int(uid), gid=int(gid or uid))


def build_entries(recipe: Recipe, files: ServerFiles, scratch: Path,
                  accounts: tuple[str, str] | None = None) -> list[Entry]:
    """The layer's entries; `accounts` is the OS layer's (/etc/passwd, /etc/group)."""
    entries = [Entry.file(LAUNCHER_PATH.lstrip("/"), launcher_script(), mode=0o755), run_dir_entry(recipe)]
    if accounts is not None:
        entries += account_entries(recipe, *accounts)
    entries += [Entry.file(path, content, mode=mode) for path, (content, mode) in files.items()]
    if recipe.server.packages:
        requirements = ("\n".join(recipe.server.packages) + "\n").encode()
        entries += install_entries(requirements, scratch, SERVER_PACKAGES, recipe, "server.packages")
        entries.append(Entry.file(f"{site_packages(recipe)}/{PTH_NAME}", f"/{SERVER_PACKAGES}\n".encode()))
    return entries


class ServerLayer:
    """The server layer's builder, dated by the recipe. `os_layer`, when the bake has built a
    Debian os layer, gives the accounts the app's user is added to."""

    name = "server"
    cached = None
    seconds = 0.0

    def __init__(self, recipe: Recipe, epoch: int, pip: str | None, scratch: Path):
        self.recipe, self.epoch, self.scratch = recipe, epoch, scratch
        self.files = rendered_files(recipe)
        self.inputs = inputs(recipe, self.files, epoch, pip)
        self.os_layer: LayerResult | None = None

    def build(self, store: LayoutStore) -> LayerResult:
        accounts = os_accounts(store, self.os_layer) if self.os_layer is not None else None
        return store_layer(store, build_entries(self.recipe, self.files, self.scratch, accounts), self.epoch)
