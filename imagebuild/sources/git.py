"""Facts about the git commit an app is baked from.

The only module that runs `git` to describe a work tree. `git_facts` never fails
on a directory outside a repository (it returns empty facts, so a recipe can be
rendered anywhere); `require_git` is for callers that need a real commit.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from dataclasses import asdict
from pathlib import Path

from imagebuild.errors import UserError
from imagebuild.frozen import frozen


@frozen
class GitFacts:
    """What git says about the commit checked out at a path.

    Outside a repository every string is None, `dirty` is False and
    `commit_time` is 0.
    """

    commit: str | None = None        # full object name of HEAD
    short: str | None = None         # abbreviated object name (git's default length, at least 7)
    describe: str | None = None      # `git describe --tags` (e.g. v1.2-3-gabc1234); None without a tag
    version: str | None = None       # describe when a tag reaches HEAD, else short
    dirty: bool = False              # tracked files differ from HEAD (staged or not)
    commit_time: int = 0             # committer time of HEAD, seconds since the epoch
    branch: str | None = None        # None when HEAD is detached
    toplevel: Path | None = None     # root of the work tree

    @property
    def is_repository(self) -> bool:
        return self.toplevel is not None

    def as_context(self) -> dict[str, object]:
        """The facts as a template context: absent strings become "" so they render as nothing."""
        facts = asdict(self)
        facts["toplevel"] = str(self.toplevel) if self.toplevel else ""
        return {key: ("" if value is None else value) for key, value in facts.items()}


def _git(path: Path, *args: str) -> str | None:
    """Run git in `path`; its stripped stdout, or None when git fails or is missing."""
    env = dict(os.environ, LC_ALL="C", GIT_OPTIONAL_LOCKS="0")
    try:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              env=env, check=False)
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_toplevel(path: Path | str) -> Path | None:
    """The root of the git work tree holding the directory `path`, or None outside one."""
    toplevel = _git(Path(path), "rev-parse", "--show-toplevel")
    return Path(toplevel) if toplevel else None


def git_facts(path: Path | str) -> GitFacts:
    """Describe the commit checked out at `path` (a directory inside a work tree).

    Tolerates a directory outside any repository and a repository without
    commits: the missing facts stay empty.
    """
    path = Path(path)
    # Few git calls: the warm bake path asks these on every bake.
    where = _git(path, "rev-parse", "--show-toplevel", "--abbrev-ref", "HEAD")
    if where is None:   # outside a repository, or one without commits
        toplevel = git_toplevel(path)
        return GitFacts(toplevel=toplevel) if toplevel is not None else GitFacts()
    top, _, ref = where.partition("\n")
    toplevel = Path(top)
    head = (_git(path, "log", "-1", "--format=%H%n%h%n%ct", "HEAD") or "").splitlines()
    if len(head) != 3:
        return GitFacts(toplevel=toplevel)
    commit, short, commit_time = head[0], head[1], int(head[2] or 0)
    describe = _git(path, "describe", "--tags") or None
    branch = ref if ref and ref != "HEAD" else None     # "HEAD" when detached
    # Untracked files are not part of the commit and never reach an image, so only
    # changes to tracked files make the tree dirty.
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    return GitFacts(commit=commit, short=short, describe=describe, version=describe or short,
                    dirty=bool(status), commit_time=commit_time, branch=branch,
                    toplevel=toplevel)


def require_git(path: Path | str, facts: GitFacts | None = None) -> GitFacts:
    """Like `git_facts`, but a UserError unless `path` is in a repository with a commit.

    `facts`: already read for `path` (e.g. to render its recipe), so git is not asked twice.
    """
    facts = git_facts(path) if facts is None else facts
    if not facts.is_repository:
        raise UserError(f"not a git repository: {path}",
                        hint="run git init and commit, or bake from inside a repository")
    if not facts.commit:
        raise UserError(f"no commit yet in the git repository at {facts.toplevel}",
                        hint="commit the app first: images are named by the commit they come from")
    return facts


def remote_url(path: Path | str) -> str | None:
    """Where the code lives: the `origin` remote's URL without credentials, for the image's
    `source` annotation and label; None without an origin."""
    url = _git(Path(path), "config", "--get", "remote.origin.url")
    return public_url(url) if url else None


def public_url(url: str) -> str | None:
    """A git remote URL with no userinfo (user, password, token) and no query or fragment, which can
    carry tokens too; None when it cannot be parsed safely.

    Forms, as git reads them: `scheme://[userinfo@]host[:port]/path`; the scp-like
    `[user@]host:path` (a ':' before any '/'); otherwise a local path, kept as written.
    A password may itself hold '@', so the host starts after the last '@' of the authority."""
    url = url.strip()
    if not url:
        return None
    if "://" in url:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port                      # raises ValueError on a malformed host or port
        except ValueError:
            return None
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    # The scp-like form has no password, but what was pasted may: the last '@' before the path ends
    # the userinfo, and a ':' after it, before any '/', separates the host from the path.
    head = url.split("/", 1)[0]
    rest = url[head.rfind("@") + 1:]
    colon, slash = rest.find(":"), rest.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        return rest
    return url
