"""The blue/green rollout, one host at a time.

Before anything changes, every host is connected (host key checked) and
checked for docker, nginx and bash, so a bad host found late cannot leave the
environment half-deployed for a reason known up front. Then, per host:

1. pull REGISTRY/REPO@DIGEST (never a tag);
2. once per deploy, on the first host that needs the image: the expand
   migration (`deploy.migrate`), run from the new image, then the proof that
   the serving version still works (migrations.py); a failure stops everything;
3. start the new container in the free slot (blue or green) on an ephemeral
   loopback port, with the environment's name in the variable the image's
   launcher reads (its `dev.imagebuild.env-variable` label) and the deployed
   digest in IMAGEBUILD_IMAGE_DIGEST;
4. wait until it answers the health path with 200 (twice in a row); if it
   exits or never does, remove it and stop: the old one keeps serving;
5. point the front at it and reload nginx, waiting until the old workers
   have finished their in-flight requests;
6. record the new state, then stop and remove the old container.

The next host starts only after the previous one finished step 6 (or, with
deploy.batch, the next wave after the whole wave: fleet.py), so an environment
never loses more than the capacity of the hosts being swapped, and even those
keep serving throughout.

Once every host is done, the contract migration runs (migrations.py).
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from imagebuild.release.deploy.front import Front, NotSwitched
from imagebuild.release.deploy.migrations import Phases
from imagebuild.recipe.hosts import Host
from imagebuild.release.deploy.release import Release
from imagebuild.release.deploy.remote_docker import RemoteDocker
from imagebuild.release.deploy.ssh import Result, SshOptions, SshSession
from imagebuild.release.events import Event, Events, now
from imagebuild.errors import DeployError, RecipeError
from imagebuild.recipe.model import DeploySpec, Recipe
from imagebuild.contract import DEPLOY_LABEL, DIGEST_VARIABLE, launcher_variable

LABEL = DEPLOY_LABEL
SLOTS = ("blue", "green")
HEALTHY_STREAK = 2         # consecutive 200s before a container counts as healthy
HEALTH_POLL = 0.5          # seconds between health probes
PROBE_TIMEOUT = 5          # seconds one probe may take
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*\Z")
_SAFE_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.:-]+)\Z")

LOOK_MARK = "--- imagebuild probe ---"
PREFLIGHT = """
docker version --format '{{.Server.Version}}' || exit 90
for tool in nginx bash timeout awk flock; do command -v "$tool" >/dev/null || echo "missing:$tool"; done
[ -z "$1" ] || [ -r "$1" ] || echo no-env-file
"""
# A plain HTTP/1.0 request from the host to the container's loopback port, with bash's /dev/tcp, the
# path nginx will use; prints the status line. Values arrive as arguments, never inside the script.
PROBE = ('exec 3<>"/dev/tcp/127.0.0.1/$0" || exit 7; '
         'printf "GET %s HTTP/1.0\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n" "$1" >&3; '
         'head -n 1 <&3')


@dataclass
class HostOutcome:
    host: str
    action: str                    # "deployed" | "unchanged"
    container: str
    version: str
    digest: str
    previous_version: str | None = None
    previous_digest: str | None = None
    since: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DeployResult:
    release: Release
    hosts: list[HostOutcome] = field(default_factory=list)
    migrated: bool = False
    migrations: dict | None = None          # the phases recorded for this release on the hosts
    seconds: float = 0.0
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"environment": self.release.environment, "digest": self.release.digest,
                "version": self.release.version, "reference": self.release.reference,
                "rolled_back": self.release.rolled_back, "migrated": self.migrated,
                "migrations": self.migrations,
                "seconds": round(self.seconds, 3), "hosts": [h.to_dict() for h in self.hosts],
                "events": [e.to_dict() for e in self.events]}


def check_spec(recipe: Recipe) -> None:
    """deploy.* values the host's shell and nginx will see; bad ones are recipe errors."""
    spec = recipe.deploy

    def fail(key: str, message: str, hint: str | None = None):
        raise RecipeError(f"deploy.{key}: {message}", file=str(recipe.source) if recipe.source else None,
                          key=f"deploy.{key}", hint=hint)

    if not 1 <= spec.port <= 65535:
        fail("port", f"{spec.port} is not a port number")
    if spec.drain < 0:
        fail("drain", "must not be negative")
    if spec.health_timeout < 1:
        fail("health_timeout", "must be at least 1 second")
    if not _SAFE_PATH.match(spec.state_dir) or "/.." in spec.state_dir:
        fail("state_dir", f"{spec.state_dir!r} must be an absolute path of letters, digits and . _ - /")
    if not _SAFE_LISTEN.match(spec.listen):
        fail("listen", f"{spec.listen!r} is not an address", "e.g. 0.0.0.0, 127.0.0.1 or [::]")
    if spec.env_file is not None and not _SAFE_PATH.match(spec.env_file):
        fail("env_file", f"{spec.env_file!r} must be an absolute path on the host")


@dataclass(frozen=True)
class Instance:
    """One app in one environment behind one public port on a host: its names and its directory."""

    app: str
    environment: str
    port: int
    state_dir: str

    @classmethod
    def of(cls, recipe: Recipe, environment: str, host: Host) -> "Instance":
        return cls(recipe.name.replace("/", "-"), environment, host.public_port or recipe.deploy.port,
                   recipe.deploy.state_dir.rstrip("/") or "/")

    @property
    def key(self) -> str:
        return f"{self.app}-{self.environment}-{self.port}"

    @property
    def directory(self) -> str:
        return f"{self.state_dir}/{self.key}"

    def container(self, slot: str) -> str:
        return f"{self.key}-{slot}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL + "app": self.app, LABEL + "environment": self.environment, LABEL + "port": str(self.port)}


def listen_address(spec: DeploySpec) -> str:
    return f"[{spec.listen.strip('[]')}]" if ":" in spec.listen else spec.listen


class HostRollout:
    def __init__(self, session: SshSession, recipe: Recipe, release: Release, events: Events):
        self.session = session
        self.host = session.host
        self.recipe = recipe
        self.release = release
        self.events = events
        self.spec = recipe.deploy
        self.instance = Instance.of(recipe, release.environment, self.host)
        self.docker = RemoteDocker(session)
        self.front = Front(session, self.instance.directory, listen_address(self.spec), self.instance.port,
                           self.spec.drain)

    def emit(self, step: str, message: str) -> None:
        self.events.emit(self.host, step, message)

    def preflight(self) -> None:
        """The instance's deploy lock; then docker, the tools the front and the probe use, and the env file,
        in one round trip."""
        if not self.session.hold_lock(f"{self.instance.directory}.lock"):
            raise DeployError(f"{self.host}: another deploy of {self.instance.key} is running on this host",
                              hint="wait for it to finish, then run again")
        result = self.session.run(["sh", "-c", PREFLIGHT, "preflight", self.spec.env_file or ""])
        if result.exit_code == 90:
            raise DeployError(f"{self.host}: the Docker engine does not answer: {result.said()}",
                              hint="install docker on the host and let this user reach it (docker group or root)")
        lines = result.stdout.split()
        missing = [line.split(":", 1)[1] for line in lines if line.startswith("missing:")]
        if missing:
            raise DeployError(f"{self.host}: missing on the host: {', '.join(missing)}",
                              hint="install them (Debian: apt-get install nginx bash coreutils mawk util-linux)")
        if "no-env-file" in lines:
            raise DeployError(f"{self.host}: deploy.env_file {self.spec.env_file} is not a readable file on the "
                              "host", hint="create it there; its values never leave the host")
        version = lines[0] if lines else "?"
        self.emit("check", f"docker {version}, nginx and bash present; instance {self.instance.key}")

    def current(self) -> tuple[dict | None, dict | None, set[str]]:
        """The recorded state; the state of its container, when that container still runs; and which of the
        instance's containers exist (one docker inspect for all of them)."""
        state = self.front.read_state()
        recorded = (state or {}).get("container")
        names = [self.instance.container(slot) for slot in SLOTS]
        if recorded and recorded not in names:
            names.append(recorded)
        found = {c["Name"].lstrip("/"): c["State"] for c in self.docker.inspect(*names)}
        if not state:
            return None, None, set(found)
        container = found.get(recorded)
        if container is None or not container.get("Running"):
            self.emit("note", f"recorded container {recorded} is not running")
            return state, None, set(found)
        return state, container, set(found)

    def run(self, migrate: bool, phases: Phases) -> tuple[HostOutcome, bool]:
        """Roll this host; returns its outcome and whether the expand migration ran here."""
        release = self.release
        state, running, existing = self.current()
        if state and running and state.get("digest") == release.digest:
            self._repair_front(state)
            self.emit("unchanged", f"{release.version} already serves here since {state.get('since')}")
            return HostOutcome(str(self.host), "unchanged", state["container"], release.version, release.digest,
                               since=state.get("since")), False

        started = time.monotonic()
        config = self.docker.pull(release.reference)
        self.emit("pull", f"{release.reference} ({time.monotonic() - started:.1f} s)")
        env = launcher_env(config, release)
        migrated = False
        if migrate and self.spec.expand:
            self._expand(phases, state if running else None, env)
            migrated = True

        old_name = state.get("container") if state and running else None
        old_slot = state.get("slot") if old_name else None
        slot = SLOTS[1] if old_slot == SLOTS[0] else SLOTS[0]
        name = self.instance.container(slot)
        if name == old_name:  # a state file from an older layout; never reuse the serving name
            slot, name = SLOTS[1], self.instance.container(SLOTS[1])
        if name in existing:
            self.docker.remove(name)
            self.emit("cleanup", f"removed a leftover {name} that served no traffic")
        ports = sorted(int(key.split("/")[0]) for key in config.get("ExposedPorts") or {} if key.endswith("/tcp"))
        container_port = self.recipe.server.port if self.recipe.server.port in ports else (ports or [0])[0]
        if not container_port:
            raise DeployError(f"{self.host}: {release.reference} exposes no TCP port to send traffic to")
        labels = {**self.instance.labels, LABEL + "slot": slot, LABEL + "digest": release.digest,
                  LABEL + "version": release.version, LABEL + "created": now()}
        upstream = self.docker.run_detached(name, release.reference, env=env, labels=labels,
                                            container_port=container_port, env_file=self.spec.env_file)
        self.emit("start", f"{name} ({release.version}) on 127.0.0.1:{upstream}")

        self._wait_healthy(name, upstream, state.get("version") if old_name else None)
        self.docker.keep_running(name)

        since = now()
        record = {
            "app": self.instance.app, "environment": release.environment, "port": self.instance.port,
            "container": name, "slot": slot, "digest": release.digest, "version": release.version,
            "reference": release.reference, "upstream": upstream, "container_port": container_port,
            "since": since, "host": str(self.host),
            "previous": {key: state.get(key) for key in ("container", "digest", "version", "since")}
            if old_name else None}
        try:
            self.front.point_to(upstream)
            how = self.front.switch(record, on_reload=lambda text: self.emit("reload", text))
        except NotSwitched as exc:
            self._put_back(name, state if old_name else None)
            raise DeployError(f"{exc.message}; removed {name}"
                              + (f", {state.get('version')} keeps serving" if old_name else ""),
                              hint=exc.hint) from exc
        self.emit("switch", f"traffic on {self.instance.port} goes to {name} ({release.version}) since {since}; "
                            f"{how}")
        if old_name:
            self.docker.stop_and_remove(old_name)
            self.emit("stop", f"drained, stopped and removed {old_name} ({state.get('version')})")
        self.emit("done", f"{release.version} serves on port {self.instance.port} "
                          f"({time.monotonic() - started:.1f} s)")
        return HostOutcome(str(self.host), "deployed", name, release.version, release.digest,
                           previous_version=state.get("version") if old_name else None,
                           previous_digest=state.get("digest") if old_name else None, since=since), migrated

    def _repair_front(self, state: dict) -> None:
        """The release already runs here; make sure the front runs and points at it. After a reboot Docker
        restarts the container (on a new loopback port, as like as not) but nothing starts the front."""
        name = state["container"]
        container_port = state.get("container_port") or self.recipe.server.port
        port = self.docker.published_port(name, int(container_port))
        master = self.front.master()
        if master is not None and port == state.get("upstream"):
            return
        self.front.point_to(port)
        how = self.front.switch({**state, "upstream": port, "container_port": int(container_port)},
                                on_reload=lambda text: self.emit("reload", text))
        self.emit("front", f"the front pointed at {name} again on 127.0.0.1:{port}; {how}")

    def _put_back(self, name: str, serving: dict | None) -> None:
        """Traffic never moved: remove the new container, and point the config at the serving one again,
        so a later reload (by anyone) cannot send traffic to a container that is gone."""
        self.docker.remove(name)
        if serving and serving.get("upstream"):
            try:
                self.front.point_to(int(serving["upstream"]))
            except DeployError:
                pass  # the config was refused before; nginx still runs the one it had
        self.emit("put-back", f"removed {name}; the front was not changed")

    def _expand(self, phases: Phases, serving: dict | None, env: dict[str, str]) -> None:
        """The expand phase from this host (fleet.py shares it across a wave)."""
        phases.expand(self, serving, env)

    def _look(self, name: str, upstream: int, path: str) -> tuple[dict | None, Result]:
        """The container's state and one probe of its health path, in one round trip."""
        inspect = ["docker", "container", "inspect", "--format", "{{.RestartCount}} {{json .State}}", name]
        probe = ["timeout", str(PROBE_TIMEOUT), "bash", "-c", PROBE, str(upstream), path]
        quoted = [shlex.join(argv) for argv in (inspect, probe)]
        result = self.session.shell(f"{quoted[0]} 2>/dev/null || echo null; echo {shlex.quote(LOOK_MARK)}; {quoted[1]}",
                                    timeout=PROBE_TIMEOUT + 30)
        state_text, _, probe_out = result.stdout.partition(LOOK_MARK + "\n")
        restarts, _, state_json = state_text.strip().partition(" ")
        try:
            state = json.loads(state_json or "null")
        except ValueError:
            state = None
        if isinstance(state, dict):
            state["RestartCount"] = int(restarts) if restarts.isdigit() else 0
        return state, Result(result.argv, result.exit_code, probe_out, result.stderr)

    def _wait_healthy(self, name: str, upstream: int, serving_version: str | None) -> None:
        path = self.recipe.health.path if self.recipe.health.path.startswith("/") else "/" + self.recipe.health.path
        timeout = self.spec.health_timeout
        deadline = time.monotonic() + timeout
        streak, seen = 0, "no answer yet"
        while True:
            problem = None
            state, probe = self._look(name, upstream, path)
            if state is None or not state.get("Running") or state.get("Restarting") or state.get("RestartCount"):
                # It starts without a restart policy, so an exit stays visible; a restart (someone else's
                # doing) is no better than an exit.
                code = state.get("ExitCode") if state else "?"
                again = f", restarted {state['RestartCount']} times" if state and state.get("RestartCount") else ""
                problem = (f"the container exited with code {code}{again}; "
                           f"its log ends: {self.docker.last_log_line(name)}")
            elif (state.get("Health") or {}).get("Status") == "unhealthy":
                problem = f"Docker's health check reports unhealthy; last answer to GET {path}: {seen}"
            else:
                status_line = probe.stdout.strip()
                if probe.ok and status_line.split()[1:2] == ["200"]:
                    streak += 1
                    if streak >= HEALTHY_STREAK:
                        self.emit("healthy", f"{name} answers GET {path} with {status_line}")
                        return
                else:
                    streak = 0
                    seen = status_line or _probe_failure(probe)
                if time.monotonic() > deadline:
                    problem = f"no 200 from GET {path} within {timeout} s; the last answer was: {seen}"
            if problem:
                self.docker.remove(name)
                keeps = f"{serving_version} keeps serving" if serving_version else "no traffic was moved to it"
                self.emit("unhealthy", f"{name} ({self.release.version}): {problem}; removed it, {keeps}")
                raise DeployError(f"{self.host}: {self.release.version} is not healthy: {problem}; "
                                  f"removed {name}, {keeps}")
            time.sleep(HEALTH_POLL)


def launcher_env(config: dict, release: Release) -> dict[str, str]:
    """The environment's name in the variable this image's launcher reads (a recipe may rename it, and a
    rollback may deploy an image from before the rename), and the digest for its start-up line: an image
    cannot know its own digest."""
    variable = launcher_variable(config.get("Labels"))
    return {variable: release.environment, DIGEST_VARIABLE: release.digest}


def _probe_failure(probe: Result) -> str:
    if probe.exit_code == 124:
        return f"no status line within {PROBE_TIMEOUT} s"
    said = probe.said()
    if "refused" in said.lower():
        return "connection refused"
    return "connection closed without a status line" if said == "no output" else said


def deploy(recipe: Recipe, release: Release, hosts: Sequence[Host], options: SshOptions,
           listener: Callable[[Event], None] | None = None, force: bool = False) -> DeployResult:
    """Roll `release` onto `hosts` in the recipe's waves (deploy.batch, deploy.canary: fleet.py, which runs
    this module's per-host steps, with the migration phases of migrations.py); raises DeployError when a
    host fails, after rolling the others back. `force`: roll back even across a contract migration that
    has run."""
    from imagebuild.release.deploy.fleet import deploy_fleet  # fleet.py builds on this module

    return deploy_fleet(recipe, release, hosts, options, listener, force=force)
