"""Real OpenSSH servers on loopback, as deploy targets for the tests.

Each server is a genuine /usr/sbin/sshd listening on 127.0.0.1 on a free port,
with its own ed25519 host key made by ssh-keygen, and one client key pair (made
by the tests, shared by every server of the session) authorized for the current
user (root on the test machines). Behind each server is this machine's Docker
engine, so `ssh://root@127.0.0.1:PORT` is a Docker host the way a remote
machine would be.

Use it from a test module:

    from tests.ssh_support import sshd, sshd_factory  # noqa: F401  (the fixtures)

    def test_something(sshd):                  # one server for the whole session
        sshd.url                               # "ssh://root@127.0.0.1:40123"
        sshd.host, sshd.port, sshd.user        # "127.0.0.1", 40123, "root"
        sshd.client_key                        # Path of the private key (no passphrase)
        sshd.host_key_line                     # "ssh-ed25519 AAAA..." (the server's public key)
        sshd.known_hosts_line                  # "[127.0.0.1]:40123 ssh-ed25519 AAAA..."
        sshd.write_known_hosts(path)           # a known_hosts file trusting this server only

    def test_two(sshd_factory):
        a, b = sshd_factory(), sshd_factory()  # two servers, two host keys, two ports
        write_known_hosts(path, a, b)          # one known_hosts trusting both

    # The Docker SDK's paramiko transport reads ~/.ssh/known_hosts (RejectPolicy for
    # unknown hosts) and ~/.ssh/config: give it a HOME that trusts the servers.
    home = ssh_home(tmp_path / "home", sshd)   # HOME/.ssh/{known_hosts,config,id_ed25519}
    monkeypatch.setenv("HOME", str(home))
    docker.DockerClient(base_url=sshd.url, use_ssh_client=False).ping()

Servers started by the factory are stopped at the end of the session; a test may
stop one earlier with `server.stop()` (for example, to see a refused connection).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytest
from tests.ports import free_port

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"
START_ATTEMPTS = 5          # a free port found by bind() may be taken before sshd binds it
READY_POLLS = 200           # x 0.05 s: sshd is listening within milliseconds on an idle machine


def keygen(path: Path, comment: str) -> Path:
    """An ed25519 key pair without a passphrase at `path` and `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    return path




@dataclass
class SshServer:
    """One running sshd; see the module docstring for the attributes tests use."""

    directory: Path
    port: int
    user: str
    client_key: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    host: str = HOST

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def host_key_line(self) -> str:
        """The server's public host key as `TYPE BASE64` (no comment)."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"{kind} {blob}"

    @property
    def known_hosts_line(self) -> str:
        """The line OpenSSH and paramiko expect for a non-22 port: `[HOST]:PORT TYPE BASE64`."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    @property
    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def write_known_hosts(self, path: Path) -> Path:
        return write_known_hosts(path, self)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def write_known_hosts(path: Path, *servers: SshServer) -> Path:
    """A known_hosts file trusting exactly these servers (replacing the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(server.known_hosts_line + "\n" for server in servers))
    return path


def ssh_home(home: Path, *servers: SshServer) -> Path:
    """A HOME whose ~/.ssh trusts `servers` and logs in with their client key, for tools that read
    ~/.ssh (the Docker SDK's paramiko transport, the ssh command)."""
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_known_hosts(dot_ssh / "known_hosts", *servers)
    keys = sorted({str(server.client_key) for server in servers})
    identity = dot_ssh / "id_ed25519"
    if keys:
        shutil.copyfile(keys[0], identity)
        shutil.copyfile(keys[0] + ".pub", str(identity) + ".pub")
        identity.chmod(0o600)
    lines = [f"Host {HOST}", f"  IdentityFile {identity}", "  IdentitiesOnly yes", ""]
    (dot_ssh / "config").write_text("\n".join(lines))
    return home


class SshServers:
    """Starts sshd servers that share one client key; stops them all on `close()`."""

    def __init__(self, root: Path, user: str | None = None):
        self.root = root
        self.user = user or getpass.getuser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.client_key = keygen(root / "client_ed25519", "imagebuild-tests-client")
        self.servers: list[SshServer] = []

    def start(self) -> SshServer:
        if not os.access(SSHD, os.X_OK):
            pytest.fail(f"{SSHD} is missing; install openssh-server (`make setup`)")
        # sshd refuses to start without its privilege-separation directory; a fresh container lacks it.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        directory = self.root / f"server-{len(self.servers) + 1}"
        directory.mkdir()
        keygen(directory / "ssh_host_ed25519_key", f"imagebuild-tests-host-{len(self.servers) + 1}")
        shutil.copyfile(str(self.client_key) + ".pub", directory / "authorized_keys")
        last_log = ""
        for _ in range(START_ATTEMPTS):
            server = SshServer(directory, free_port(), self.user, self.client_key)
            self._configure(server)
            log = open(directory / "sshd.log", "w")
            server.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            if self._wait_listening(server):
                self.servers.append(server)
                return server
            last_log = server.log
            server.stop()
        pytest.fail(f"sshd did not start after {START_ATTEMPTS} attempts; last log:\n{last_log}")

    @staticmethod
    def _configure(server: SshServer) -> None:
        d = server.directory
        (d / "sshd_config").write_text("\n".join([
            f"Port {server.port}",
            f"ListenAddress {server.host}",
            f"HostKey {server.host_key}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {server.user}",
            "MaxSessions 64",
            "MaxStartups 64",
            "LogLevel VERBOSE",
            # bash started by sshd sources ~/.bashrc before each command unless it is a nested shell; the
            # test user's (a developer's pyenv or nvm set-up, say) cost 0.15 s of CPU per command, and a
            # fleet deploy runs dozens. A deploy host's shell start-up is not what the tests measure.
            "SetEnv SHLVL=1",
            "",
        ]))

    @staticmethod
    def _wait_listening(server: SshServer) -> bool:
        for _ in range(READY_POLLS):
            if not server.running():
                return False
            try:
                with socket.create_connection((server.host, server.port), timeout=1) as conn:
                    if conn.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory) -> Iterable[Callable[[], SshServer]]:
    """Call it to start another real sshd on 127.0.0.1 (all stopped at the end of the session)."""
    servers = SshServers(tmp_path_factory.mktemp("sshd"))
    yield servers.start
    servers.close()


@pytest.fixture(scope="session")
def sshd(sshd_factory) -> SshServer:
    """One real sshd for the whole session."""
    return sshd_factory()
