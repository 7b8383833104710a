"""A small app baked by imagebuild, pushed to the test registry and deployed over real sshd servers.

The app is Python's standard library only (no PyPI downloads): `/` answers
with its release label, `/slow` takes a second (a request in flight during a
swap), `/health` answers 200, or 500 for a broken release. Its migration
prints and succeeds, or fails, as the release says. Used by the deploy tests
and by bench/deploy.py and bench/fleet.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.bake_support import FIRST_COMMIT_TIME, commit_all, git, seed
from tests.conftest import REGISTRY, imagebuild
from tests.debian_fixtures import DebianBase
from tests.ssh_support import SshServer, write_known_hosts

APP = '''\
import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = {release!r}
HEALTHY = {healthy!r}
if {crash!r}:
    sys.exit("cannot reach the database at db:5432")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/health":
            code, body = (200, b"ok\\n") if HEALTHY else (500, b"broken\\n")
        else:
            if self.path == "/slow":
                time.sleep(1)
            code = 200
            body = json.dumps({{"release": RELEASE, "environment": os.environ.get("WEB_ENV"),
                               "container": socket.gethostname(),
                               "secret_length": len(os.environ.get("APP_SECRET", ""))}}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM without a handler
ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
'''

MIGRATE = '''\
import os
import sys

if not {ok!r}:
    print("migration {release}: column users.email already exists", file=sys.stderr)
    sys.exit(3)
print("migrated the schema for {release} in", os.environ.get("WEB_ENV"),
      "with a secret of", len(os.environ.get("APP_SECRET", "")), "characters")
'''

VARIABLE = "WEB_ENV"         # the variable the test app's launcher reads the environment from
EVENT_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT[\d:.]+Z) (?P<host>\S+) (?P<step>[a-z-]+): (?P<message>.*)$")


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def events_from_stderr(stderr: str) -> list[dict]:
    return [m.groupdict() for m in map(EVENT_LINE.match, stderr.splitlines()) if m]


@dataclass
class DeployApp:
    """One app repository with its own registry repository, public ports and host state directory."""

    root: Path
    store: Path
    name: str
    hosts: list[str]
    known_hosts: Path
    identity: Path
    ports: list[int]
    registry: str = ""                                        # REGISTRY/PATH the recipe names
    versions: dict[str, str] = field(default_factory=dict)   # release label -> version
    digests: dict[str, str] = field(default_factory=dict)    # release label -> manifest digest

    @property
    def recipe(self) -> Path:
        return self.root / "imagebuild.yaml"

    def release(self, label: str, healthy: bool = True, migrate_ok: bool = True, crash: bool = False) -> str:
        """Commit the app as release `label`, bake and push it; returns its version. A `crash` release exits
        at start; an unhealthy one answers its health path with 500."""
        (self.root / "app.py").write_text(APP.format(release=label, healthy=healthy, crash=crash))
        (self.root / "migrate.py").write_text(MIGRATE.format(release=label, ok=migrate_ok))
        commit_all(self.root, label, FIRST_COMMIT_TIME + 60 * len(self.versions))
        done = imagebuild("bake", self.root, "--store", self.store, "--push", "--json")
        assert done.returncode == 0, done.stderr
        baked = json.loads(done.stdout)
        self.versions[label], self.digests[label] = baked["version"], baked["digest"]
        return baked["version"]

    def reference(self, label: str) -> str:
        """What a host pulls for a release: REGISTRY/REPOSITORY@DIGEST."""
        return f"{self.registry}/{self.name}@{self.digests[label]}"

    def promote(self, label: str, environment: str = "dev") -> None:
        done = imagebuild("promote", self.versions[label], "--to", environment, "--recipe", self.recipe,
                          "--store", self.store)
        assert done.returncode == 0, done.stderr

    def ssh_args(self) -> list[str]:
        return ["--identity", self.identity, "--known-hosts", self.known_hosts, "--no-agent"]

    def deploy(self, environment: str = "dev", *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return imagebuild("deploy", environment, "--recipe", self.recipe, "--store", self.store, "--json",
                          *self.ssh_args(), *args, env=env)

    def status(self) -> dict:
        done = imagebuild("status", "--recipe", self.recipe, "--store", self.store, "--json", *self.ssh_args())
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def url(self, index: int = 0, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def release_served(self, index: int = 0) -> str:
        with urllib.request.urlopen(self.url(index), timeout=10) as response:
            return json.loads(response.read())["release"]


def make_deploy_app(directory: Path, base: DebianBase, servers: list[SshServer], ports: list[int], *,
                    migrate: bool = True, drain: int = 5, health_timeout: int = 20,
                    in_recipe: bool = True, env_file: str | None = None, fleet: dict | None = None) -> DeployApp:
    """A git repository holding the app's recipe (hosts in it unless `in_recipe` is false). With `env_file`,
    dev requires the secret APP_SECRET and the hosts pass it from that file. `fleet`: more deploy keys
    (batch, canary, ...)."""
    tag = uuid.uuid4().hex[:8]
    name = f"web{tag}"
    hosts = [f"{server.url}?port={port}" for server, port in zip(servers, ports)]
    recipe = {
        "name": name,
        "registry": f"{REGISTRY}/deploytest-{tag}",
        "os": {"debian": "bookworm", "packages": ["ca-certificates"]},
        "runtime": {"python": "3.11"},
        "server": {"kind": "command", "command": ["python3", "/app/app.py"], "port": 8000},
        "app": {"exclude": ["imagebuild.lock"]},
        "health": {"path": "/health"},
        # The launcher's variable renamed: deploy must use the image's own, not IMAGEBUILD_ENV.
        "detect": {"variable": VARIABLE},
        "environments": [{"name": "dev", **({"hosts": hosts} if in_recipe else {}),
                          **({"secrets": ["APP_SECRET"]} if env_file else {})}, {"name": "prod"}],
        "deploy": {"listen": "127.0.0.1", "port": ports[0], "drain": drain, "health_timeout": health_timeout,
                   "state_dir": str(directory / "host-state"),
                   **({"migrate": ["python3", "/app/migrate.py"]} if migrate else {}),
                   **({"env_file": env_file} if env_file else {}), **(fleet or {})},
    }
    root = directory / name
    root.mkdir(parents=True)
    (root / "imagebuild.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (root / "imagebuild.lock").write_bytes(base.lock_path.read_bytes())
    store = directory / "store"
    seed(store, base)
    git(root, "init", "-q", "-b", "main")
    known = write_known_hosts(directory / "known_hosts", *servers)
    return DeployApp(root, store, name, hosts, known, servers[0].client_key, ports, registry=recipe["registry"])


def cleanup(app: DeployApp) -> None:
    """Stop the fronts and remove the containers and images a test's deploys made."""
    stop_fronts(app.root.parent / "host-state")
    remove_containers(f"dev.imagebuild.deploy.app={app.name}")
    remove_images(f"{REGISTRY}/deploytest-*/{app.name}")


def stop_fronts(state_dir: Path) -> None:
    """Every nginx front a test's deploys started under `state_dir`."""
    for front in state_dir.glob("*/nginx.conf"):
        subprocess.run(["nginx", "-p", str(front.parent), "-c", str(front), "-e", str(front.parent / "error.log"),
                        "-s", "quit"], capture_output=True)


def remove_containers(label: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def remove_images(reference: str) -> None:
    images = subprocess.run(["docker", "images", "-q", reference], capture_output=True, text=True).stdout.split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True)


@dataclass
class Response:
    started: float
    ended: float
    release: str | None
    error: str | None
    path: str


class LoadThreads:
    """Threads running `self._run(argument)`, one per argument, from the start of a `with` block to its end."""

    def __init__(self, arguments) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(argument,), daemon=True) for argument in arguments]

    def _run(self, argument) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


class LoadLoop(LoadThreads):
    """Threads sending requests to a URL the whole time, each on a new connection, recording every answer.

    `rate`: requests per second per thread, evenly spaced (a thread behind its schedule sends at once, and
    does not catch up in a burst). None: back to back, as fast as the answers come, which on a small
    machine takes CPU from what is being measured; a steady rate still sends requests all through a swap."""

    def __init__(self, base_url: str, paths: tuple[str, ...] = ("/", "/", "/slow"), rate: float | None = None):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.base_url = base_url
        self.paths = paths
        self.interval = 1 / rate if rate else 0.0
        self.responses: list[Response] = []
        super().__init__(paths)

    def _run(self, path: str) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            if self.interval:
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                due = max(due + self.interval, time.monotonic())
            started = time.time()
            release = error = None
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=30) as response:
                    body = response.read()
                    release = json.loads(body)["release"] if response.status == 200 else None
                    if response.status != 200:
                        error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except Exception as exc:  # noqa: BLE001 - refused, reset, cut short, garbled: all are failed requests
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.responses.append(Response(started, time.time(), release, error, path))

    def wait_for(self, count: int, release: str | None = None, limit: int = 600) -> None:
        """Until `count` answers (of `release`, when given) arrived; bounded by attempts, not asserted on time."""
        for _ in range(limit):
            with self._lock:
                seen = sum(1 for r in self.responses if release is None or r.release == release)
            if seen >= count:
                return
            time.sleep(0.05)
        raise AssertionError(f"only {seen} answers{' from ' + release if release else ''} arrived")

    @property
    def failures(self) -> list[Response]:
        return [r for r in self.responses if r.error]
