"""Debian trixie (Python 3.13) next to bookworm: the flask example, re-pointed at trixie, is
resolved from trixie's packages, gets its wheels for Python 3.13, bakes, and serves."""

from __future__ import annotations

import os
import re
from dataclasses import replace

import pytest

from imagebuild.build.layers.libraries import lock_python, site_packages
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import OsSpec, RuntimeSpec
from imagebuild.sources.lockfile import LOCK_NAME, read_lock, write_lock
from tests.bake_support import (bake_json, commit_all, example_repo, published_port, seed, wait_for_http,
                                FIRST_COMMIT_TIME)
from tests.conftest import imagebuild
from tests.debian_fixtures import _cache_dir, build_cached_base

pytestmark = pytest.mark.integration

TRIXIE_OS = OsSpec(debian="trixie", packages=("ca-certificates",))
TRIXIE_PYTHON = RuntimeSpec(python="3.13")
# markupsafe is the example's one compiled wheel: its cp313 build has a hash of its own.
MARKUPSAFE_CP313 = "434139499bb20b502ed3baa1f169e618f924a97e7a777fea1a49446d80106cf6"


@pytest.fixture(scope="session")
def debian_trixie_base(tmp_path_factory):
    """trixie + ca-certificates and python3.13, built once and kept under ~/.cache/imagebuild-test."""
    root = tmp_path_factory.mktemp("debian-trixie") if os.environ.get("IMAGEBUILD_TEST_FRESH") \
        else _cache_dir(TRIXIE_OS, TRIXIE_PYTHON)
    return build_cached_base(root, TRIXIE_OS, TRIXIE_PYTHON)


def repoint_to_trixie(repo) -> None:
    recipe = repo / "imagebuild.yaml"
    text = recipe.read_text()
    text = text.replace("os:\n  packages: [ca-certificates]", "os:\n  debian: trixie\n  packages: [ca-certificates]")
    text = re.sub(r"^libraries:", 'runtime:\n  python: "3.13"\nlibraries:', text, count=1, flags=re.M)
    recipe.write_text(text)
    requirements = repo / "requirements.txt"
    requirements.write_text(re.sub(r"(markupsafe==3\.0\.4 \\\n\s+--hash=sha256:[0-9a-f]+)",
                                   rf"\1 \\\n    --hash=sha256:{MARKUPSAFE_CP313}", requirements.read_text()))


def test_a_trixie_python_313_image_bakes_and_serves(tmp_path, debian_trixie_base, docker_client, docker_leftovers):
    repo = example_repo(tmp_path, "flask-hello")
    repoint_to_trixie(repo)
    recipe = load_recipe(repo)
    assert (recipe.os.debian, recipe.runtime.python) == ("trixie", "3.13")
    assert site_packages(recipe) == "usr/local/lib/python3.13/dist-packages"
    lock = read_lock(debian_trixie_base.lock_path)
    assert lock is not None and lock.runtime_versions()["python3.13"].startswith("3.13.")
    # the closure pip resolves for the image's Python 3.13, next to trixie's Debian pins
    closure = lock_python(recipe, (repo / "requirements.txt").read_bytes())
    assert closure.inputs["python"] == "3.13"
    # the example's bookworm lock does not fit the re-pointed recipe; the trixie one does
    stale = imagebuild("lock", repo, "--check")
    assert stale.returncode == 2 and "Debian inputs" in stale.stderr and "Python requirements" in stale.stderr
    write_lock(repo / LOCK_NAME, replace(lock, python=closure))
    fresh = imagebuild("lock", repo, "--check")
    assert fresh.returncode == 0, fresh.stderr
    commit_all(repo, "trixie", FIRST_COMMIT_TIME + 60)

    result = bake_json(repo, seed(tmp_path / "store", debian_trixie_base).root, "--load")
    docker_leftovers.images.append(result["image"])
    container = docker_client.containers.run(result["image"], detach=True, ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    port = published_port(container, 8000)
    status, body = wait_for_http(f"http://127.0.0.1:{port}/health", container)
    assert status == 200, body
    exit_code, output = container.exec_run(["python3", "-c", "import sys, flask; print(sys.version_info[:2], flask.__file__)"])
    assert exit_code == 0 and b"(3, 13)" in output and b"/usr/local/lib/python3.13/dist-packages/" in output, output
