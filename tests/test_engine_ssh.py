"""The engine behind a real sshd on loopback, as DOCKER_HOST=ssh://root@127.0.0.1:PORT: the Docker SDK's
paramiko transport runs `docker system dial-stdio` on the far side."""

from __future__ import annotations

import json

import pytest

from tests.bake_support import bake, example_repo, published_port, seed, wait_for_http
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.ssh_support import keygen, ssh_home, sshd, sshd_factory  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path, debian_python_base):  # noqa: F811
    return seed(tmp_path / "store", debian_python_base)


@pytest.fixture
def baked(tmp_path, store, debian_python_base):  # noqa: F811
    """flask-hello baked into the store, not yet in any engine."""
    repo = example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)
    done = bake(repo, store.root, "--json")
    assert done.returncode == 0, done.stderr
    return repo, json.loads(done.stdout)


def over_ssh(tmp_path, server) -> dict[str, str]:
    """The environment of a CLI that reaches the engine through `server`, trusting it and using its key."""
    return {"DOCKER_HOST": server.url, "HOME": str(ssh_home(tmp_path / "home", server))}


def test_bake_load_over_ssh_runs(tmp_path, store, baked, sshd, docker_client, docker_leftovers):  # noqa: F811
    repo, result = baked
    docker_leftovers.images.append(result["image"])
    logins = sshd.log.count("Accepted publickey for root")
    done = bake(repo, store.root, "--json", "--load", env=over_ssh(tmp_path, sshd))
    assert done.returncode == 0, done.stderr
    assert f"loaded into Docker as {result['image']}" in done.stderr
    # one SSH login serves the whole bake: the engine check before the work and the load after it
    assert sshd.log.count("Accepted publickey for root") == logins + 1
    container = docker_client.containers.run(result["image"], detach=True, environment={"IMAGEBUILD_ENV": "dev"},
                                             ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container)
    assert status == 200


def test_an_unknown_host_key_is_refused_in_one_line(tmp_path, baked, store, sshd):  # noqa: F811
    repo, _ = baked
    home = tmp_path / "stranger"
    (home / ".ssh").mkdir(parents=True)
    done = bake(repo, store.root, "--load", env={"DOCKER_HOST": sshd.url, "HOME": str(home)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no Docker engine answers at {sshd.url}: Server '[127.0.0.1]:{sshd.port}' not found in "
        f"known_hosts (add its host key: ssh-keyscan -p {sshd.port} 127.0.0.1 >> ~/.ssh/known_hosts)")


def test_a_stopped_sshd_is_one_line(tmp_path, baked, store, sshd_factory):  # noqa: F811
    repo, _ = baked
    server = sshd_factory()
    env = over_ssh(tmp_path, server)
    server.stop()
    done = bake(repo, store.root, "--load", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no Docker engine answers at {server.url}: Unable to connect to port {server.port} on 127.0.0.1 "
        "(check that sshd runs there, that your key is accepted and the host is in ~/.ssh/known_hosts)")


def test_a_key_the_host_refuses_is_one_line(tmp_path, baked, store, sshd):  # noqa: F811
    repo, _ = baked
    env = over_ssh(tmp_path, sshd)
    identity = tmp_path / "home" / ".ssh" / "id_ed25519"
    identity.unlink()
    identity.with_suffix(".pub").unlink()
    keygen(identity, "a key no server knows")
    done = bake(repo, store.root, "--load", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no Docker engine answers at {sshd.url}: Authentication failed. "
        "(the remote host does not accept your SSH key; name it with IdentityFile in ~/.ssh/config)")


def test_a_host_without_docker_is_one_line(tmp_path, baked, store, sshd_factory):  # noqa: F811
    repo, _ = baked
    server = sshd_factory()
    # What a host without the docker CLI does with the command the SDK runs there.
    keys = server.directory / "authorized_keys"
    keys.write_text('command="echo docker: command not found >&2; exit 127" ' + keys.read_text())
    done = bake(repo, store.root, "--load", env=over_ssh(tmp_path, server))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no Docker engine answers at {server.url}: the SSH login worked, but the remote end closed the "
        "connection (`docker system dial-stdio` must run there: install the docker CLI on that host and let "
        "this user use its engine)")
