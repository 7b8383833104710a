"""The host's Docker engine, driven by the docker CLI over the SSH session.

Why commands and not the Docker SDK's ssh:// transport: the SDK's paramiko
transport trusts only ~/.ssh/known_hosts and ~/.ssh/config and opens its own
connection, so --known-hosts, --identity and --accept-new-host-key could not
apply to it; it also runs `docker system dial-stdio` on the host, so the host
needs the docker CLI either way. The front (nginx) needs commands anyway.
"""

from __future__ import annotations

import json
import shlex
from typing import Mapping, Sequence

from imagebuild.release.deploy.ssh import Result, SshSession
from imagebuild.errors import DeployError

PULL_TIMEOUT = 1800        # seconds; a first pull of a large image over a slow link
MIGRATE_TIMEOUT = 3600     # seconds; migrations may rewrite big tables
STOP_GRACE = 10            # seconds between SIGTERM and SIGKILL when the old container stops


class RemoteDocker:
    def __init__(self, session: SshSession):
        self.session = session
        self.host = session.host

    def pull(self, reference: str) -> dict:
        """Pull by digest and read the image's config (exposed ports, labels), in one round trip."""
        result = self.session.run_all(["docker", "pull", "--quiet", reference],
                                      ["docker", "image", "inspect", "--format", "{{json .Config}}", reference],
                                      timeout=PULL_TIMEOUT)
        if not result.ok:
            raise DeployError(f"{self.host}: docker pull {reference} failed: {result.said()}",
                              hint="the host must reach the registry; for a private one run `docker login` there "
                                   "as the SSH user the deploy logs in as")
        # `docker pull --quiet` prints the reference; the config is the last line.
        lines = result.stdout.strip().splitlines()
        return json.loads(lines[-1] if lines else "null") or {}

    def run_detached(self, name: str, reference: str, *, env: Mapping[str, str], labels: Mapping[str, str],
                     container_port: int, env_file: str | None) -> int:
        """Start the container; returns the loopback port its `container_port` is published on."""
        # No restart policy until it proved healthy: a crash stays a crash, with its exit code, not a loop.
        argv = ["docker", "run", "--detach", "--name", name, "--restart", "no",
                # An ephemeral port on loopback: old and new run side by side, only the front is public.
                "--publish", f"127.0.0.1::{container_port}"]
        argv += _env_args(env, env_file)
        for key, value in sorted(labels.items()):
            argv += ["--label", f"{key}={value}"]
        result = self.session.run_all([*argv, reference], ["docker", "port", name, f"{container_port}/tcp"],
                                      timeout=PULL_TIMEOUT)
        if not result.ok:
            raise DeployError(f"{self.host}: starting {name} failed: {result.said()}")
        return self._loopback_port(name, container_port, result.stdout)

    def published_port(self, name: str, container_port: int) -> int:
        """The loopback port now mapped to `container_port`; it changes when the engine restarts."""
        result = self.session.run(["docker", "port", name, f"{container_port}/tcp"])
        return self._loopback_port(name, container_port, result.stdout)

    def _loopback_port(self, name: str, container_port: int, docker_port_output: str) -> int:
        for line in docker_port_output.splitlines():
            host, _, port = line.strip().rpartition(":")
            if host == "127.0.0.1" and port.isdigit():
                return int(port)
        raise DeployError(f"{self.host}: {name} publishes no loopback port for {container_port}/tcp")

    def keep_running(self, name: str) -> None:
        """From now on the engine restarts it (after a crash, or when the host boots) until it is stopped."""
        self.session.check(["docker", "update", "--restart", "unless-stopped", name],
                           f"setting {name}'s restart policy")

    def run_once(self, name: str, reference: str, argv: Sequence[str], *, env: Mapping[str, str],
                 env_file: str | None) -> Result:
        command = ["docker", "run", "--rm", "--name", name, *_env_args(env, env_file), reference, *argv]
        # A leftover of an interrupted run goes first, in the same round trip.
        leftover = f"docker rm --force {shlex.quote(name)} >/dev/null 2>&1;"
        return self.session.shell(f"{leftover} {shlex.join(command)}",
                                  timeout=MIGRATE_TIMEOUT, argv=tuple(command))

    def inspect(self, *names: str) -> list[dict]:
        """The containers among `names` that exist, in one round trip: for a missing one docker inspect
        exits 1 and says so on stderr, yet still prints the others."""
        result = self.session.run(["docker", "container", "inspect", *names])
        try:
            return json.loads(result.stdout or "[]") or []
        except ValueError as exc:
            raise DeployError(f"{self.host}: docker inspect failed: {result.said()}") from exc

    def containers(self, labels: Mapping[str, str]) -> list[dict]:
        """The containers carrying all `labels`, listed and inspected in one round trip."""
        argv = ["docker", "ps", "--all", "--quiet", "--no-trunc"]
        for key, value in labels.items():
            argv += ["--filter", f"label={key}={value}"]
        listing = shlex.join(argv)
        # One removed between the listing and the inspection makes inspect exit 1; it still prints the rest.
        result = self.session.shell(f"ids=$({listing}) || exit; "
                                    f"if [ -n \"$ids\" ]; then docker container inspect $ids; else echo '[]'; fi",
                                    argv=tuple(argv))
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise DeployError(f"{self.host}: listing containers failed (exit {result.exit_code}): "
                              f"{result.said()}") from exc

    def last_log_line(self, name: str) -> str:
        result = self.session.run(["docker", "logs", "--tail", "20", name])
        return result.said() if (result.stdout.strip() or result.stderr.strip()) else "an empty log"

    def stop_and_remove(self, name: str) -> None:
        """SIGTERM, SIGKILL after STOP_GRACE seconds, then remove."""
        self.session.run_all(["docker", "stop", "--time", str(STOP_GRACE), name], ["docker", "rm", name],
                             timeout=STOP_GRACE + 60)

    def remove(self, name: str) -> None:
        self.session.run(["docker", "rm", "--force", name], timeout=STOP_GRACE + 60)


def _env_args(env: Mapping[str, str], env_file: str | None) -> list[str]:
    argv: list[str] = []
    if env_file:
        argv += ["--env-file", env_file]
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    return argv
