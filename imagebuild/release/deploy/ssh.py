"""One authenticated, host-key-verified SSH session per host (paramiko), and commands run over it.

Host keys are checked against a known_hosts file. An unknown host is refused
unless the caller accepts new keys, in which case the key is appended to that
file (and reported with its fingerprint). A host whose key changed is always
refused: that is what a man-in-the-middle looks like.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import paramiko

from imagebuild.recipe.hosts import Host
from imagebuild.errors import AuthError, DeployError, UserError

# paramiko logs a failed handshake with a traceback from its transport thread; with no handler anywhere,
# Python would print it on stderr next to our one-line error. The error itself reaches the caller anyway.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CONNECT_TIMEOUT = 15
DEFAULT_COMMAND_TIMEOUT = 120
POLL = 0.005  # seconds between looks at a quiet channel
LOCK_HELD = "imagebuild-lock-held"
LOCK_TAKEN = 75  # flock's exit code when another process holds the lock


class UnknownHostKeyError(UserError):
    """The host is not in known_hosts and --accept-new-host-key was not given."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: SHA256:base64 without padding, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class SshOptions:
    """How to authenticate and whom to trust; nothing here is ever printed except paths."""

    known_hosts: Path
    identities: tuple[Path, ...] = ()      # private key files; none: the agent and ~/.ssh/id_*
    accept_new_host_key: bool = False
    use_agent: bool = True


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    def __init__(self, options: SshOptions, on_new: Callable[[str], None]):
        self.options = options
        self.on_new = on_new

    def missing_host_key(self, client, hostname, key) -> None:
        where = self.options.known_hosts
        if not self.options.accept_new_host_key:
            raise UnknownHostKeyError(
                f"host {hostname} is not in {where}; it offers the {key.get_name()} key {fingerprint(key)}",
                hint="check that fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
                     "then run again with --accept-new-host-key to record it")
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(where, "a") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # two deploys recording keys at once must not interleave
            out.write(line)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.on_new(f"recorded the new host key of {hostname} ({key.get_name()} {fingerprint(key)}) in {where}")


@dataclass
class Result:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def said(self, limit: int = 300) -> str:
        """The last meaningful line of output, for an error message."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1][:limit]
        return "no output"


class SshSession:
    """A connected host. Commands are argv lists, quoted here, so no value is ever parsed by the shell."""

    def __init__(self, host: Host, options: SshOptions, on_note: Callable[[str], None] = lambda _: None):
        self.host = host
        self.client = paramiko.SSHClient()
        known = options.known_hosts
        if known.exists():
            try:
                self.client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException) as exc:
                raise UserError(f"cannot read known_hosts file {known}: {exc}",
                                hint="fix the file or pass --known-hosts PATH") from exc
        self.client.set_missing_host_key_policy(_KnownHostsPolicy(options, on_note))
        self._held: list[paramiko.Channel] = []
        self._connect(options)

    def _connect(self, options: SshOptions) -> None:
        host = self.host
        try:
            self.client.connect(host.address, host.ssh_port, username=host.user,
                                key_filename=[str(p) for p in options.identities] or None,
                                allow_agent=options.use_agent, look_for_keys=not options.identities,
                                timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                                auth_timeout=CONNECT_TIMEOUT)
        except UnknownHostKeyError:
            self.client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            self.client.close()
            raise DeployError(
                f"{host}: the host key CHANGED: known_hosts has {fingerprint(exc.expected_key)}, the host offers "
                f"{fingerprint(exc.key)}; refusing to connect",
                hint=f"if the host was really reinstalled, remove its line from {options.known_hosts}") from exc
        except paramiko.PasswordRequiredException as exc:
            self.client.close()
            raise AuthError(f"{host}: the private key is protected by a passphrase",
                            hint="add it to ssh-agent (ssh-add KEY) and run again") from exc
        except paramiko.AuthenticationException as exc:
            self.client.close()
            raise AuthError(f"{host}: the host refused every key offered for user {host.user}",
                            hint="pass --identity KEY, or load the key into ssh-agent") from exc
        except (OSError, socket.timeout, paramiko.SSHException) as exc:
            self.client.close()
            if isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc):
                raise AuthError(f"{host}: no key to offer for user {host.user}",
                                hint="pass --identity KEY, or start ssh-agent and ssh-add the key") from exc
            raise DeployError(f"cannot reach {host}: {exc}") from exc
        # Every command is a few small packets each way. With Nagle's algorithm on, a channel request sent
        # while the previous channel's close is still unacknowledged waits for the host's delayed ACK
        # (40 ms on Linux), which added about that much to every round trip.
        self.client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def run(self, argv: Sequence[str], *, stdin: bytes | None = None,
            timeout: float = DEFAULT_COMMAND_TIMEOUT) -> Result:
        command = shlex.join(map(str, argv))
        return self.shell(command, stdin=stdin, timeout=timeout, argv=tuple(map(str, argv)))

    def shell(self, command: str, *, stdin: bytes | None = None, timeout: float = DEFAULT_COMMAND_TIMEOUT,
              argv: tuple[str, ...] | None = None) -> Result:
        """A command line for the host's shell; callers quote every value with shlex.quote."""
        try:
            channel = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = _drain(channel, time.monotonic() + timeout)
            code = channel.recv_exit_status()
            channel.close()
        except (OSError, socket.timeout, paramiko.SSHException, AttributeError) as exc:
            raise DeployError(f"{self.host}: `{command[:120]}` did not complete: {exc or type(exc).__name__}") from exc
        return Result(argv or (command,), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def run_all(self, *argvs: Sequence[str], timeout: float = DEFAULT_COMMAND_TIMEOUT) -> Result:
        """Several commands in one round trip, each after the previous succeeded (`a && b`)."""
        command = " && ".join(shlex.join(map(str, argv)) for argv in argvs)
        return self.shell(command, timeout=timeout)

    def check(self, argv: Sequence[str], doing: str, **kwargs) -> Result:
        result = self.run(argv, **kwargs)
        if not result.ok:
            raise DeployError(f"{self.host}: {doing} failed (exit {result.exit_code}): {result.said()}")
        return result

    def hold_lock(self, path: str) -> bool:
        """Take an exclusive flock(1) on `path` on the host, held for as long as this session lives.

        The lock is held by `flock ... cat` on a channel of its own; when this process ends, however it
        ends, the connection drops, cat sees end of input and the lock goes with it. False: taken.
        """
        parent = shlex.quote(path.rpartition("/")[0] or "/")
        command = (f"mkdir -p {parent} && exec flock --nonblock --conflict-exit-code {LOCK_TAKEN} "
                   f"{shlex.quote(path)} sh -c 'echo {LOCK_HELD}; exec cat >/dev/null'")
        try:
            channel = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            channel.exec_command(command)
            reply = bytearray()
            deadline = time.monotonic() + CONNECT_TIMEOUT
            while LOCK_HELD.encode() not in reply:
                if channel.recv_ready():
                    reply += channel.recv(256)
                elif channel.exit_status_ready():
                    code = channel.recv_exit_status()
                    said = _rest_of_stderr(channel).decode(errors="replace").strip().splitlines()
                    channel.close()
                    if code == LOCK_TAKEN:
                        return False
                    raise DeployError(f"{self.host}: cannot take the deploy lock {path}: "
                                      f"{said[-1] if said else f'exit {code}'}",
                                      hint="deploy.state_dir must be writable by the SSH user")
                elif time.monotonic() > deadline:
                    channel.close()
                    raise DeployError(f"{self.host}: no answer while taking the deploy lock {path}")
                else:
                    time.sleep(POLL)
        except (OSError, paramiko.SSHException) as exc:
            raise DeployError(f"{self.host}: cannot take the deploy lock {path}: {exc}") from exc
        self._held.append(channel)
        return True

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "SshSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drain(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr together, so a command filling one pipe cannot stall on the other."""
    out, err = bytearray(), bytearray()
    while True:
        progressed = False
        while channel.recv_ready():
            out += channel.recv(65536)
            progressed = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            progressed = True
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                return bytes(out), bytes(err)
        if time.monotonic() > deadline:
            raise socket.timeout("timed out")
        if not progressed:
            time.sleep(POLL)


def _rest_of_stderr(channel: paramiko.Channel) -> bytes:
    rest = bytearray()
    while channel.recv_stderr_ready():
        rest += channel.recv_stderr(65536)
    return bytes(rest)
