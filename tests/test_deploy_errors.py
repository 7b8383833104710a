"""Deploy mistakes a user can make get one line and exit 2, before any host is touched."""

from __future__ import annotations

import pytest
import yaml

from imagebuild.recipe.hosts import parse_host, parse_hosts
from imagebuild.errors import UserError
from tests.conftest import imagebuild
from tests.ssh_support import free_port


def recipe(tmp_path, **overrides):
    data = {"name": "web", "registry": "127.0.0.1:5000/deploy-errors",
            "server": {"kind": "command", "command": ["./serve"]},
            "environments": [{"name": "dev", "hosts": ["ssh://root@127.0.0.1:22"]}, {"name": "prod"}]}
    data.update(overrides)
    path = tmp_path / "imagebuild.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_host_urls():
    host = parse_host("ssh://deployer@web-1.example.test:2222?port=8081")
    assert (host.user, host.address, host.ssh_port, host.public_port) == ("deployer", "web-1.example.test", 2222, 8081)
    assert parse_host("ssh://root@10.0.0.7").ssh_port == 22 and parse_host("ssh://root@10.0.0.7").public_port is None
    for bad, says in (("root@host", "not an ssh:// URL"), ("http://host", "not an ssh:// URL"),
                      ("ssh://root@host/srv", "has a path"), ("ssh://root@host?port=http", "?port= must be"),
                      ("ssh://root@host?weight=2", "unknown setting 'weight'"), ("ssh://root@host:99999", "bad port")):
        with pytest.raises(UserError, match=says.replace("?", r"\?")):
            parse_host(bad)
    with pytest.raises(UserError, match="repeats"):
        parse_hosts(["ssh://a@h:22", "ssh://b@h"])


def test_a_password_in_a_host_url_is_refused_and_never_printed(tmp_path):
    path = recipe(tmp_path, environments=[{"name": "dev", "hosts": ["ssh://root:hunter2@127.0.0.1"]}])
    done = imagebuild("deploy", "dev", "--recipe", path)
    assert done.returncode == 2
    line = one_error_line(done)
    assert "password" in line and "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("args, says", [
    (["staging"], "no environment 'staging'"),
    (["prod"], "environment prod has no hosts"),
    (["dev", "--host", "web-1"], "--host 'web-1' is not an ssh:// URL"),
    (["dev", "--identity", "/nonexistent/key"], "identity /nonexistent/key is not a file"),
])
def test_bad_targets_and_options(tmp_path, args, says):
    done = imagebuild("deploy", *args, "--recipe", recipe(tmp_path))
    assert done.returncode == 2
    assert says in one_error_line(done)


def test_deploy_needs_a_registry(tmp_path):
    path = recipe(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["registry"]
    path.write_text(yaml.safe_dump(data))
    done = imagebuild("deploy", "dev", "--recipe", path, "--store", tmp_path / "store")
    assert done.returncode == 2 and "deploy needs a registry" in one_error_line(done)


@pytest.mark.integration
def test_nothing_promoted_yet(tmp_path, registry):
    done = imagebuild("deploy", "dev", "--recipe", recipe(tmp_path, registry=f"{registry}/never-promoted"))
    assert done.returncode == 2 and "nothing was promoted to dev" in one_error_line(done)


@pytest.mark.integration
def test_bad_deploy_settings_name_their_key(tmp_path, registry):
    for deploy, key in (({"port": 70000}, "deploy.port"), ({"state_dir": "relative/dir"}, "deploy.state_dir"),
                        ({"listen": "0.0.0.0; evil"}, "deploy.listen"), ({"drain": -1}, "deploy.drain")):
        path = recipe(tmp_path, deploy=deploy)
        done = imagebuild("deploy", "dev", "--recipe", path, "--host", f"ssh://root@127.0.0.1:{free_port()}")
        assert done.returncode == 2, done.stderr
        assert key in one_error_line(done)


@pytest.mark.parametrize("speaks", ["nothing", "http"])
@pytest.mark.integration
def test_status_notes_a_host_it_cannot_read_and_still_answers(tmp_path, registry, speaks):
    # A closed port, or a port that answers HTTP instead of SSH (the registry's).
    host = f"ssh://root@127.0.0.1:{free_port() if speaks == 'nothing' else registry.rpartition(':')[2]}"
    path = recipe(tmp_path, registry=f"{registry}/status-unreachable",
                  environments=[{"name": "dev", "hosts": [host]}])
    done = imagebuild("status", "--recipe", path, "--store", tmp_path / "store", "--json")
    assert done.returncode == 0, done.stderr
    import json
    [dev] = json.loads(done.stdout)["environments"]
    [row] = dev["hosts"]
    assert row["host"] == host and "cannot reach" in row["note"] and row["version"] is None
    plain = imagebuild("status", "--recipe", path, "--store", tmp_path / "store")
    assert plain.returncode == 0 and host in plain.stdout and "cannot reach" in plain.stdout
    assert plain.stderr == "" and done.stderr == ""


def test_a_bad_host_url_is_a_recipe_error_when_the_recipe_loads(tmp_path):
    # prod's hosts are wrong: deploying dev, or a command that never deploys, still says so, at the key.
    path = recipe(tmp_path, environments=[{"name": "dev", "hosts": ["ssh://root@127.0.0.1:22"]},
                                          {"name": "prod", "hosts": ["ssh://deployer@web-1", "web-2:22"]}])
    for args in (["deploy", "dev"], ["status", "--no-hosts"]):
        done = imagebuild(*args, "--recipe", path, "--store", tmp_path / "store")
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert "environments[1].hosts[1]" in line and "'web-2:22' is not an ssh:// URL" in line, line
    twice = recipe(tmp_path, environments=[{"name": "dev", "hosts": ["ssh://a@h:22", "ssh://b@h"]}])
    done = imagebuild("status", "--no-hosts", "--recipe", twice, "--store", tmp_path / "store")
    assert done.returncode == 2 and "environments[0].hosts" in one_error_line(done) and "repeats" in done.stderr


def test_status_behind_the_promoted_digest_advises_what_helps():
    # After a refused release the host still runs the old version: `imagebuild deploy` alone would only
    # retry the refused one, so status names the two ways out as well.
    from imagebuild.cli.everyday import host_line as _host_line
    from imagebuild.release.deploy.status import HostStatus

    host = HostStatus(environment="prod", host="ssh://deploy@web-1", port=8080, version="v2",
                      digest="sha256:" + "2" * 64, since="2026-01-01T00:00:00Z", container="hello-prod-blue",
                      state="running", health="healthy", front="running")
    line = _host_line(host, "sha256:" + "3" * 64, "v3")
    assert "behind the promoted v3" in line
    assert "imagebuild deploy prod --to v2" in line and "promote a fixed version" in line
    assert "run `imagebuild deploy`" not in line
    assert "behind" not in _host_line(host, host.digest, "v2")



def test_status_reads_every_environments_hosts_at_once_and_keeps_their_order(tmp_path, monkeypatch):
    """Hosts that stall their SSH handshake (they accept, then say nothing), with a 1 s handshake
    timeout: read one after another, three take 3 s; at once, about 1 s. Rows stay in recipe order."""
    import socket
    import threading
    import time

    from imagebuild.recipe.loader import load_recipe
    from imagebuild.release.deploy import ssh
    from imagebuild.release.deploy.status import hosts_status

    monkeypatch.setattr(ssh, "CONNECT_TIMEOUT", 1.0)
    listeners, held, stop = [], [], threading.Event()

    def accept_and_stall(listener):
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    for _ in range(3):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listeners.append(listener)
        threading.Thread(target=accept_and_stall, args=(listener,), daemon=True).start()
    urls = [f"ssh://root@127.0.0.1:{listener.getsockname()[1]}" for listener in listeners]
    loaded = load_recipe(recipe(tmp_path, environments=[{"name": "dev", "hosts": urls[:2]},
                                                        {"name": "prod", "hosts": urls[2:]}]))
    wanted = {"dev": parse_hosts(urls[:2], "dev"), "prod": parse_hosts(urls[2:], "prod")}
    options = ssh.SshOptions(known_hosts=tmp_path / "known_hosts", use_agent=False)
    try:
        start = time.monotonic()
        found = hosts_status(loaded, wanted, options)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        for sock in held + listeners:
            sock.close()
    assert [row.host for row in found["dev"]] == urls[:2] and [row.host for row in found["prod"]] == urls[2:]
    assert all(row.note for rows in found.values() for row in rows)
    assert elapsed < 2.5, f"{elapsed:.1f}s for 3 stalled hosts"
