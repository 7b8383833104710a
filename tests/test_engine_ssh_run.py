"""`imagebuild run` against the engine behind a real sshd on loopback (DOCKER_HOST=ssh://)."""

from __future__ import annotations

import json

import pytest

from tests.bake_support import http_get, wait_for_http
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.ssh_support import sshd, sshd_factory  # noqa: F401
from tests.test_engine_ssh import baked, over_ssh, store  # noqa: F401

pytestmark = pytest.mark.integration


def test_imagebuild_run_over_ssh_serves(tmp_path, store, baked, sshd, docker_client,  # noqa: F811
                                        docker_leftovers):
    _, result = baked
    docker_leftovers.images.append(result["image"])
    logins = sshd.log.count("Accepted publickey for root")
    done = imagebuild("run", result["image"], "--env", "dev", "--detach", "--json", "--store", store.root,
                      env=over_ssh(tmp_path, sshd))
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)
    container = docker_client.containers.get(started["container"])
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"{started['address']}/health", container)
    assert status == 200
    assert http_get(f"{started['address']}/health")[0] == 200
    assert sshd.log.count("Accepted publickey for root") == logins + 1   # one login loads and starts it
