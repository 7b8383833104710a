"""The libraries layer: the app's locked Python closure, installed for the image, not the host.

`imagebuild lock` asks pip's resolver (`pip install --dry-run --report`) for the
full closure of the requirements on the image's Python and platform, and
records every distribution's version, wheel and sha256 in imagebuild.lock.
Bake installs exactly that closure: `--no-deps --require-hashes` from
`name==version --hash=sha256:...` lines, so a new release of a transitive
dependency changes nothing until the lock is refreshed.

pip installs wheels for the image's Python version and platform into a
scratch directory (`--target`, `--platform`, `--only-binary=:all:`), and the
directory becomes the layer under /usr/local/lib/pythonX.Y/dist-packages,
which Debian's Python has on sys.path. Console scripts are left out: their shebang
names the host's interpreter, so servers are started with `python3 -m`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from imagebuild.build.cache import store_layer
from imagebuild.errors import BuildError, UserError
from imagebuild.oci.layer import DIR, FILE, Entry, LayerResult, entries_from_directory
from imagebuild.plan import LayerInputs
from imagebuild.recipe.model import Recipe
from imagebuild.sources.lockfile import DebianLock, PythonLock, PythonPackage
from imagebuild.stores.layout import LayoutStore
from imagebuild.build.layers.lock_freshness import (pip_platforms, python_lock_fits,  # noqa: F401
                                                   python_lock_inputs, requirements_bytes)

def site_packages(recipe: Recipe) -> str:
    return f"usr/local/lib/python{recipe.runtime.python}/dist-packages"


def _pip_command(target: Path, python: str, platforms: Sequence[str], requirements_file: str) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-input", "--target", str(target), "--python-version", python,
               "--implementation", "cp", "--only-binary=:all:", "--no-compile", "--no-warn-script-location"]
    for platform in platforms:
        command += ["--platform", platform]
    return command + ["-r", requirements_file]


def pip_install(requirements: bytes, target: Path, python: str, platforms: Sequence[str],
                what: str, no_deps: bool = False) -> None:
    """Install pinned requirements for another interpreter and platform into `target`.

    `no_deps`: `requirements` is a locked closure, installed as it is (nothing resolved)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", prefix="requirements-") as handle:
        handle.write(requirements)
        handle.flush()
        command = _pip_command(target, python, platforms, handle.name)
        if no_deps:
            command.append("--no-deps")
        if b"--hash=" in requirements:
            command.append("--require-hashes")
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    _check_pip(done, what, python, platforms)


def resolve_closure(requirements: bytes, python: str, platforms: Sequence[str], what: str) -> list[PythonPackage]:
    """Every distribution pip would install for `requirements` on the image's Python and platform,
    with its wheel and sha256: pip's own resolver, run with `--dry-run --report`."""
    with tempfile.TemporaryDirectory(prefix="imagebuild-pylock-") as work:
        requirements_file, report = Path(work) / "requirements.txt", Path(work) / "report.json"
        requirements_file.write_bytes(requirements)
        command = _pip_command(Path(work) / "target", python, platforms, str(requirements_file))
        command += ["--dry-run", "--ignore-installed", "--report", str(report)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        _check_pip(done, what, python, platforms, mismatch_hint="fix that --hash in the requirements")
        try:
            installs = json.loads(report.read_text("utf-8"))["install"]
        except (OSError, ValueError, KeyError) as exc:
            raise BuildError(f"{what}: pip wrote no usable installation report ({exc})",
                             hint="use pip 23 or newer") from None
    packages = []
    for item in installs:
        info = item.get("download_info") or {}
        sha256 = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256")
        url = str(info.get("url", ""))
        if not sha256:
            raise BuildError(f"{what}: pip reported no sha256 for {item['metadata']['name']}",
                             hint="use pip 23 or newer")
        packages.append(PythonPackage(
            name=_normalized(item["metadata"]["name"]), version=item["metadata"]["version"],
            wheel=url.rsplit("/", 1)[-1], sha256=sha256,
            # A local mirror's file:// address means nothing on another machine.
            url=url if url.startswith(("https://", "http://")) else ""))
    return packages


def _normalized(name: str) -> str:
    """A distribution's name as PEP 503 spells it, so the lock's keys sort and compare stably."""
    return "-".join(part for part in name.lower().replace("_", "-").replace(".", "-").split("-") if part)


def _mismatch(stderr: str) -> str:
    """The first distribution pip names under its hash-mismatch message (its line and the next)."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        if "Expected sha256" in line and index > 0:
            return lines[index - 1].strip().rstrip(":")
    return "see pip's output"


_LOCKED_HINT = ("restore imagebuild.lock from git; if the index really replaced the wheel, "
                "run `imagebuild lock --upgrade` and review the diff")


def _check_pip(done: subprocess.CompletedProcess, what: str, python: str, platforms: Sequence[str],
               mismatch_hint: str = _LOCKED_HINT) -> None:
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR:")]
        first = errors[0][len("ERROR:"):].strip() if errors else (done.stderr.strip().splitlines() or ["?"])[-1]
        if "THESE PACKAGES DO NOT MATCH THE HASHES" in done.stderr:
            raise UserError(f"{what}: a wheel does not match its pinned sha256 ({_mismatch(done.stderr)})",
                            hint=mismatch_hint)
        if any(marker in done.stderr for marker in ("No matching distribution", "Could not find a version",
                                                    "Hashes are required", "THESE PACKAGES DO NOT MATCH",
                                                    "Invalid requirement", "ResolutionImpossible",
                                                    "conflicting dependencies")):
            raise UserError(f"{what}: pip could not install the requirements: {first}",
                            hint=f"check the names, versions and hashes exist as wheels for "
                                 f"Python {python} on {platforms[-1]}")
        raise BuildError(f"{what}: pip install failed: {first}")


def _drop_host_scripts(target: Path) -> None:
    """Remove console scripts (host shebangs) and their lines in RECORD, so bytes match on any host."""
    bin_dir = target / "bin"
    if bin_dir.is_dir():
        for path in sorted(bin_dir.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        bin_dir.rmdir()
    for record in target.glob("*.dist-info/RECORD"):
        lines = record.read_text("utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith("../")]
        if kept != lines:
            record.write_text("".join(kept), "utf-8")


def normalized_entries(root: Path, prefix: str) -> Iterator[Entry]:
    """A directory's files with modes that do not depend on the host's umask."""
    for entry in entries_from_directory(str(root), prefix):
        if entry.kind == DIR:
            yield Entry(entry.path, DIR, 0o755)
        elif entry.kind == FILE:
            mode = 0o755 if entry.mode & 0o111 else 0o644
            yield Entry(entry.path, FILE, mode, entry.mtime, entry.size, opener=entry.opener)
        else:
            yield entry


def install_entries(requirements: bytes, scratch: Path, prefix: str, recipe: Recipe, what: str,
                    no_deps: bool = False) -> list[Entry]:
    """pip-install into `scratch` and return the layer entries rooted at `prefix`."""
    pip_install(requirements, scratch, recipe.runtime.python or "", pip_platforms(recipe), what, no_deps)
    _drop_host_scripts(scratch)
    return list(normalized_entries(scratch, prefix))


def pip_version() -> str:
    """The version of the pip `sys.executable -m pip` runs: read from its metadata, not by running it."""
    found = _pip_version_beside_pip()
    if found is not None:
        return found
    import importlib.metadata

    try:
        return importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError("pip is not available to install Python libraries",
                         hint=f"install pip for {sys.executable}") from None


def _pip_version_beside_pip() -> str | None:
    """The Version of the one pip-*.dist-info beside the pip package the interpreter would import, which
    is what importlib.metadata finds there, without importing importlib.metadata (and email, zipfile:
    ~25 ms of a warm bake); None for any other layout, which importlib.metadata then reads."""
    import importlib.util

    spec = importlib.util.find_spec("pip")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(list(spec.submodule_search_locations)[0]).parent
    if str(directory) not in sys.path:
        return None      # e.g. a path .pth files or a meta path finder add: leave it to importlib.metadata
    infos = list(directory.glob("pip-*.dist-info"))
    if len(infos) != 1:
        return None
    try:
        header = (infos[0] / "METADATA").read_text("utf-8").split("\n\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    versions = [line[len("Version:"):].strip() for line in header.splitlines() if line.startswith("Version:")]
    return versions[0] if len(versions) == 1 and versions[0] else None


def lock_python(recipe: Recipe, requirements: bytes) -> PythonLock:
    """Resolve the requirements' full closure for the image: what `imagebuild lock` records."""
    packages = resolve_closure(requirements, recipe.runtime.python or "", pip_platforms(recipe), "libraries")
    return PythonLock(inputs=python_lock_inputs(recipe, requirements), packages=tuple(packages))


def locked_closure(recipe: Recipe, requirements: bytes, lock: DebianLock | None, lock_name: str) -> PythonLock:
    """The closure bake installs: the lock's, refused when the requirements changed since it was made."""
    if lock is None or lock.python is None:
        raise UserError(f"{lock_name} has no Python closure for the libraries", hint="run `imagebuild lock` and commit it")
    if not python_lock_fits(lock, recipe, requirements):
        locked = dict(lock.python.inputs)
        wanted = json.loads(json.dumps(python_lock_inputs(recipe, requirements)))
        changed = "the requirements" if locked.get("requirements") != wanted["requirements"] else \
            "runtime.python or os.debian/os.architecture (the wheel platform)"
        raise UserError(f"{changed} changed since {lock_name} was made", hint="run `imagebuild lock` and commit it")
    return lock.python


def inputs(recipe: Recipe, closure: PythonLock, epoch: int, pip: str) -> LayerInputs:
    """The cache key is the locked closure itself (names, versions, hashes), not the requirements file."""
    return LayerInputs("libraries", {
        "closure": [package.requirement() for package in closure.packages],
        "python": recipe.runtime.python, "platforms": pip_platforms(recipe),
        "prefix": site_packages(recipe), "pip": pip}, epoch)


class LibrariesLayer:
    """The libraries layer's builder: pip installs exactly the locked closure into `scratch`."""

    name = "libraries"
    cached = None
    seconds = 0.0

    def __init__(self, recipe: Recipe, closure: PythonLock, epoch: int, pip: str, scratch: Path):
        self.recipe, self.closure, self.epoch, self.scratch = recipe, closure, epoch, scratch
        self.inputs = inputs(recipe, closure, epoch, pip)

    def build(self, store: LayoutStore) -> LayerResult:
        entries = install_entries(self.closure.requirements(), self.scratch, site_packages(self.recipe),
                                  self.recipe, "libraries", no_deps=True)
        return store_layer(store, entries, self.epoch)
