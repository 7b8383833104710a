"""No Docker engine where DOCKER_HOST points: one short line naming where and why."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from imagebuild.errors import UserError
from imagebuild.stores.daemon import connect

from tests.conftest import REPO_ROOT, imagebuild
from tests.registry_support.images import free_port


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
