"""One baked image, started in the real Docker engine as dev, test and prod.

The app under test is a stdlib WSGI app on the stock python-wsgi recipe
(gunicorn); it answers with what it reads through `imagebuild_runtime` and
the files the launcher wrote, so every assertion is about what the app sees.
The Debian base is the session-cached one (tests/debian_fixtures.py).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from imagebuild.stores.layout import LayoutStore
from tests.bake_support import bake_json, commit_all, git, http_get, published_port, seed, wait_for_http
from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration

APP = '''\
"""Answers with what the launcher gave it: environment, config, toggles, the run directory."""
import json
import os

from imagebuild_runtime import config, environment, feature, features


def app(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\\n"]
    run_dir = os.environ.get("IMAGEBUILD_RUN_DIR", "")
    with open(os.path.join(run_dir, "config.json")) as handle:
        config_file = json.load(handle)
    body = {
        "environment": environment(),
        "config": config(),
        "config_file": config_file,
        "features": features(),
        "new_checkout": feature("new_checkout"),
        "run_dir": run_dir,
        "has_database_url": bool(os.environ.get("DATABASE_URL")),
        "workers": os.environ.get("WEB_CONCURRENCY"),
        "pid": os.getpid(),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]
'''

RECIPE = '''\
name: launcher-probe
extends: python-wsgi
os:
  packages: [ca-certificates]
server:
  app: app:app
environments:
  - name: dev
    config: {LOG_LEVEL: debug, GREETING: "hi from dev"}
    features: {new_checkout: true, dark_mode: true}
  - name: test
    config: {LOG_LEVEL: info, GREETING: "hi from test"}
    features: {new_checkout: true}
  - name: prod
    config: {LOG_LEVEL: warning, GREETING: "hi from prod"}
    features: {new_checkout: false}
    secrets: [DATABASE_URL]
    detect: {hostname: "prod-*"}
'''


@pytest.fixture(scope="module")
def baked(tmp_path_factory, debian_python_base):  # noqa: F811
    """The app baked once and loaded into the engine: (store, bake --json result)."""
    import docker

    root = tmp_path_factory.mktemp("launcher-probe")
    repo = root / "app"
    repo.mkdir()
    (repo / "app.py").write_text(APP)
    (repo / "imagebuild.yaml").write_text(RECIPE)
    (repo / "certs").mkdir()
    (repo / "certs" / "dev.key").write_text("not really a key\n")
    (repo / ".env.example").write_text("DATABASE_URL=\n")
    (repo / "imagebuild.lock").write_bytes(debian_python_base.lock_path.read_bytes())
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "probe", 1_750_000_000)
    store = seed(root / "store", debian_python_base)
    result = bake_json(repo, store.root, "--load")
    yield store, result
    try:
        docker.from_env().images.remove(result["image"], force=True)
    except docker.errors.NotFound:
        pass


def start(docker_client, docker_leftovers, image: str, environment: dict, **kwargs):
    container = docker_client.containers.run(image, detach=True, environment=environment,
                                             ports={"8000/tcp": ("127.0.0.1", None)}, **kwargs)
    docker_leftovers.containers.append(container)
    return container


def answer(container, port: int = 8000) -> dict:
    status, body = wait_for_http(f"http://127.0.0.1:{published_port(container, port)}/", container)
    assert status == 200, body
    return json.loads(body)


def startup_line(container) -> str:
    lines = [line for line in container.logs(stdout=False, stderr=True).decode().splitlines()
             if line.startswith("imagebuild-launch:")]
    assert len(lines) == 1, lines
    return lines[0]


def exited(container, timeout: int = 60) -> tuple[int, str]:
    code = container.wait(timeout=timeout)["StatusCode"]
    return code, container.logs().decode()


def test_one_digest_runs_as_dev_test_and_prod_and_the_app_reads_each(baked, docker_client, docker_leftovers):
    store, result = baked
    image = docker_client.images.get(result["image"])
    seen = {}
    for name, extra in (("dev", {}), ("test", {}), ("prod", {"DATABASE_URL": "postgres://db/app"})):
        container = start(docker_client, docker_leftovers, result["image"], {"IMAGEBUILD_ENV": name, **extra})
        assert container.image.id == image.id
        seen[name] = answer(container)
        line = startup_line(container)
        assert f"environment={name} (from IMAGEBUILD_ENV)" in line
        assert f"version={result['version']}" in line
        assert "postgres://" not in line
    assert {name: body["environment"] for name, body in seen.items()} == {"dev": "dev", "test": "test", "prod": "prod"}
    assert [seen[name]["config"]["GREETING"] for name in ("dev", "test", "prod")] == \
        ["hi from dev", "hi from test", "hi from prod"]
    assert seen["prod"]["config"]["LOG_LEVEL"] == "warning" and seen["dev"]["config"]["LOG_LEVEL"] == "debug"
    assert seen["dev"]["config_file"] == seen["dev"]["config"]
    assert seen["dev"]["features"] == {"new_checkout": True, "dark_mode": True}
    assert seen["test"]["features"] == {"new_checkout": True, "dark_mode": False}
    assert seen["prod"]["features"] == {"new_checkout": False, "dark_mode": False}
    assert seen["prod"]["has_database_url"] is True
    assert seen["dev"]["run_dir"] == "/run/imagebuild"


def test_a_feature_variable_flips_one_toggle_and_the_line_names_the_overrides(baked, docker_client,
                                                                              docker_leftovers):
    _, result = baked
    container = start(docker_client, docker_leftovers, result["image"],
                      {"IMAGEBUILD_ENV": "dev", "FEATURE_NEW_CHECKOUT": "off", "LOG_LEVEL": "error"})
    body = answer(container)
    assert body["new_checkout"] is False
    assert body["features"] == {"new_checkout": False, "dark_mode": True}
    assert body["config"]["LOG_LEVEL"] == "error" and body["config"]["GREETING"] == "hi from dev"
    line = startup_line(container)
    assert "features=dark_mode:on,new_checkout:off" in line
    assert "overrides=LOG_LEVEL,FEATURE_NEW_CHECKOUT" in line


def test_a_host_named_prod_is_detected_as_prod(baked, docker_client, docker_leftovers):
    _, result = baked
    container = start(docker_client, docker_leftovers, result["image"], {"DATABASE_URL": "postgres://db/app"},
                      hostname="prod-web-1")
    assert answer(container)["environment"] == "prod"
    assert "environment=prod (detected: hostname prod-*)" in startup_line(container)


def test_an_undetected_or_unknown_environment_is_refused(baked, docker_client, docker_leftovers):
    _, result = baked
    nothing = docker_client.containers.run(result["image"], detach=True)
    docker_leftovers.containers.append(nothing)
    code, log = exited(nothing)
    assert code == 64
    assert "no environment named or detected" in log and "dev, test, prod" in log and "IMAGEBUILD_ENV" in log
    unknown = docker_client.containers.run(result["image"], detach=True, environment={"IMAGEBUILD_ENV": "staging"})
    docker_leftovers.containers.append(unknown)
    code, log = exited(unknown)
    assert code == 64 and "unknown environment 'staging'" in log and "dev, test, prod" in log


def test_run_refuses_an_unknown_environment_or_image_before_starting_anything(baked):
    store, result = baked
    done = imagebuild("run", result["image"], "--env", "staging", "--store", store.root)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: unknown environment 'staging' for {result['image']} "
                                   "(this image knows: dev, test, prod)")
    done = imagebuild("run", "launcher-probe:nope", "--env", "dev", "--store", store.root)
    assert done.returncode == 2 and "no image 'launcher-probe:nope'" in done.stderr


def test_run_checks_its_ports_and_variables_before_starting_anything(baked):
    from imagebuild.errors import UserError
    from imagebuild.release.run import RunOptions, plan_run

    store, result = baked
    target = plan_run(store, result["image"], RunOptions(env="test", publish=("8080",),
                                                          variables=("LOG_LEVEL=debug", "TOKEN")),
                      host_env={"TOKEN": "t0k3n"})
    assert target.ports == {"8000/tcp": ("127.0.0.1", 8080)}
    assert target.environment == {"IMAGEBUILD_ENV": "test", "LOG_LEVEL": "debug", "TOKEN": "t0k3n",
                                  "IMAGEBUILD_IMAGE_DIGEST": result["digest"]}
    assert (target.variable, target.environments) == ("IMAGEBUILD_ENV", ("dev", "test", "prod"))
    assert plan_run(store, result["image"], RunOptions(publish=("0.0.0.0:9000:8000",))).ports == \
        {"8000/tcp": ("0.0.0.0", 9000)}
    assert plan_run(store, result["digest"], RunOptions()).ports == {"8000/tcp": ("127.0.0.1", None)}
    for options, fragment in ((RunOptions(publish=("http",)), "is not a port"),
                              (RunOptions(publish=("70000",)), "not a TCP port"),
                              (RunOptions(variables=("NOT_HERE",)), "not set here"),
                              (RunOptions(variables=("BAD-NAME=1",)), "not a variable name"),
                              (RunOptions(env="dev", variables=("IMAGEBUILD_ENV=prod",)), "disagree")):
        with pytest.raises(UserError, match=fragment):
            plan_run(store, result["image"], options, host_env={})
    done = imagebuild("run", result["image"], "--env", "dev", "-e", "NOT_SET_ANYWHERE", "--store", store.root)
    assert done.returncode == 2 and "NOT_SET_ANYWHERE is not set here" in done.stderr


def test_run_passes_a_missing_secret_refusal_through_with_its_exit_code(baked):
    store, result = baked
    done = imagebuild("run", result["image"], "--env", "prod", "--store", store.root)
    assert done.returncode == 64, done.stderr
    assert "environment 'prod' needs secret(s) DATABASE_URL" in done.stderr
    done = imagebuild("run", result["image"], "--env", "prod", "--json", "--store", store.root)
    assert done.returncode == 64, done.stderr
    assert json.loads(done.stdout)["exit_code"] == 64  # stdout holds the JSON object only


def test_run_starts_an_environment_with_its_secret_and_a_published_port(baked, docker_client, docker_leftovers):
    store, result = baked
    secret = f"s3cret-{uuid.uuid4().hex}"
    done = imagebuild("run", result["image"], "--env", "prod", "-e", "DATABASE_URL", "--detach", "--json",
                      "--store", store.root, env={"DATABASE_URL": secret})
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout)
    container = docker_client.containers.get(started["container"])
    docker_leftovers.containers.append(container)
    assert started["address"].startswith("http://127.0.0.1:")
    body = answer(container)
    assert body["environment"] == "prod" and body["has_database_url"] is True
    assert f"digest={result['digest']}" in startup_line(container)
    assert secret not in container.logs().decode()


def test_a_secret_value_reaches_the_app_from_a_file_and_appears_in_no_layer_and_no_log(
        baked, docker_client, docker_leftovers, tmp_path):
    store, result = baked
    secret = f"postgres://app:{uuid.uuid4().hex}@db/app"
    secret_file = tmp_path / "database_url"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o644)
    container = start(docker_client, docker_leftovers, result["image"],
                      {"IMAGEBUILD_ENV": "prod", "DATABASE_URL_FILE": "/run/secrets/database_url"},
                      volumes={str(secret_file): {"bind": "/run/secrets/database_url", "mode": "ro"}})
    body = answer(container)
    assert body["has_database_url"] is True
    assert "secrets=DATABASE_URL(file)" in startup_line(container)
    container.stop(timeout=5)
    assert secret.encode() not in container.logs()
    inspected = json.dumps(docker_client.api.inspect_container(container.id))
    assert secret not in inspected
    assert_nowhere_in_image(store, result["digest"], secret.encode())


def assert_nowhere_in_image(store: LayoutStore, digest: str, needle: bytes) -> None:
    """Every layer's files, the image config and the manifest are free of `needle`."""
    manifest = store.read_manifest(digest)
    assert needle not in store.read_blob(digest)
    assert needle not in store.read_blob(manifest.config.digest)
    assert len(manifest.layers) >= 4
    for layer in manifest.layers:
        with store.open_blob(layer.digest) as blob, gzip.open(blob) as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
            for member in tar:
                assert needle not in member.name.encode()
                if member.isfile():
                    assert needle not in tar.extractfile(member).read(), member.name


def test_docker_stop_reaches_gunicorn_as_sigterm_and_it_exits_cleanly(baked, docker_client, docker_leftovers):
    _, result = baked
    container = start(docker_client, docker_leftovers, result["image"], {"IMAGEBUILD_ENV": "dev"})
    answer(container)
    exit_code, pid1 = container.exec_run(["cat", "/proc/1/cmdline"])
    assert exit_code == 0 and b"gunicorn" in pid1, pid1  # the launcher exec'd the server: it is PID 1
    container.stop(timeout=5)
    container.reload()
    state = container.attrs["State"]
    # 137 would mean the engine gave up after the timeout and killed it
    assert state["ExitCode"] in (0, 143) and not state["OOMKilled"], state
    assert "Handling signal: term" in container.logs().decode()


def test_workers_follow_the_cpus_the_container_may_use_and_port_follows_PORT(baked, docker_client,
                                                                          docker_leftovers):
    _, result = baked
    container = docker_client.containers.run(result["image"], detach=True, nano_cpus=1_000_000_000,
                                             environment={"IMAGEBUILD_ENV": "test", "PORT": "9090"},
                                             ports={"9090/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    body = answer(container, 9090)
    assert body["workers"] == "3"  # one CPU: 2 x 1 + 1 gunicorn workers
    assert "cpus=1 workers=3" in startup_line(container) and "port=9090" in startup_line(container)
    processes = container.top(ps_args="-o pid,args")["Processes"]
    assert sum("gunicorn" in row[1] for row in processes) == 4, processes  # the master and 3 workers
    assert wait_healthy(container) == "healthy"  # the image's Healthcheck probes $PORT too


def wait_healthy(container) -> str:
    from tests.bake_support import wait_for_health

    return wait_for_health(container)


def test_a_read_only_root_filesystem_still_gets_its_files(baked, docker_client, docker_leftovers):
    _, result = baked
    container = start(docker_client, docker_leftovers, result["image"], {"IMAGEBUILD_ENV": "dev"},
                      read_only=True)
    body = answer(container)
    assert body["run_dir"] == "/dev/shm/imagebuild-10001"
    assert body["features"]["new_checkout"] is True


def test_bake_warns_about_files_that_look_like_credentials(baked):
    _, result = baked
    assert len(result["warnings"]) == 1
    assert "/app/certs/dev.key" in result["warnings"][0] and ".env.example" not in result["warnings"][0]


def test_run_streams_the_log_and_ctrl_c_stops_the_container_with_sigterm(baked, docker_client, tmp_path):
    import docker
    import os
    import signal
    import time

    store, result = baked
    name = f"launcher-probe-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "stderr"
    with open(log, "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "imagebuild", "run", result["image"], "--env", "dev",
                                    "--name", name, "--store", str(store.root)],
                                   stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ))
        try:
            for _ in range(240):  # bounded: until gunicorn says it is listening, streamed through `run`
                if b"Listening at" in log.read_bytes() or process.poll() is not None:
                    break
                time.sleep(0.25)
            text = log.read_bytes().decode()
            assert "Listening at" in text and "imagebuild-launch: environment=dev" in text, text
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    text = log.read_bytes().decode()
    assert code == 130, text
    assert "Handling signal: term" in text  # gunicorn got SIGTERM, as from `docker stop`
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)  # and the container is gone
