"""Shared fixtures. Services (dockerd, docker-registry) are started by `make test`
through scripts/services.sh; these fixtures check they answer and fail loudly if not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY = os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000")


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(cmd, **kwargs)


def imagebuild(*args, env=None, cwd=None, input=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return run([sys.executable, "-m", "imagebuild", *map(str, args)], env=full_env, cwd=cwd, input=input)


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="session")
def docker_client():
    import docker

    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # the test set-up starts dockerd; a silent skip would hide a broken set-up
        pytest.fail(f"Docker engine not answering ({exc}); run `make services`")
    return client


@pytest.fixture(scope="session")
def registry() -> str:
    import httpx

    try:
        httpx.get(f"http://{REGISTRY}/v2/", timeout=5).raise_for_status()
    except Exception as exc:
        pytest.fail(f"registry at {REGISTRY} not answering ({exc}); run `make services`")
    return REGISTRY


@pytest.fixture(scope="session")
def busybox_path() -> Path:
    path = shutil.which("busybox")
    if not path:
        pytest.fail("busybox-static is not installed; run `make setup`")
    return Path(path)
