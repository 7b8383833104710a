"""Every kind of server behind the launcher in the real Docker engine: uvicorn, nginx, the JVM and node
follow PORT given at start (nginx LOG_LEVEL too), are PID 1, and exit on `docker stop`'s SIGTERM without being killed.
(gunicorn is covered in tests/test_launcher_docker.py.) The Debian bases are the cached ones."""

from __future__ import annotations

import pytest

from imagebuild.recipe.loader import load_recipe
from tests.bake_support import (EXAMPLES, bake_json, base_for, example_repo, published_port, seed,
                                wait_for_health, wait_for_http)
from tests.test_examples import PREPARE

pytestmark = pytest.mark.integration

# the process that must be PID 1, and the exit codes a clean SIGTERM shutdown gives
SERVERS = {
    "fastapi-hello": (b"uvicorn_run.py", (0,)),
    "static-site": (b"nginx", (0,)),
    "java-hello": (b"java", (0, 143)),
    "node-hello": (b"node", (0,)),
}


@pytest.mark.parametrize("example", sorted(SERVERS))
def test_the_server_follows_port_and_stops_on_sigterm(example, tmp_path, tmp_path_factory, docker_client,
                                                       docker_leftovers):
    base = base_for(example, tmp_path_factory)
    repo = example_repo(tmp_path, example, lock=base.lock_path, prepare=PREPARE.get(example))
    recipe = load_recipe(EXAMPLES / example)
    result = bake_json(repo, seed(tmp_path / "store", base).root, "--load")
    docker_leftovers.images.append(result["image"])
    port = recipe.server.port + 1111
    container = docker_client.containers.run(result["image"], detach=True, nano_cpus=1_000_000_000,
                                             environment={"IMAGEBUILD_ENV": "test", "PORT": str(port), "LOG_LEVEL": "info"},
                                             ports={f"{port}/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, port)}{recipe.health.path}", container)
    assert status == 200
    log = container.logs(stdout=False, stderr=True).decode()
    line = next(text for text in log.splitlines() if text.startswith("imagebuild-launch:"))
    assert "environment=test (from IMAGEBUILD_ENV)" in line and f"port={port}" in line and "cpus=1" in line
    if example == "fastapi-hello":
        assert "workers=1" in line  # fixed in the example's recipe
    if example == "static-site":
        assert "[notice]" in log  # nginx's error_log follows LOG_LEVEL (baked at warn)
    pid1_command, expected_codes = SERVERS[example]
    exit_code, pid1 = container.exec_run(["cat", "/proc/1/cmdline"])
    assert exit_code == 0 and pid1_command in pid1, pid1
    assert wait_for_health(container) == "healthy"  # the Healthcheck probes the moved port
    container.stop(timeout=5)
    container.reload()
    state = container.attrs["State"]
    assert state["ExitCode"] in expected_codes, (state, container.logs().decode()[-2000:])
