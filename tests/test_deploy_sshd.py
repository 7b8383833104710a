"""The sshd fixture itself: a real server that trusts only the tests' key and presents its own host key."""

from __future__ import annotations

import paramiko
import pytest

from tests.conftest import run
from tests.ssh_support import ssh_home, sshd, sshd_factory, write_known_hosts  # noqa: F401

pytestmark = pytest.mark.integration


def strict_client(known_hosts) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def test_paramiko_logs_in_with_the_client_key_and_runs_docker(sshd, tmp_path):
    client = strict_client(sshd.write_known_hosts(tmp_path / "known_hosts"))
    client.connect(sshd.host, sshd.port, username=sshd.user, key_filename=str(sshd.client_key),
                   allow_agent=False, look_for_keys=False)
    try:
        _, stdout, _ = client.exec_command("docker version --format '{{.Server.Version}}'")
        assert stdout.channel.recv_exit_status() == 0
        assert stdout.read().strip()
    finally:
        client.close()


def test_a_host_missing_from_known_hosts_is_rejected(sshd, tmp_path):
    (tmp_path / "known_hosts").write_text("")
    client = strict_client(tmp_path / "known_hosts")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(sshd.host, sshd.port, username=sshd.user, key_filename=str(sshd.client_key),
                       allow_agent=False, look_for_keys=False)


def test_two_servers_have_their_own_ports_and_host_keys(sshd_factory, tmp_path):
    a, b = sshd_factory(), sshd_factory()
    assert a.port != b.port and a.host_key_line != b.host_key_line
    known = write_known_hosts(tmp_path / "known_hosts", a, b)
    # OpenSSH's own client agrees with the known_hosts lines, and a password is never offered.
    for server in (a, b):
        done = run(["ssh", "-p", str(server.port), "-i", str(server.client_key), "-o", "BatchMode=yes",
                    "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "GlobalKnownHostsFile=/dev/null", f"{server.user}@{server.host}", "echo", "ok"])
        assert done.returncode == 0, done.stderr + server.log
        assert done.stdout.strip() == "ok"
    # A key the server never authorized is refused.
    from tests.ssh_support import keygen
    stranger = keygen(tmp_path / "stranger", "stranger")
    done = run(["ssh", "-p", str(a.port), "-i", str(stranger), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                f"{a.user}@{a.host}", "true"])
    assert done.returncode == 255 and "Permission denied" in done.stderr


def test_the_docker_sdk_reaches_the_engine_over_ssh(sshd, tmp_path, monkeypatch):
    import docker

    monkeypatch.setenv("HOME", str(ssh_home(tmp_path / "home", sshd)))
    client = docker.DockerClient(base_url=sshd.url, use_ssh_client=False, timeout=30)
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"]
    finally:
        client.close()


def test_the_docker_sdk_refuses_a_server_it_does_not_know(sshd, tmp_path, monkeypatch):
    import docker

    home = ssh_home(tmp_path / "home", sshd)
    (home / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        docker.DockerClient(base_url=sshd.url, use_ssh_client=False, timeout=30)


def test_a_deploy_session_sends_its_small_packets_at_once(sshd, tmp_path):
    """Nagle's algorithm held a channel request until the host's delayed ACK: 40 ms on every command."""
    import socket

    from imagebuild.recipe.hosts import parse_host
    from imagebuild.release.deploy.ssh import SshOptions, SshSession

    options = SshOptions(sshd.write_known_hosts(tmp_path / "known_hosts"), (sshd.client_key,), use_agent=False)
    with SshSession(parse_host(sshd.url), options) as session:
        sock = session.client.get_transport().sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
