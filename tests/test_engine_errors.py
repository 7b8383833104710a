"""No Docker engine where DOCKER_HOST points, or one this user may not use: one short line naming where and why."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from imagebuild.errors import UserError
from imagebuild.stores.engine import DEFAULT_SOCKET, connect

from tests.conftest import REPO_ROOT, imagebuild, run
from tests.registry_support.images import free_port

NOBODY = 65534


@pytest.mark.parametrize("make_url, reason", [
    (lambda tmp: f"tcp://127.0.0.1:{free_port()}", "Connection refused"),
    (lambda tmp: f"unix://{tmp}/no-docker.sock", "No such file or directory"),
])
def test_no_engine_is_one_short_line(tmp_path, make_url, reason):
    url = make_url(tmp_path)
    with pytest.raises(UserError) as caught:
        connect(url)
    assert caught.value.one_line() == (f"no Docker engine answers at {url}: {reason} "
                                       "(start dockerd or set DOCKER_HOST; --load needs an engine)")


def test_bake_load_without_an_engine_says_so_before_building(tmp_path):
    app = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "examples" / "static-site", app)  # with its lock: a clean bake needs it committed
    git = ["git", "-C", str(app), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "site"], check=True)
    url = f"tcp://127.0.0.1:{free_port()}"
    done = imagebuild("bake", app, "--load", "--store", tmp_path / "store", env={"DOCKER_HOST": url})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (f"error: no Docker engine answers at {url}: Connection refused "
                                            "(start dockerd or set DOCKER_HOST; --load needs an engine)")
    assert not (tmp_path / "store" / "index.json").exists()


@pytest.mark.integration
def test_permission_denied_on_the_socket_is_one_line():
    """The CLI as an unprivileged user (nobody, no groups) against the engine's root:docker socket."""
    socket_path = Path(DEFAULT_SOCKET)
    assert socket_path.stat().st_mode & 0o007 == 0, "the engine's socket is open to everyone here"
    root = Path(tempfile.mkdtemp(prefix="imagebuild-nobody-"))
    try:
        root.chmod(0o755)
        app = root / "site"
        shutil.copytree(REPO_ROOT / "examples" / "static-site", app)
        git = ["git", "-C", str(app), "-c", "user.name=t", "-c", "user.email=t@example.com"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "site"], check=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(root)], check=True)
        env = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
        env.update(HOME=str(root), DOCKER_CONFIG=str(root / "docker-config"), IMAGEBUILD_STORE=str(root / "store"))
        done = run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                    sys.executable, "-m", "imagebuild", "bake", str(app), "--load"], env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"error: permission denied on the Docker socket {DEFAULT_SOCKET} "
            "(run as a member of its group, usually docker, or set DOCKER_HOST to an engine you may use)")
        assert not (root / "store").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
