"""Shared fixtures. Services (dockerd, docker-registry) are started by `make test`
through scripts/services.sh; these fixtures check they answer and fail loudly if not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY = os.environ.get("IMAGEBUILD_TEST_REGISTRY", "127.0.0.1:5000")

# Fixtures that start or reach a real service: a test requesting one must carry
# @pytest.mark.integration, so that `pytest -m "not integration"` stays fast and needs no services.
# pytest_runtest_setup below fails an unmarked test that requests one, before the service is touched.
SERVICE_FIXTURES = frozenset({
    "docker_client",                                        # the Docker engine (docker_leftovers too)
    "registry",                                             # the registry on 127.0.0.1:5000
    "basic_registry", "token_registry", "second_registry",  # docker-registry processes of their own
    "sshd", "sshd_factory",                                 # real sshd servers (tests/ssh_support.py)
    "debian_python_base",                                   # mmdebstrap and deb.debian.org (debian_fixtures.py)
    "arm64_base",                                           # the same for arm64, under qemu-user (test_bake_platforms.py)
    "flask_disks",                                          # disks baked from an example (test_disk.py)
    "kernel",                                               # a kernel package from deb.debian.org
    "site_packages",                                        # the examples' libraries from PyPI
    "trixie_skopeo",                                        # Debian 13's skopeo from deb.debian.org
    "postgres",                                             # a PostgreSQL cluster (tests/postgres_support.py)
})


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; never raises on a non-zero exit.
    Without `input`, stdin is empty rather than the terminal pytest may have been started from."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    if kwargs.get("input") is None:
        kwargs.pop("input", None)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, **kwargs)


def imagebuild(*args, env=None, cwd=None, input=None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return run([sys.executable, "-m", "imagebuild", *map(str, args)], env=full_env, cwd=cwd, input=input)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A test that needs a service but is not marked integration fails here, naming the service:
    unmarked, it would run (slowly, or not at all without services) in the unit selection."""
    if item.get_closest_marker("integration"):
        return
    services = sorted(SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if services:
        pytest.fail(f"{item.nodeid} uses {', '.join(services)} but is not marked integration "
                    "(add @pytest.mark.integration, or pytestmark = pytest.mark.integration in the module)",
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def no_personal_state(tmp_path_factory):
    """A test that forgets --store writes to a throw-away store, never to ~/.cache/imagebuild/store,
    where it would see (and leave) images from other runs; and registry credentials come from an
    empty Docker configuration, not from whatever `docker login` or credsStore this machine has."""
    patch = pytest.MonkeyPatch()
    patch.setenv("IMAGEBUILD_STORE", str(tmp_path_factory.mktemp("default-store") / "store"))
    patch.setenv("DOCKER_CONFIG", str(tmp_path_factory.mktemp("docker-config")))
    yield
    patch.undo()


@pytest.fixture
def docker_leftovers(docker_client):
    """Containers and images a test made in the engine, removed even when the test fails.
    Append each container (`.containers`) and image reference (`.images`) as soon as it exists."""
    import docker

    made = SimpleNamespace(containers=[], images=[])
    yield made
    for container in made.containers:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    for reference in made.images:
        try:
            docker_client.images.remove(reference, force=True)
        except docker.errors.NotFound:
            pass


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
