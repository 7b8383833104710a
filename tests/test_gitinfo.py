"""git facts from real repositories made with the git command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imagebuild.errors import UserError
from imagebuild.sources.git import GitFacts, git_facts, public_url, remote_url, require_git

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_COMMITTER_DATE": "2024-05-01T12:00:00Z",
       "GIT_AUTHOR_DATE": "2024-05-01T12:00:00Z", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env=ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.py").write_text("print('hi')\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_facts_of_a_commit(repo):
    facts = git_facts(repo / "app")
    assert facts.commit == git(repo, "rev-parse", "HEAD") and len(facts.commit) == 40
    assert facts.short == git(repo, "rev-parse", "--short", "HEAD")
    assert facts.describe is None and facts.version == facts.short
    assert facts.branch == "main"
    assert facts.commit_time == 1714564800
    assert facts.dirty is False
    assert facts.toplevel == repo.resolve()


def test_tag_gives_describe_and_version(repo):
    git(repo, "tag", "-a", "v1.2.0", "-m", "release")
    assert git_facts(repo).describe == "v1.2.0" == git_facts(repo).version
    (repo / "app" / "more.py").write_text("x = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "second")
    facts = git_facts(repo)
    assert facts.describe.startswith("v1.2.0-1-g") and facts.version == facts.describe


def test_dirty_means_tracked_changes(repo):
    (repo / "untracked.txt").write_text("not part of any commit")
    assert git_facts(repo).dirty is False
    (repo / "app" / "hello.py").write_text("print('changed')\n")
    assert git_facts(repo).dirty is True


def test_detached_head_has_no_branch(repo):
    git(repo, "checkout", "-q", "--detach")
    facts = git_facts(repo)
    assert facts.branch is None and facts.commit


def test_outside_a_repository(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    facts = git_facts(outside)
    assert facts == GitFacts() and not facts.is_repository
    assert facts.as_context()["commit"] == "" and facts.as_context()["dirty"] is False
    with pytest.raises(UserError) as caught:
        require_git(outside)
    assert caught.value.one_line() == (f"not a git repository: {outside} "
                                       "(run git init and commit, or bake from inside a repository)")


def test_repository_without_commits(tmp_path):
    git(tmp_path, "init", "-q")
    facts = git_facts(tmp_path)
    assert facts.is_repository and facts.commit is None
    with pytest.raises(UserError, match="no commit yet"):
        require_git(tmp_path)


def test_require_git_returns_facts(repo):
    assert require_git(repo).commit == git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize("url, public", [
    # The password holds an '@': split at the first one, part of it stayed in the URL.
    ("https://alice:S3cr3t@Pa55w0rd@host/app.git", "https://host/app.git"),
    ("https://user:token@git.example.test/acme/app.git", "https://git.example.test/acme/app.git"),
    ("https://x-access-token:ghs_abc@github.com:8443/acme/app.git", "https://github.com:8443/acme/app.git"),
    ("https://git.example.test/acme/app.git?private_token=abc#frag", "https://git.example.test/acme/app.git"),
    ("ssh://git@git.example.test:2222/acme/app.git", "ssh://git.example.test:2222/acme/app.git"),
    ("ssh://[fd00::1]/app.git", "ssh://[fd00::1]/app.git"),
    ("https://bob:p@ss@[fd00::1]:8443/app.git", "https://[fd00::1]:8443/app.git"),
    ("git@github.com:acme/app.git", "github.com:acme/app.git"),
    ("alice:S3cr3t@Pa55w0rd@host:acme/app.git", "host:acme/app.git"),
    ("/srv/git/app@v1.git", "/srv/git/app@v1.git"),
    ("../app.git", "../app.git"),
    ("file:///srv/git/app.git", "file:///srv/git/app.git"),
    ("https://[fd00::1/app.git", None),
    ("", None),
])
def test_a_public_url_keeps_no_userinfo(url, public):
    assert public_url(url) == public


def test_the_origin_url_of_a_repository_loses_its_credentials(repo):
    git(repo, "remote", "add", "origin", "https://alice:S3cr3t@Pa55w0rd@host/app.git")
    assert remote_url(repo) == "https://host/app.git"


def test_without_an_origin_there_is_no_url(repo, tmp_path):
    assert remote_url(repo) is None
    assert remote_url(tmp_path / "nowhere") is None



def test_the_facts_of_a_commit_take_four_git_calls(repo, monkeypatch):
    """Asked on every bake: toplevel+branch, HEAD's names and time, describe, status."""
    calls = []
    real_run = subprocess.run

    def counting(command, *args, **kwargs):
        if command and command[0] == "git":
            calls.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting)
    facts = git_facts(repo)
    assert facts.commit and facts.branch and facts.commit_time
    assert len(calls) == 4, calls
