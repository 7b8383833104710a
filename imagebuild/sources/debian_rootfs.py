"""One Debian root file system as a tar file, built by mmdebstrap.

mmdebstrap runs as root (`--mode=root`) with SOURCE_DATE_EPOCH set, which
makes its tar output reproducible. Locked versions are pinned through an apt
preferences file placed by a setup hook and removed by a customize hook, so
the essential packages mmdebstrap picks itself are pinned as well as the ones
asked for. Its chatter goes to a log file; a failure is reported as the one
line that explains it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

from imagebuild.errors import BuildError, UserError
from imagebuild.sources.debian_index import DebianSource
from imagebuild.tool_versions import tool_version

PIN_FILE = "etc/apt/preferences.d/imagebuild-lock.pref"
# Sets up merged /usr with symlinks and the real usr-is-merged package, so the
# essential init-system-helpers does not pull in usrmerge and perl (~50 MB).
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")
# mmdebstrap takes the essential packages from the suite itself, not from -security or
# -updates; an upgrade afterwards brings them up to date (a no-op when pins hold them).
UPGRADE_HOOK = ('--customize-hook=APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get --yes '
                '-oDPkg::Chroot-Directory="$1" -oDpkg::Use-Pty=false dist-upgrade')

_UNKNOWN = re.compile(r"^E: Unable to locate package (\S+)")
_NO_VERSION = re.compile(r"^E: Version '([^']+)' for '([^']+)' was not found")


class UnknownPackageError(UserError):
    """A requested package does not exist in the suite."""


class LockedVersionMissingError(UserError):
    """The mirror no longer carries a version imagebuild.lock pins."""


def unknown_package(source: DebianSource, name: str, section: str = "os.packages") -> UnknownPackageError:
    return UnknownPackageError(f"Debian {source.suite} has no package {name!r} (check the name in {section})")


def locked_version_missing(name: str, version: str) -> LockedVersionMissingError:
    return LockedVersionMissingError(
        f"locked package {name}={version} is no longer on the mirror; "
        f"run `imagebuild lock --upgrade` to refresh imagebuild.lock")


@functools.lru_cache(maxsize=1)
def mmdebstrap_version() -> str:
    tool = shutil.which("mmdebstrap")
    if not tool:
        raise UserError("mmdebstrap is not installed; it builds the Debian OS layer",
                        hint="apt-get install mmdebstrap (or run `make setup`)")
    # Read on every bake (it is part of the Debian layers' cache keys): asked once per binary.
    return tool_version(tool, lambda: subprocess.run([tool, "--version"], capture_output=True,
                                                     text=True).stdout.strip() or "mmdebstrap")


def preferences(pins: Mapping[str, str]) -> str:
    """apt pins holding every package at its locked version (priority > 1000 also allows downgrades)."""
    return "".join(f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n\n"
                   for name, version in sorted(pins.items()))


# Debian architecture → the qemu-user binfmt_misc entry that runs its programs on another machine.
QEMU_BINFMT = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
_NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def require_emulation(architecture: str, machine: str | None = None, binfmt_dir: Path = BINFMT_DIR) -> None:
    """A foreign architecture's maintainer scripts run under qemu-user: refuse in one line, before
    mmdebstrap starts, when the kernel has no binfmt_misc entry for it."""
    machine = machine or os.uname().machine
    entry = QEMU_BINFMT.get(architecture)
    if _NATIVE.get(machine) == architecture or entry is None:
        return
    try:
        enabled = (binfmt_dir / entry).read_text().splitlines()[:1] == ["enabled"]
    except OSError:
        enabled = False
    if not enabled:
        raise UserError(f"building {architecture} packages on this {machine} machine needs qemu-user "
                        f"registered with binfmt_misc ({binfmt_dir / entry} is missing or disabled)",
                        hint=f"apt-get install qemu-user-static binfmt-support && update-binfmts --enable {entry}")


def build_rootfs(source: DebianSource, include: list[str], pins: Mapping[str, str] | None,
                 source_date_epoch: int, out_tar: Path, log_path: Path, lists: Path | None = None,
                 debs: Path | None = None) -> Path:
    """Run mmdebstrap into `out_tar`; raise a one-line error on failure (details in `log_path`).

    `lists`: apt lists of the same sources (AptIndex.lists_copy) to start from: apt's update in
    the tree then only asks the mirror what changed since, rather than downloading every index.
    `debs`: a directory of .deb files apt may take instead of downloading them (it checks their
    hashes); what the tree downloaded is added to it. None of them is in the tar: mmdebstrap
    empties apt's cache before writing it."""
    mmdebstrap_version()
    if os.geteuid() != 0:
        raise UserError("building the Debian OS layer needs root (mmdebstrap --mode=root)",
                        hint="run as root, or use `os: {image: REF@sha256:...}` instead")
    require_emulation(source.architecture)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagebuild-mmdebstrap-") as work:
        argv = ["mmdebstrap", "--mode=root", f"--variant={source.variant}",
                f"--architectures={source.architecture}", "--format=tar"]
        if lists is not None:
            # before the merged-usr hook, whose `apt-get update` is the tree's first
            argv.append(f'--setup-hook=mkdir -p "$1/var/lib/apt/lists" && '
                        f'cp -p {shlex.quote(str(lists))}/* "$1/var/lib/apt/lists/"')
        if debs is not None:
            # the essential packages' files stay until the end, so the customize hook sees them
            quoted = shlex.quote(str(debs))
            argv += ["--skip=essential/unlink",
                     f'--setup-hook=mkdir -p "$1/var/cache/apt/archives" && '
                     f'find {quoted} -name "*.deb" -exec cp -p -t "$1/var/cache/apt/archives/" {{}} +']
        if MERGED_USR_HOOK.is_dir():
            argv.append(f"--hook-dir={MERGED_USR_HOOK}")
        if include:
            argv.append("--include=" + ",".join(include))
        if source.variant not in ("extract", "custom"):
            argv.append(UPGRADE_HOOK)
        if pins:
            pref = Path(work) / "lock.pref"
            pref.write_text(preferences(pins))
            argv.append(f'--setup-hook=mkdir -p "$1/etc/apt/preferences.d" && cp {pref} "$1/{PIN_FILE}"')
            argv.append(f'--customize-hook=rm -f "$1/{PIN_FILE}"')
        if debs is not None:
            # the last customize hook: after the upgrade, whose downloads are kept too
            argv.append(f'--customize-hook=find "$1/var/cache/apt/archives" -maxdepth 1 -name "*.deb" '
                        f'-exec cp -p -n -t {shlex.quote(str(debs))} {{}} +')
        argv += [source.suite, str(out_tar), *source.sources()]
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(source_date_epoch), LC_ALL="C.UTF-8")
        env.pop("TMPDIR", None)
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("$ " + " ".join(argv) + "\n")
            log.flush()
            done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    if done.returncode != 0:
        out_tar.unlink(missing_ok=True)
        raise _failure(source, log_path, set(include), pins or {})
    return out_tar


def _failure(source: DebianSource, log_path: Path, requested: set[str], pins: Mapping[str, str]):
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines:
        match = _NO_VERSION.match(line)
        if match:
            version, name = match.groups()
            return locked_version_missing(name, version)
        match = _UNKNOWN.match(line)
        if match:
            name = match.group(1).split("=", 1)[0]
            section = "os.packages" if name in requested else "the runtime"
            return unknown_package(source, name, section)
    errors = [line for line in lines if line.startswith("E:") and "mmdebstrap failed" not in line]
    # apt's own explanation comes before mmdebstrap's summary of which command failed
    reason = next((line for line in lines if "unmet dependencies" in line or "held broken" in line), None)
    if reason and pins:
        return BuildError(f"the locked package versions no longer install together ({reason.strip()})",
                          hint=f"run `imagebuild lock --upgrade` to refresh imagebuild.lock; details in {log_path}")
    detail = errors[0][2:].strip() if errors else "mmdebstrap failed"
    return BuildError(f"building the Debian {source.suite} root file system failed: {detail[:300]}",
                      hint=f"details in {log_path}")
