"""The app's files as git has them: `SourceTree` is the one place that reads them out of git.

At a commit it lists with `git ls-tree` and streams contents through one
`git cat-file --batch` process, so untracked files and `.git` can never reach
an image and memory stays flat. With --allow-dirty it lists the tracked files
(`git ls-files`) and takes their working-tree contents. Also: dirty-tree
detection and the remote URL.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from imagebuild.errors import BuildError, DirtyTreeError, UserError
from imagebuild.oci.layer import FILE, Entry

_GIT_ENV = {"LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK, MODE_SUBMODULE = "100644", "100755", "120000", "160000"
DIRTY_LIST_LIMIT = 5


@dataclass(frozen=True)
class TrackedFile:
    path: str        # relative to the repository root
    mode: str        # git mode: 100644, 100755 or 120000
    oid: str         # git object id at the commit (sha256 of the content for the working tree)
    size: int


def _run_git(toplevel: Path, *args: str, input: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(toplevel), *args], capture_output=True, input=input,
                              env={**os.environ, **_GIT_ENV}, check=False)
    except FileNotFoundError:
        raise UserError("git is not installed", hint="install git; images are baked from git commits") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise BuildError(f"git {args[0]} failed: {message[-1] if message else 'exit ' + str(done.returncode)}")
    return done.stdout


def dirty_files(toplevel: Path) -> list[str]:
    """Tracked files whose content differs from HEAD, staged or not."""
    out = _run_git(toplevel, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    paths = []
    records = out.split(b"\0")
    index = 0
    while index < len(records):
        record = records[index]
        index += 1
        if len(record) < 4:
            continue
        status, path = record[:2], record[3:].decode("utf-8", "surrogateescape")
        paths.append(path)
        if b"R" in status or b"C" in status:
            index += 1  # the rename's source path follows as its own record
    return sorted(set(paths))


def refuse_dirty(toplevel: Path) -> None:
    files = dirty_files(toplevel)
    if not files:
        return
    shown = ", ".join(files[:DIRTY_LIST_LIMIT])
    more = f" and {len(files) - DIRTY_LIST_LIMIT} more" if len(files) > DIRTY_LIST_LIMIT else ""
    raise DirtyTreeError(f"the work tree has uncommitted changes: {shown}{more}",
                         hint="commit them, or bake with --allow-dirty for a never-promotable -dirty image")


class SourceTree:
    """The files of one commit (or, with `working_tree`, their current contents)."""

    def __init__(self, toplevel: Path, commit: str, working_tree: bool = False):
        self.toplevel = Path(toplevel)
        self.commit = commit
        self.working_tree = working_tree
        self._cat: _CatFile | None = None

    def repo_path(self, path: Path) -> str:
        """`path` as a path inside the repository, '' for its root; ValueError when outside it."""
        rel = Path(os.path.realpath(path)).relative_to(Path(os.path.realpath(self.toplevel)))
        text = rel.as_posix()
        return "" if text == "." else text

    def files(self, prefix: str) -> list[TrackedFile]:
        args = ["--", prefix] if prefix else []
        if self.working_tree:
            out = _run_git(self.toplevel, "ls-files", "-z", "-s", "--full-name", *args)
        else:
            out = _run_git(self.toplevel, "ls-tree", "-r", "-l", "-z", "--full-tree", self.commit, *args)
        found = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, path = record.split(b"\t", 1)
            fields = meta.decode().split()
            if fields[0] == MODE_SUBMODULE:
                continue  # a submodule's files are not this commit's files
            name = path.decode("utf-8", "surrogateescape")
            if self.working_tree:
                current = self._current(name)
                if current is not None:
                    found.append(current)
            else:
                found.append(TrackedFile(name, fields[0], fields[2], int(fields[3])))
        return sorted(found, key=lambda item: item.path.encode("utf-8", "surrogateescape"))

    def _current(self, path: str) -> TrackedFile | None:
        """A tracked file as it is on disk now; None when it was deleted."""
        full = self.toplevel / path
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full).encode("utf-8", "surrogateescape")
            return TrackedFile(path, MODE_SYMLINK, "sha256:" + hashlib.sha256(target).hexdigest(), len(target))
        if not stat.S_ISREG(st.st_mode):
            return None
        mode = MODE_EXECUTABLE if st.st_mode & 0o100 else MODE_FILE
        digest = hashlib.sha256()
        with open(full, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        return TrackedFile(path, mode, "sha256:" + digest.hexdigest(), st.st_size)

    def read(self, path: str, limit: int | None = None) -> bytes | None:
        """One file's content at the commit (or on disk); None when it is not tracked there. With
        `limit`, no more than `limit + 1` bytes are read: enough for the caller to refuse a larger file
        without holding it."""
        if self.working_tree:
            tracked = _run_git(self.toplevel, "ls-files", "-z", "--", path).split(b"\0")
            if path.encode("utf-8", "surrogateescape") not in tracked:
                return None
            try:
                with open(self.toplevel / path, "rb") as handle:
                    return handle.read() if limit is None else handle.read(limit + 1)
            except FileNotFoundError:
                return None
        if limit is None and self._cat is not None and not self._cat.busy and not any(char.isspace() for char in path):
            # Inside `with tree:`, through the batch process already running: no git started for it
            # (not while a blob is being streamed from it: its answer would land inside that blob's bytes).
            # A bounded read streams from its own git instead, so no more than the bound is ever held.
            return self._cat.read_named(f"{self.commit}:{path}")
        command = ["git", "-C", str(self.toplevel), "cat-file", "blob", f"{self.commit}:{path}"]
        if limit is None:
            done = subprocess.run(command, capture_output=True, env={**os.environ, **_GIT_ENV}, check=False)
            return done.stdout if done.returncode == 0 else None
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env={**os.environ, **_GIT_ENV}) as reading:
            assert reading.stdout is not None
            data = reading.stdout.read(limit + 1)
            if len(data) > limit:
                reading.kill()       # the rest is not wanted: the file is refused for its size
                return data
            return data if reading.wait() == 0 else None

    def last_change(self, paths: list[str]) -> int | None:
        """The commit time of the newest commit at or before ours that touched any of `paths`."""
        if not paths:
            return None
        out = _run_git(self.toplevel, "log", "-1", "--format=%ct", self.commit, "--", *paths).strip()
        return int(out) if out else None

    def __enter__(self) -> "SourceTree":
        if not self.working_tree:
            self._cat = _CatFile(self.toplevel).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._cat is not None:
            self._cat.__exit__(*exc)
            self._cat = None

    def entries(self, files: list[TrackedFile], strip: str, dest: str) -> Iterator[Entry]:
        """Layer entries for `files`, re-rooted from `strip` (a repo prefix) to `dest`.

        At a commit, contents stream from `git cat-file` when the layer writer
        opens them, so use the tree as a context manager around the write.
        """
        for item in files:
            target = _dest_path(item.path, strip, dest)
            full = self.toplevel / item.path
            if item.mode == MODE_SYMLINK:
                link = os.readlink(full) if self.working_tree else self._blob(item.oid).decode(
                    "utf-8", "surrogateescape")
                yield Entry.symlink(target, link)
                continue
            mode = 0o755 if item.mode == MODE_EXECUTABLE else 0o644
            if self.working_tree:
                opener = functools.partial(open, full, "rb")
            else:
                opener = functools.partial(self._open_blob, item.oid)
            yield Entry(target, FILE, mode, size=item.size, opener=opener)

    def _open_blob(self, oid: str) -> "_BlobReader":
        if self._cat is None:
            raise RuntimeError("SourceTree.entries used outside `with tree:`")
        return self._cat.open(oid)

    def _blob(self, oid: str) -> bytes:
        with self._open_blob(oid) as reader:
            return reader.read()


def _dest_path(path: str, strip: str, dest: str) -> str:
    rel = path[len(strip):].lstrip("/") if strip else path
    return posixpath.join(dest.strip("/"), rel)


class _CatFile:
    """One `git cat-file --batch` process answering object requests in turn."""

    def __init__(self, toplevel: Path):
        self._toplevel = toplevel
        self._proc: subprocess.Popen | None = None
        self._streaming: _BlobReader | None = None     # the blob last opened, until it is closed

    @property
    def busy(self) -> bool:
        """A blob opened with `open` is still being read."""
        return self._streaming is not None and not self._streaming.closed

    def __enter__(self) -> "_CatFile":
        self._proc = subprocess.Popen(["git", "-C", str(self._toplevel), "cat-file", "--batch"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env={**os.environ, **_GIT_ENV})
        return self

    def __exit__(self, *exc) -> None:
        assert self._proc is not None
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._proc.wait()

    def _request(self, oid: str) -> int:
        assert self._proc is not None
        self._proc.stdin.write(oid.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3 or header[1] != "blob":
            raise BuildError(f"git cat-file could not read object {oid}: {' '.join(header)}")
        return int(header[2])

    def read_named(self, name: str) -> bytes | None:
        """The blob `name` (COMMIT:PATH) names, as `git cat-file blob` gives it; None when there is none."""
        assert self._proc is not None
        self._proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            return None      # `NAME missing` (or ambiguous): nothing follows
        with _BlobReader(self._proc.stdout, int(header[2])) as reader:
            content = reader.read()
        return content if header[1] == b"blob" else None

    def open(self, oid: str) -> "_BlobReader":
        assert self._proc is not None
        self._streaming = _BlobReader(self._proc.stdout, self._request(oid))
        return self._streaming


class _BlobReader:
    """Reads exactly one object's bytes from the batch stream, then its trailing newline."""

    def __init__(self, stream: BinaryIO, size: int):
        self._stream = stream
        self._left = size
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        chunk = self._stream.read(n) if n else b""
        self._left -= len(chunk)
        return chunk

    def __enter__(self) -> "_BlobReader":
        return self

    def __exit__(self, *exc) -> None:
        while self._left:
            if not self.read(1024 * 1024):
                break
        self._stream.read(1)  # the newline after each object
        self.closed = True
