"""The Debian package index, as apt itself sees it.

apt downloads and verifies (against the host's Debian archive keyring) the
suite's package lists into a private state directory under the user's cache,
and answers questions with `apt-cache`: which names exist, which versions a
mirror still carries. The same lists and signatures mmdebstrap uses, without
building anything. A refresh costs a second or two and is skipped while the
lists are fresh; the lists directory persists, so apt's own refresh asks the
mirror only for what changed (If-Modified-Since, then the index files whose
hashes the new Release names). `imagebuild lock` hands a copy of the same
lists to mmdebstrap (`lists_copy`), which then starts from them instead of
downloading the whole index again. The scratch directories these hand out are each
flock'd by the process using them; those a killed run left behind are removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from imagebuild.errors import BuildError, UserError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FRESH_SECONDS = 3600
# Suites without -updates and -security pockets.
_ROLLING = {"sid", "unstable", "experimental", "rc-buggy"}
# The scratch directories made in a state directory; left behind when a process is killed, swept later.
_SCRATCH_PREFIXES = ("lists-", "debs-", "archives-")


@dataclass(frozen=True)
class DebianSource:
    """Where packages come from: suite, mirrors, architecture and mmdebstrap variant."""

    suite: str = "bookworm"
    mirror: str = DEFAULT_MIRROR
    architecture: str = "amd64"
    variant: str = "essential"

    @property
    def security_mirror(self) -> str:
        base = self.mirror.rstrip("/")
        if base.endswith("/debian"):
            return base + "-security"
        return DEFAULT_SECURITY_MIRROR

    def sources(self) -> list[str]:
        """The one-line apt sources: main, -updates and -security for a stable suite."""
        mirror = self.mirror.rstrip("/")
        lines = [f"deb {mirror} {self.suite} main"]
        if self.suite not in _ROLLING:
            lines.append(f"deb {mirror} {self.suite}-updates main")
            lines.append(f"deb {self.security_mirror} {self.suite}-security main")
        return lines

    def describe(self) -> dict:
        return {"suite": self.suite, "sources": self.sources(), "architecture": self.architecture,
                "variant": self.variant}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "imagebuild" / "debian-index"


class AptIndex:
    """A private apt state directory for one DebianSource."""

    def __init__(self, source: DebianSource, root: Path | None = None):
        self.source = source
        ident = hashlib.sha256("\n".join(source.sources() + [source.architecture]).encode()).hexdigest()[:16]
        self.root = (root or cache_root()) / f"{source.suite}-{source.architecture}-{ident}"
        self._refreshed = False

    # -- apt plumbing -----------------------------------------------------

    def _options(self) -> list[str]:
        root = str(self.root)
        return ["-o", f"Dir={root}", "-o", f"Dir::State::status={root}/status",
                "-o", f"Dir::Etc::Parts={root}/apt.conf.d", "-o", f"Dir::Etc::PreferencesParts={root}/preferences.d",
                "-o", f"Dir::Etc::Preferences={root}/preferences",
                "-o", f"Dir::Etc::SourceList={root}/sources.list", "-o", f"Dir::Etc::SourceParts={root}/sources.list.d",
                "-o", f"Dir::Etc::Trusted={KEYRING}", "-o", f"Dir::Etc::TrustedParts={root}/trusted.gpg.d",
                "-o", f"APT::Architecture={self.source.architecture}",
                "-o", f"APT::Architectures={self.source.architecture}",
                "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
                # apt's binary cache of the lists, kept (37 MB): an apt-cache call then takes 0.01 s, not
                # half a second of parsing; apt rebuilds it whenever the lists changed. No source cache.
                "-o", f"Dir::Cache::pkgcache={root}/var/cache/apt/pkgcache.bin", "-o", "Dir::Cache::srcpkgcache=",
                *self._sandbox()]

    def _sandbox(self) -> list[str]:
        # as root apt would hand downloads to _apt, which cannot write into root's cache
        return ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["APT_CONFIG"] = str(self.root / "apt.conf")   # an empty file: ignore the host's apt setup
        env["LC_ALL"] = "C.UTF-8"
        return env

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, *self._options(), *args], capture_output=True, text=True, env=self._env())

    def _prepare(self) -> None:
        for sub in ("apt.conf.d", "preferences.d", "sources.list.d", "trusted.gpg.d",
                    "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "apt.conf").touch()
        (self.root / "status").touch()
        (self.root / "sources.list").write_text("\n".join(self.source.sources()) + "\n")

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _stamp(self) -> Path:
        return self.root / ".updated"

    def refresh(self, force: bool = False) -> "AptIndex":
        """Download the lists unless they are fresh (or already refreshed by this object)."""
        if self._refreshed and not force:
            return self
        with self._locked():
            stamp = self._stamp()
            fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < FRESH_SECONDS
            if force or not fresh:
                self._prepare()
                done = self._run("apt-get", "update")
                detail = _update_failure(done.stdout + "\n" + done.stderr, done.returncode)
                if detail:
                    raise UserError(f"cannot read the Debian package index for {self.source.suite} "
                                    f"from {self.source.mirror}: {detail}",
                                    hint="check os.debian, os.mirror and the network")
                stamp.touch()
        self._refreshed = True
        return self

    @contextlib.contextmanager
    def lists_copy(self) -> Iterator[Path]:
        """The downloaded lists, refreshed when stale, as a directory of their own while the block runs.

        Hard links taken under the state directory's lock: apt replaces a list by renaming a new
        file over it, so another process refreshing meanwhile changes nothing here, and no one
        sees a refresh half done."""
        self.refresh()
        with self._locked(), contextlib.ExitStack() as held:
            copy = held.enter_context(self._scratch("lists-"))
            for path in (self.root / "var/lib/apt/lists").iterdir():
                if path.is_file() and path.name != "lock":
                    os.link(path, copy / path.name)
            held = held.pop_all()
        with held:
            yield copy

    @contextlib.contextmanager
    def _scratch(self, prefix: str) -> Iterator[Path]:
        """A new scratch directory in the state directory, flock'd (on the directory itself) until
        the block ends and it is removed; call under `_locked`. Scratch directories nobody holds
        are those of killed processes: they are swept first."""
        self._sweep_scratch()
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        handle = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        finally:
            os.close(handle)      # after the removal: a sweeper never sees it unheld and half removed

    def _sweep_scratch(self) -> None:
        """Remove the scratch directories no process holds; call under `_locked` (a new one is
        locked before the state directory's lock is let go, so an unheld one is abandoned)."""
        for path in self.root.iterdir():
            if not path.name.startswith(_SCRATCH_PREFIXES) or path.is_symlink() or not path.is_dir():
                continue
            try:
                handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue                        # in use by a running process
            else:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                os.close(handle)

    @contextlib.contextmanager
    def package_files(self) -> Iterator[Path]:
        """A scratch directory holding the .deb files the last resolve installed (hard links), for
        mmdebstrap to start from and to add what it downloads to; see `keep_package_files`.

        Only the files whose sha256 is the one the signed index gives their package version: apt takes
        a file already in its archives by its size alone, so a damaged one would be installed (and,
        never downloaded again, kept)."""
        with self._locked(), contextlib.ExitStack() as held:
            scratch = held.enter_context(self._scratch("debs-"))
            kept = self.root / "archives"
            if kept.is_dir():
                for deb in self._as_indexed(sorted(kept.glob("*.deb"))):
                    os.link(deb, scratch / deb.name)
            held = held.pop_all()
        with held:
            yield scratch

    def _as_indexed(self, debs: list[Path]) -> list[Path]:
        """The files among `debs` whose sha256 the lists give for their (name, version)."""
        identities = {deb: deb_identity(deb.name) for deb in debs}
        wanted = sorted({f"{name}={version}" for name, version in filter(None, identities.values())})
        if not wanted:
            return []
        indexed: dict[tuple[str, str], set[str]] = {}
        for stanza in self._run("apt-cache", "show", *wanted).stdout.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
            if {"Package", "Version", "SHA256"} <= fields.keys():
                indexed.setdefault((fields["Package"], fields["Version"]), set()).add(fields["SHA256"].strip())
        return [deb for deb, identity in identities.items()
                if identity in indexed and _sha256_of_file(deb) in indexed[identity]]

    def keep_package_files(self, scratch: Path, installed: set[tuple[str, str]]) -> None:
        """Keep, for the next resolve, the .deb files in `scratch` of the (name, version) pairs
        installed now; the rest go, so the cache holds one resolve's packages, not every version seen."""
        with self._locked(), self._scratch("archives-") as fresh, self._scratch("archives-old-") as old:
            for deb in scratch.glob("*.deb"):
                if deb_identity(deb.name) in installed:
                    os.link(deb, fresh / deb.name)
            kept = self.root / "archives"
            if kept.exists():
                kept.rename(old / "archives")
            os.rename(fresh, kept)                # `fresh` is gone then: its removal finds nothing

    # -- questions ----------------------------------------------------------

    def versions(self, names: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
        """Every version the mirrors carry for each name; a name without versions is absent."""
        self.refresh()
        found: dict[str, list[str]] = {name: [] for name in names}
        if not names:
            return found
        done = self._run("apt-cache", "madison", *names)
        for line in done.stdout.splitlines():
            parts = [part.strip() for part in line.split("|")]
            if len(parts) >= 3 and parts[0] in found and parts[2].endswith("Packages"):
                if parts[1] not in found[parts[0]]:
                    found[parts[0]].append(parts[1])
        return found

    def names_matching(self, pattern: str) -> list[str]:
        """Package names (not virtual ones) fully matching a regular expression."""
        self.refresh()
        regex = re.compile(pattern)
        done = self._run("apt-cache", "pkgnames")
        if done.returncode != 0:
            raise BuildError(f"apt-cache pkgnames failed: {done.stderr.strip().splitlines()[:1]}")
        return sorted(name for name in done.stdout.split() if regex.fullmatch(name))

    def candidate(self, name: str) -> dict[str, str]:
        """The apt-cache fields (Version, Depends, Filename, SHA256, ...) of the version apt would install."""
        self.refresh()
        done = self._run("apt-cache", "show", "--no-all-versions", name)
        fields: dict[str, str] = {}
        for line in done.stdout.splitlines():
            if not line.strip():
                break
            if ":" in line and not line.startswith(" "):
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if done.returncode != 0 or "Version" not in fields:
            raise UserError(f"Debian {self.source.suite} has no package {name}",
                            hint="check the package name against the suite")
        return fields

    def download(self, name: str, version: str, into: Path) -> Path:
        """Fetch NAME=VERSION's .deb into a directory (apt checks it against the signed index)."""
        self.refresh()
        into.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["apt-get", *self._options(), "download", f"{name}={version}"], cwd=into,
                              capture_output=True, text=True, env=self._env())
        found = sorted(into.glob(f"{name}_*.deb"))
        if done.returncode != 0 or not found:
            detail = (done.stderr.strip().splitlines() or [f"apt-get exited {done.returncode}"])[-1]
            raise BuildError(f"cannot download {name} {version} from {self.source.mirror}: {detail}")
        return found[-1]

    def release_epoch(self) -> int:
        """The `Date:` of the suite's signed Release file: when this state of the mirror was published."""
        self.refresh()
        lists = self.root / "var/lib/apt/lists"
        suffix = f"_dists_{self.source.suite}_InRelease"
        import email.utils     # here: a bake whose Debian layers are cached never reads a Release date

        for path in sorted(lists.iterdir()):
            if path.name.endswith(suffix):
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith("Date:"):
                        return int(email.utils.parsedate_to_datetime(line[5:].strip()).timestamp())
        raise BuildError(f"the Release file of {self.source.suite} has no Date field")


def _sha256_of_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def deb_identity(file_name: str) -> tuple[str, str] | None:
    """(name, version) of a .deb file as apt names it in its archives: NAME_VERSION_ARCH.deb, with
    an epoch's colon written %3a."""
    parts = file_name.removesuffix(".deb").split("_")
    if len(parts) != 3 or not file_name.endswith(".deb"):
        return None
    return parts[0], parts[1].replace("%3a", ":")


def _update_failure(output: str, returncode: int) -> str | None:
    """The line that says why `apt-get update` failed, or None when it did not.

    apt exits 0 when a download fails (it keeps old lists), so `Err:` lines count too;
    their reason is on the indented line that follows.
    """
    lines = output.splitlines()
    for line in lines:
        if line.startswith("E:"):
            return line[2:].strip()
    for number, line in enumerate(lines):
        if line.startswith("Err:"):
            reason = lines[number + 1].strip() if number + 1 < len(lines) else ""
            where = line.split(None, 1)[1] if " " in line else line
            return f"{where}: {reason}" if reason else where
    if returncode != 0:
        return f"apt-get update exited {returncode}"
    return None
