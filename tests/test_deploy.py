"""`imagebuild deploy` against real sshd servers, the real Docker engine behind them and the real registry:
blue/green behind nginx under load, a failing health check, rollback, migrations, two hosts."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.deploy_support import LoadLoop, cleanup, epoch, events_from_stderr, make_deploy_app
from tests.ssh_support import free_port, sshd, sshd_factory  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def app(tmp_path, debian_python_base, sshd, registry, docker_client):  # noqa: F811
    made = make_deploy_app(tmp_path, debian_python_base, [sshd], [free_port()])
    yield made
    cleanup(made)


def deployed(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def containers_of(app, docker_client) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"dev.imagebuild.deploy.app={app.name}"})


def test_v1_then_v2_under_load_loses_no_request_and_then_serves_only_v2(app, docker_client):
    v1, v2 = app.release("v1"), app.release("v2")
    app.promote("v1")
    first = deployed(app.deploy())
    assert [h["action"] for h in first["hosts"]] == ["deployed"]
    assert app.release_served() == "v1"

    app.promote("v2")
    with LoadLoop(app.url()) as load:
        load.wait_for(20, "v1")
        second = deployed(app.deploy())
        load.wait_for(20, "v2")
    assert load.failures == [], load.failures[:5]
    switch = next(e for e in second["events"] if e["step"] == "switch")
    after = [r for r in load.responses if r.started > epoch(switch["time"])]
    assert after and {r.release for r in after} == {"v2"}
    assert {r.release for r in load.responses if r.ended < epoch(switch["time"])} >= {"v1"}
    # Requests in flight when nginx reloaded were finished, not cut (none failed, and there were some).
    reload = epoch(next(e for e in second["events"] if e["step"] == "reload")["time"])
    assert [r for r in load.responses if r.path == "/slow" and r.started < reload < r.ended]

    assert second["version"] == v2 and second["digest"].startswith("sha256:")
    assert second["hosts"][0]["previous_version"] == v1
    running = containers_of(app, docker_client)
    assert [c.labels["dev.imagebuild.deploy.version"] for c in running] == [v2]
    assert running[0].attrs["Config"]["Image"].endswith("@" + second["digest"])
    assert "IMAGEBUILD_ENV=dev" in running[0].attrs["Config"]["Env"]


def test_a_release_that_never_becomes_healthy_is_removed_and_the_old_one_keeps_serving(app, docker_client):
    v2 = app.release("v2")
    v3 = app.release("v3", healthy=False)
    app.promote("v2")
    deployed(app.deploy())
    app.promote("v3")
    with LoadLoop(app.url()) as load:
        load.wait_for(10, "v2")
        failed = app.deploy()
        load.wait_for(len(load.responses) + 10)
    assert failed.returncode == 6, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and app.hosts[0] in error and v3 in error
    assert "HTTP/1.0 500" in error and "v2" not in error.split("removed")[0]
    assert f"{v2} keeps serving" in error
    assert json.loads(failed.stdout)["error"]["exit_code"] == 6
    steps = [e["step"] for e in events_from_stderr(failed.stderr)]
    assert "unhealthy" in steps and "switch" not in steps and "reload" not in steps
    assert load.failures == [] and {r.release for r in load.responses} == {"v2"}
    assert [c.labels["dev.imagebuild.deploy.version"] for c in containers_of(app, docker_client)] == [v2]
    host = app.status()["environments"][0]["hosts"][0]
    assert (host["version"], host["state"], host["front"]) == (v2, "running", "running")


def test_rollback_to_an_earlier_version_and_status_shows_what_runs_since_when(app):
    v1, v2 = app.release("v1"), app.release("v2")
    app.promote("v1")
    first = deployed(app.deploy())
    app.promote("v2")
    deployed(app.deploy())
    assert app.release_served() == "v2"

    back = deployed(app.deploy("dev", "--to", v1))
    assert back["rolled_back"] is True and back["version"] == v1 and back["digest"] == first["digest"]
    assert back["hosts"][0]["previous_version"] == v2
    assert app.release_served() == "v1"

    status = app.status()
    dev = next(env for env in status["environments"] if env["environment"] == "dev")
    assert dev["version"] == v1 and dev["digest"] == first["digest"]   # the tag moved back, on record
    [host] = dev["hosts"]
    assert host["host"] == app.hosts[0] and host["version"] == v1 and host["digest"] == first["digest"]
    assert host["since"] == next(e for e in back["events"] if e["step"] == "switch")["time"]
    assert (host["state"], host["front"], host["port"]) == ("running", "running", app.ports[0])
    prod = next(env for env in status["environments"] if env["environment"] == "prod")
    assert prod["hosts"] == []

    # Deploying again changes nothing; a version dev never ran is not a rollback.
    again = deployed(app.deploy())
    assert [h["action"] for h in again["hosts"]] == ["unchanged"]
    never = app.release("v9")
    refused = app.deploy("dev", "--to", never)
    assert refused.returncode == 2 and "never in dev" in refused.stderr


def test_a_failed_migration_stops_the_deploy_before_traffic_moves(app, docker_client):
    v1 = app.release("v1")
    v2 = app.release("v2", migrate_ok=False)
    app.promote("v1")
    first = deployed(app.deploy())
    assert [e["step"] for e in first["events"]].count("migrated") == 1
    app.promote("v2")
    failed = app.deploy()
    assert failed.returncode == 6, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert "migration `python3 /app/migrate.py`" in error and "exit 3" in error
    assert "column users.email already exists" in error and f"{v1} keeps serving" in error
    steps = [e["step"] for e in events_from_stderr(failed.stderr)]
    assert "migrate" in steps and not {"start", "healthy", "reload", "switch"} & set(steps)
    assert app.release_served() == "v1"
    assert [c.labels["dev.imagebuild.deploy.version"] for c in containers_of(app, docker_client)] == [v1]
