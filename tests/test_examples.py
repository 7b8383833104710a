"""Every example bakes, loads into the real Docker engine, starts, answers its health path with 200,
and is judged healthy by Docker through the image's own Healthcheck."""

from __future__ import annotations

import json
import subprocess

import pytest

from imagebuild.recipe.loader import load_recipe
from tests.bake_support import (EXAMPLES, bake_json, base_for, example_repo, http_get, published_port, seed,
                                wait_for_health, wait_for_http)
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration


def build_jar(repo):
    (repo / "app.jar").unlink(missing_ok=True)
    done = subprocess.run(["sh", str(repo / "build.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ("app.jar",)  # ignored by the example's .gitignore, so committed on purpose


PREPARE = {"java-hello": build_jar}


@pytest.mark.parametrize("example", ["flask-hello", "fastapi-hello", "static-site", "java-hello", "node-hello"])
def test_example_bakes_loads_runs_and_is_healthy(example, tmp_path, tmp_path_factory, docker_client,
                                                docker_leftovers):
    base = base_for(example, tmp_path_factory)
    repo = example_repo(tmp_path, example, lock=base.lock_path, prepare=PREPARE.get(example))
    recipe = load_recipe(EXAMPLES / example)
    store = seed(tmp_path / "store", base)

    result = bake_json(repo, store.root, "--load")
    reference = result["image"]
    docker_leftovers.images.append(reference)
    assert [layer["name"] for layer in result["layers"]][-3:] == ["server", "app", "config"]
    image = docker_client.images.get(reference)
    assert image.attrs["Config"]["User"] == "10001:10001"
    assert image.attrs["Config"]["Labels"]["org.opencontainers.image.version"] == result["version"]

    container = docker_client.containers.run(reference, detach=True,
                                             ports={f"{recipe.server.port}/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    port = published_port(container, recipe.server.port)
    status, body = wait_for_http(f"http://127.0.0.1:{port}{recipe.health.path}", container)
    assert status == 200, body
    top = container.top(ps_args="-o pid,user,args")
    assert all(row[1] != "root" for row in top["Processes"]), top
    exit_code, whoami = container.exec_run(["id", "-un"])
    assert (exit_code, whoami.decode().strip()) == (0, "app")
    assert wait_for_health(container) == "healthy", container.attrs["State"].get("Health")
    # the first environment is the default, and its settings reach the app
    status, _ = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200


def test_the_launcher_configures_each_environment_inside_the_image(tmp_path, debian_python_base,  # noqa: F811
                                                                   docker_client, docker_leftovers):
    repo = example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)
    result = bake_json(repo, seed(tmp_path / "store", debian_python_base).root, "--load")
    reference = result["image"]
    docker_leftovers.images.append(reference)
    missing = docker_client.containers.run(reference, detach=True, environment={"IMAGEBUILD_ENV": "prod"})
    docker_leftovers.containers.append(missing)
    assert missing.wait(timeout=60)["StatusCode"] == 64
    log = missing.logs().decode().strip().splitlines()
    assert len(log) == 1 and "SECRET_KEY" in log[0] and "prod" in log[0]

    for env, extra, expected in (({}, {}, ("dev", "debug", True)),
                                 ({"IMAGEBUILD_ENV": "prod"}, {"SECRET_KEY": "s3cret"}, ("prod", "info", False))):
        container = docker_client.containers.run(reference, detach=True, environment={**env, **extra},
                                                 ports={"8000/tcp": ("127.0.0.1", None)})
        docker_leftovers.containers.append(container)
        status, body = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/", container)
        assert status == 200
        answer = json.loads(body)
        assert (answer["environment"], answer["log_level"], answer["new_checkout"]) == expected
