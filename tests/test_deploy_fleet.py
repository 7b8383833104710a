"""A fleet of four real sshd "hosts" (each its own SSH port, public port, nginx front and instance, one Docker
engine behind them all): a canary, then batches of two, under load on every host; a release that fails on the
third host is rolled back on the first two, and the whole fleet ends where it started."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.deploy_support import LoadLoop, cleanup, epoch, events_from_stderr, make_deploy_app
from tests.ssh_support import free_port, sshd_factory  # noqa: F401

pytestmark = pytest.mark.integration

HOSTS = 4
RATE = 50   # requests per second per load thread: steady traffic through every swap, leaving the hosts their CPU
FLEET_KEYS = {"batch": 2, "canary": 1, "canary_wait": "3s"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, debian_python_base, sshd_factory, registry, docker_client):  # noqa: F811
    servers = [sshd_factory() for _ in range(HOSTS)]
    app = make_deploy_app(tmp_path_factory.mktemp("fleet"), debian_python_base, servers,
                          [free_port() for _ in range(HOSTS)], fleet=FLEET_KEYS)
    app.release("v1")
    app.release("v2")
    app.promote("v1")
    # The first deploy takes all four hosts in one wave: one of them migrates, the others wait for it.
    committed = app.recipe.read_bytes()
    recipe = yaml.safe_load(committed)
    recipe["deploy"].update(batch=HOSTS, canary=0)
    del recipe["deploy"]["canary_wait"]
    app.recipe.write_text(yaml.safe_dump(recipe, sort_keys=False))
    try:
        first = app.deploy()
    finally:
        app.recipe.write_bytes(committed)
    assert first.returncode == 0, first.stderr
    events = json.loads(first.stdout)["events"]
    [migrated] = [e for e in events if e["step"] == "migrated"]
    assert len([e for e in events if e["step"] == "migrate"]) == 1
    starts = [e for e in events if e["step"] == "start"]
    assert len(starts) == HOSTS and all(epoch(migrated["time"]) <= epoch(e["time"]) for e in starts)
    yield app
    cleanup(app)


@contextlib.contextmanager
def loaded(app, release: str):
    """A load loop on every host's front, each seeing `release` before the block runs."""
    with contextlib.ExitStack() as stack:
        loops = [stack.enter_context(LoadLoop(app.url(index), paths=("/", "/slow"), rate=RATE))
                 for index in range(HOSTS)]
        for loop in loops:
            loop.wait_for(3, release)
        yield loops


def ensure_v2(app) -> None:
    app.promote("v2")
    done = app.deploy()
    assert done.returncode == 0, done.stderr


def by(events: list[dict], host: str, step: str) -> float:
    return epoch(next(e for e in events if e["host"] == host and e["step"] == step)["time"])


def test_a_canary_then_batches_of_two_lose_no_request_on_any_host(fleet):
    app = fleet
    app.promote("v2")
    with loaded(app, "v1") as loops:
        done = app.deploy()
        for loop in loops:
            loop.wait_for(5, "v2")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for index, loop in enumerate(loops):
        assert loop.failures == [], (app.hosts[index], loop.failures[:3])
        assert loop.responses[-1].release == "v2"
    assert [(h["host"], h["action"], h["version"]) for h in result["hosts"]] == \
        [(host, "deployed", app.versions["v2"]) for host in app.hosts]
    assert "1 canary host(s) watched for 3 s first, then 2 at a time" in done.stderr

    events = result["events"]
    waves = [e["message"] for e in events if e["step"] == "wave"]
    assert len(waves) == 3 and waves[0].endswith(app.hosts[0]) and waves[2].endswith(app.hosts[3])
    assert waves[1].endswith(f"{app.hosts[1]}, {app.hosts[2]}")
    a, b, c, d = app.hosts
    # The canary alone, watched, and only then the rest.
    canary_ok = by(events, "fleet", "canary-ok")
    assert by(events, a, "done") <= by(events, "fleet", "canary") <= canary_ok
    assert canary_ok - by(events, "fleet", "canary") >= 3
    assert canary_ok <= min(by(events, host, "pull") for host in (b, c, d))
    # The second wave's two hosts at the same time; the third wave after both finished.
    assert by(events, b, "pull") < by(events, c, "done") and by(events, c, "pull") < by(events, b, "done")
    assert max(by(events, b, "done"), by(events, c, "done")) <= by(events, d, "pull")
    assert [e["host"] for e in events if e["step"] == "migrate"] == [a]

    status = app.status()
    dev = status["environments"][0]
    assert dev["mixed"] is False and dev["serving"] == {result["digest"]: app.hosts}
    assert [(h["digest"], h["state"]) for h in dev["hosts"]] == [(result["digest"], "running")] * HOSTS


def test_a_release_failing_on_the_third_host_is_rolled_back_on_the_first_two(fleet, docker_client):
    app = fleet
    ensure_v2(app)
    v2 = app.versions["v2"]
    v3 = app.release("v3")
    app.promote("v3")
    # A fault on the third host only: its front's config cannot be written (a directory where the file goes).
    blocker = app.root.parent / "host-state" / f"{app.name}-dev-{app.ports[2]}" / "upstream.conf.new"
    blocker.mkdir()
    try:
        with loaded(app, "v2") as loops:
            failed = app.deploy()
            for loop in loops:
                loop.wait_for(len(loop.responses) + 3)
    finally:
        shutil.rmtree(blocker)
    assert failed.returncode == 6, failed.stderr
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {app.hosts[2]}: switch failed: nginx rejects the front's configuration"), error
    assert f"rolled back to what served before on 2 host(s): {app.hosts[0]}, {app.hosts[1]}" in error
    assert json.loads(failed.stdout)["error"]["exit_code"] == 6
    # Every request on every host was answered, through the swap to v3 and the swap back.
    for index, loop in enumerate(loops):
        assert loop.failures == [], (app.hosts[index], loop.failures[:3])
    served = [{r.release for r in loop.responses} for loop in loops]
    assert "v3" in served[0] and "v3" in served[1] and served[2] == served[3] == {"v2"}

    for index in range(HOSTS):
        assert app.release_served(index) == "v2"
    dev = app.status()["environments"][0]
    assert dev["mixed"] is False
    assert [h["version"] for h in dev["hosts"]] == [v2] * HOSTS
    for host in dev["hosts"][:2]:
        rolled = host["rolled_back"]
        assert rolled["from_version"] == v3 and rolled["reason"].startswith(f"{app.hosts[2]}: switch failed")
    assert [h["rolled_back"] for h in dev["hosts"][2:]] == [None, None]
    running = docker_client.containers.list(filters={"label": f"dev.imagebuild.deploy.app={app.name}"})
    assert sorted(c.labels["dev.imagebuild.deploy.version"] for c in running) == [v2] * HOSTS

    # One host moved on by hand: the environment is mixed, and status says so in both forms.
    one = app.deploy("dev", "--host", app.hosts[3])
    assert one.returncode == 0, one.stderr
    dev = app.status()["environments"][0]
    assert dev["mixed"] is True and dev["serving"][app.digests["v3"]] == [app.hosts[3]]
    text = imagebuild("status", "--recipe", app.recipe, "--store", app.store, *app.ssh_args())
    assert text.returncode == 0, text.stderr
    assert f"MIXED: 3 host(s) on {v2} ({app.digests['v2'][:19]}), 1 host(s) on {v3}" in text.stdout
    assert f"rolled back from {v3}" in text.stdout


def test_a_canary_that_stops_serving_is_rolled_back_before_any_other_host_moves(fleet, docker_client):
    app = fleet
    for label in ("v2", "v3"):
        if label not in app.versions:
            app.release(label)
    v3 = app.versions["v3"]
    app.promote("v3")
    before = {h["host"]: h["version"] for h in app.status()["environments"][0]["hosts"]}
    assert before[app.hosts[0]] != v3
    # The canary's new container dies while the deploy watches it (the moment the watch begins).
    deploy = subprocess.Popen([sys.executable, "-m", "imagebuild", "deploy", "dev", "--recipe", str(app.recipe),
                               "--store", str(app.store), *map(str, app.ssh_args())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in deploy.stderr:
        seen.append(line)
        if " fleet canary: " in line:
            started = next(e for e in events_from_stderr("".join(seen))
                           if e["host"] == app.hosts[0] and e["step"] == "start")
            docker_client.containers.get(started["message"].split()[0]).kill()
    deploy.wait(timeout=300)
    stderr = "".join(seen)
    assert deploy.returncode == 6, stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {app.hosts[0]}: canary failed: the canary {v3} stopped serving: "), error
    assert error.endswith(f"rolled back to what served before on 1 host(s): {app.hosts[0]}"), error
    events = events_from_stderr(stderr)
    assert not [e for e in events if e["host"] in app.hosts[1:] and e["step"] not in ("connect", "check")]
    assert "canary-ok" not in [e["step"] for e in events]
    after = {h["host"]: h for h in app.status()["environments"][0]["hosts"]}
    assert {host: row["version"] for host, row in after.items()} == before
    assert after[app.hosts[0]]["state"] == "running"
    assert after[app.hosts[0]]["rolled_back"]["reason"].startswith(f"{app.hosts[0]}: canary failed")
