"""What runs where, and since when: read from each host's deploy state and its Docker engine."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from imagebuild.release.deploy.front import Front
from imagebuild.release.deploy.migrations import describe, read_record
from imagebuild.recipe.hosts import Host
from imagebuild.release.deploy.remote_docker import RemoteDocker
from imagebuild.release.deploy.rollout import LABEL, Instance, listen_address
from imagebuild.release.deploy.ssh import SshOptions, SshSession
from imagebuild.errors import ImageBuildError
from imagebuild.recipe.model import Recipe


@dataclass
class HostStatus:
    environment: str
    host: str
    port: int
    version: str | None = None
    digest: str | None = None
    since: str | None = None            # when traffic moved to it
    container: str | None = None
    state: str | None = None            # the container's state: running, exited, ...
    health: str | None = None           # Docker's verdict from the image's Healthcheck
    front: str | None = None            # "running" or "down"
    note: str | None = None             # unreachable, never deployed, ...
    rolled_back: dict | None = None     # set when a failed deploy swapped this host back: from what, why, when
    migrations: list[dict] | None = None  # the host's migration record: phases per release, oldest first

    def to_dict(self) -> dict:
        return asdict(self)


# Hosts read at once: each waits mostly on its SSH handshake, and a few sessions at a time keep a
# large fleet from opening dozens of connections together.
HOSTS_AT_ONCE = 8


def host_status(recipe: Recipe, environment: str, hosts: Sequence[Host], options: SshOptions) -> list[HostStatus]:
    """One row per host; a host that cannot be read (unreachable, unknown host key, refused key) gets a
    note instead of failing the others: status only reads."""
    return hosts_status(recipe, {environment: hosts}, options)[environment]


def hosts_status(recipe: Recipe, hosts_by_environment: Mapping[str, Sequence[Host]], options: SshOptions,
                 at_once: int = HOSTS_AT_ONCE) -> dict[str, list[HostStatus]]:
    """Every environment's hosts read in parallel (at most `at_once` sessions), rows in the given order."""
    work = [(environment, host) for environment, hosts in hosts_by_environment.items() for host in hosts]
    found: dict[str, list[HostStatus]] = {environment: [] for environment in hosts_by_environment}
    if not work:
        return found
    pool = ThreadPoolExecutor(max_workers=max(1, min(at_once, len(work))), thread_name_prefix="host-status")
    try:
        rows = list(pool.map(lambda pair: _one_host(recipe, *pair, options), work))
    finally:
        # On Ctrl-C, sessions not yet opened are never opened; those under way end on their own.
        pool.shutdown(wait=False, cancel_futures=True)
    for (environment, _host), row in zip(work, rows):
        found[environment].append(row)
    return found


def _one_host(recipe: Recipe, environment: str, host: Host, options: SshOptions) -> HostStatus:
    instance = Instance.of(recipe, environment, host)
    row = HostStatus(environment, str(host), instance.port)
    try:
        with SshSession(host, options) as session:
            _fill(row, session, instance, recipe)
    except ImageBuildError as exc:
        row.note = exc.one_line()
    return row


def _fill(row: HostStatus, session: SshSession, instance: Instance, recipe: Recipe) -> None:
    front = Front(session, instance.directory, listen_address(recipe.deploy), instance.port, recipe.deploy.drain)
    docker = RemoteDocker(session)
    state = front.read_state()
    row.front = "running" if front.master() is not None else "down"
    row.migrations = read_record(session, instance.directory).releases or None
    if state:
        row.version, row.digest, row.since = state.get("version"), state.get("digest"), state.get("since")
        row.container = state.get("container")
        row.rolled_back = state.get("rolled_back")
    containers = docker.containers(instance.labels)
    serving = next((c for c in containers if c["Name"].lstrip("/") == row.container), None)
    if serving is None and containers:
        # No state file (or a stale one): report what the labels say runs.
        serving = containers[0]
        labels = serving["Config"]["Labels"]
        row.container = serving["Name"].lstrip("/")
        row.version, row.digest = labels.get(LABEL + "version"), labels.get(LABEL + "digest")
        row.note = "no deploy record for this container"
    if serving is not None:
        row.state = serving["State"]["Status"]
        row.health = (serving["State"].get("Health") or {}).get("Status")
    elif not state:
        row.note = "never deployed"
    else:
        row.note = f"recorded container {row.container} is gone"


def serving(rows: Sequence[HostStatus]) -> dict[str, list[str]]:
    """Which hosts serve which digest (hosts that could not be read, or serve nothing, are left out)."""
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.digest and row.state == "running":
            found.setdefault(row.digest, []).append(row.host)
    return found


def is_mixed(rows: Sequence[HostStatus]) -> bool:
    """More than one digest serves in the environment: a deploy stopped half-way, or one is under way."""
    return len(serving(rows)) > 1


def migration_phases(row: HostStatus) -> str | None:
    """What the record says of the serving release's migrations, for the status line."""
    if not row.migrations or not row.digest:
        return None
    return describe(next((r for r in row.migrations if r.get("digest") == row.digest), None))
