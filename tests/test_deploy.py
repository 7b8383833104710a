"""`imagebuild deploy` against real sshd servers, the real Docker engine behind them and the real registry:
blue/green behind nginx under load, a failing health check, rollback, migrations, two hosts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request

import pytest

from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.deploy_support import VARIABLE, LoadLoop, cleanup, epoch, events_from_stderr, make_deploy_app
from tests.ssh_support import free_port, sshd, sshd_factory  # noqa: F401

pytestmark = pytest.mark.integration


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
    # The environment in the variable the image's launcher reads (renamed in the recipe), and the digest
    # that was deployed, as the launcher's start-up line shows it.
    env = running[0].attrs["Config"]["Env"]
    assert f"{VARIABLE}=dev" in env and not any(e.startswith("IMAGEBUILD_ENV=") for e in env)
    assert f"IMAGEBUILD_IMAGE_DIGEST={second['digest']}" in env
    assert json.loads(urllib.request.urlopen(app.url(), timeout=10).read())["environment"] == "dev"
    started = [line for line in running[0].logs().decode().splitlines() if " environment=dev " in line]
    assert len(started) == 1 and f" digest={second['digest']} " in started[0], started
    assert running[0].attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert running[0].attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"


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

    # A release that exits at start: its exit code and the last line of its log are what the check saw.
    v4 = app.release("v4", crash=True)
    app.promote("v4")
    crashed = app.deploy()
    assert crashed.returncode == 6
    error = crashed.stderr.strip().splitlines()[-1]
    assert v4 in error and "exited with code 1" in error and "cannot reach the database at db:5432" in error
    assert f"{v2} keeps serving" in error and app.release_served() == "v2"
    assert [c.labels["dev.imagebuild.deploy.version"] for c in containers_of(app, docker_client)] == [v2]


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
    # "since" is the moment the front was told to send traffic there: between the reload and the switch events.
    reload, switch = (next(e for e in back["events"] if e["step"] == step)["time"] for step in ("reload", "switch"))
    assert host["since"] == back["hosts"][0]["since"] and epoch(host["since"]) <= epoch(reload) <= epoch(switch)
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


def test_two_hosts_are_deployed_one_at_a_time(tmp_path, debian_python_base, sshd_factory, registry,  # noqa: F811
                                              docker_client):
    servers = [sshd_factory(), sshd_factory()]
    app = make_deploy_app(tmp_path, debian_python_base, servers, [free_port(), free_port()])
    try:
        v1, v2 = app.release("v1"), app.release("v2")
        app.promote("v1")
        deployed(app.deploy())
        app.promote("v2")
        with LoadLoop(app.url(0)) as first, LoadLoop(app.url(1)) as second:
            first.wait_for(5, "v1")
            second.wait_for(5, "v1")
            result = deployed(app.deploy())
            first.wait_for(5, "v2")
            second.wait_for(5, "v2")
        assert first.failures == [] and second.failures == []
        assert [h["host"] for h in result["hosts"]] == app.hosts
        assert [h["version"] for h in result["hosts"]] == [v2, v2]

        # One host at a time: every rollout step of the first host comes before any of the second's,
        # in the order the command reported them and by their timestamps.
        rollout = [e for e in result["events"] if e["step"] not in ("connect", "check", "known-hosts", "wave")]
        hosts_in_order = [e["host"] for e in rollout]
        boundary = hosts_in_order.index(app.hosts[1])
        assert set(hosts_in_order[:boundary]) == {app.hosts[0]} and set(hosts_in_order[boundary:]) == {app.hosts[1]}
        first_done = next(e for e in rollout if e["host"] == app.hosts[0] and e["step"] == "done")
        assert epoch(first_done["time"]) <= epoch(rollout[boundary]["time"])
        for host in app.hosts:
            steps = [e["step"] for e in rollout if e["host"] == host]
            assert steps[0] == "pull" and steps[-3:] == ["switch", "stop", "done"]
        # The migration ran once, on the first host, before any traffic moved.
        assert [e["host"] for e in rollout if e["step"] == "migrate"] == [app.hosts[0]]
        assert app.release_served(0) == app.release_served(1) == "v2"

        # Each host has its own instance: its own front, container and state.
        hosts = app.status()["environments"][0]["hosts"]
        assert [(h["port"], h["version"], h["state"]) for h in hosts] == [(p, v2, "running") for p in app.ports]
        assert len({h["container"] for h in hosts}) == 2
        assert len(containers_of(app, docker_client)) == 2
    finally:
        cleanup(app)


def host_key_fingerprint(server) -> str:
    done = subprocess.run(["ssh-keygen", "-lf", str(server.host_key) + ".pub"], capture_output=True, text=True)
    return done.stdout.split()[1]


def test_an_unknown_host_is_refused_until_its_key_is_accepted_and_a_changed_key_always(app, sshd):  # noqa: F811
    app.release("v1")
    app.promote("v1")
    app.known_hosts.write_text("")
    refused = app.deploy()
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert f"[127.0.0.1]:{sshd.port} is not in {app.known_hosts}" in error
    assert host_key_fingerprint(sshd) in error and "--accept-new-host-key" in error
    assert app.known_hosts.read_text() == ""
    assert "pull" not in [e["step"] for e in events_from_stderr(refused.stderr)]

    accepted = deployed(app.deploy("dev", "--accept-new-host-key"))
    assert app.known_hosts.read_text() == sshd.known_hosts_line + "\n"
    note = next(e for e in accepted["events"] if e["step"] == "known-hosts")
    assert host_key_fingerprint(sshd) in note["message"]
    assert app.release_served() == "v1"

    # A different key for the same host is an attack until proven otherwise: refused even with the flag.
    from tests.ssh_support import keygen
    other = keygen(app.root.parent / "other_host_key", "other")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    app.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    changed = app.deploy("dev", "--accept-new-host-key")
    assert changed.returncode == 6 and "host key CHANGED" in changed.stderr, changed.stderr


def test_the_agent_authenticates_when_no_key_file_is_given(app, sshd, tmp_path):  # noqa: F811
    app.release("v1")
    app.promote("v1")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            subprocess.run(["sleep", "0.05"])
        env = {"SSH_AUTH_SOCK": str(socket_path), "HOME": str(tmp_path / "empty-home")}
        added = subprocess.run(["ssh-add", str(app.identity)], env=env, capture_output=True, text=True)
        assert added.returncode == 0, added.stderr
        from tests.conftest import imagebuild
        without_agent = imagebuild("deploy", "dev", "--recipe", app.recipe, "--store", app.store,
                                   "--known-hosts", app.known_hosts, "--no-agent", env=env)
        assert without_agent.returncode == 2 and "no key to offer" in without_agent.stderr
        done = imagebuild("deploy", "dev", "--recipe", app.recipe, "--store", app.store, "--json",
                          "--known-hosts", app.known_hosts, env=env)
        assert deployed(done)["hosts"][0]["action"] == "deployed"
        assert app.release_served() == "v1"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_a_second_deploy_of_the_same_instance_waits_its_turn(app, sshd):  # noqa: F811
    app.release("v1")
    app.promote("v1")
    lock = app.root.parent / "host-state" / f"{app.name}-dev-{app.ports[0]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    # Its own process group: flock's child holds the lock too, and must go with it.
    holder = subprocess.Popen(["flock", str(lock), "sleep", "600"], start_new_session=True)
    try:
        for _ in range(100):   # until flock holds it
            if subprocess.run(["flock", "--nonblock", str(lock), "true"]).returncode != 0:
                break
            subprocess.run(["sleep", "0.05"])
        busy = app.deploy()
        assert busy.returncode == 6
        assert f"error: {app.hosts[0]}: check failed: another deploy of" in busy.stderr
        assert "nothing was changed on any host" in busy.stderr
        assert "pull" not in [e["step"] for e in events_from_stderr(busy.stderr)]
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=10)
    assert deployed(app.deploy())["hosts"][0]["action"] == "deployed"
    # The lock went with the finished deploy's SSH session.
    assert subprocess.run(["flock", "--nonblock", str(lock), "true"]).returncode == 0


def test_a_public_port_already_taken_stops_the_first_deploy_and_leaves_nothing_behind(app, docker_client):
    import socket

    app.release("v1")
    app.promote("v1")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", app.ports[0]))
        squatter.listen(1)
        failed = app.deploy()
    assert failed.returncode == 6
    error = failed.stderr.strip().splitlines()[-1]
    assert f"cannot start on 127.0.0.1:{app.ports[0]}" in error and "Address already in use" in error
    assert "set deploy.port" in error
    assert containers_of(app, docker_client) == []
    assert deployed(app.deploy())["hosts"][0]["action"] == "deployed"
    assert app.release_served() == "v1"


def test_after_a_reboot_deploy_brings_the_front_back_without_a_new_container(app, docker_client):
    v1 = app.release("v1")
    app.promote("v1")
    first = deployed(app.deploy())
    container = first["hosts"][0]["container"]
    # What a reboot does: the engine restarts the container (its loopback port may change), nothing
    # starts the front.
    front = app.root.parent / "host-state" / f"{app.name}-dev-{app.ports[0]}"
    subprocess.run(["nginx", "-p", str(front), "-c", str(front / "nginx.conf"), "-e", str(front / "error.log"),
                    "-s", "quit"], check=True, capture_output=True)
    docker_client.containers.get(container).restart(timeout=10)
    for _ in range(100):   # until the old master has exited
        if not (front / "nginx.pid").exists():
            break
        subprocess.run(["sleep", "0.05"])
    host = app.status()["environments"][0]["hosts"][0]
    assert (host["version"], host["front"], host["state"]) == (v1, "down", "running")

    again = deployed(app.deploy())
    assert [h["action"] for h in again["hosts"]] == ["unchanged"]
    assert again["hosts"][0]["container"] == container
    steps = [e["step"] for e in again["events"]]
    assert "front" in steps and "pull" not in steps and "start" not in steps
    assert app.release_served() == "v1"
    assert app.status()["environments"][0]["hosts"][0]["front"] == "running"


def test_secrets_come_from_the_hosts_env_file_and_never_appear_in_the_output(tmp_path, debian_python_base,  # noqa: F811
                                                                             sshd, registry, docker_client):
    env_file = tmp_path / "host-secrets" / "dev.env"
    app = make_deploy_app(tmp_path, debian_python_base, [sshd], [free_port()], env_file=str(env_file))
    try:
        app.release("v1")
        app.promote("v1")
        missing = app.deploy()
        assert missing.returncode == 6
        assert f"deploy.env_file {env_file} is not a readable file" in missing.stderr
        assert "pull" not in [e["step"] for e in events_from_stderr(missing.stderr)]

        # A file without the secret: the launcher refuses to start the migration, and the deploy says so.
        env_file.parent.mkdir()
        env_file.write_text("OTHER=1\n")
        refused = app.deploy()
        assert refused.returncode == 6
        error = refused.stderr.strip().splitlines()[-1]
        assert "failed (exit 64)" in error and "APP_SECRET" in error and app.hosts[0] in error
        assert containers_of(app, docker_client) == []

        secret = "s3cr3t-" + "x" * 25
        env_file.write_text(f"APP_SECRET={secret}\n")
        done = app.deploy()
        result = deployed(done)
        assert secret not in done.stdout + done.stderr
        assert "migrated" in [e["step"] for e in result["events"]]
        with urllib.request.urlopen(app.url(), timeout=10) as response:
            assert json.loads(response.read())["secret_length"] == len(secret)
        # The launcher refuses to start without the secret; the host's file is what provided it.
        [container] = containers_of(app, docker_client)
        assert f"APP_SECRET={secret}" in container.attrs["Config"]["Env"]
        assert all(secret not in value for value in container.labels.values())
    finally:
        cleanup(app)
