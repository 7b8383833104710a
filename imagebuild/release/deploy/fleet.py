"""A release onto a fleet over SSH: hosts in waves, a canary wave first, and all or nothing.

The plan (`plan_waves`) cuts the hosts, in the recipe's order, into waves:
`deploy.canary` hosts first, then `deploy.batch` hosts at a time (a count, or
a share of the fleet rounded down, never below one host). Each host of a wave
goes through rollout.py's blue/green steps at the same time as the others;
the next wave starts when the whole wave is done. After the canary wave the
deploy holds for `deploy.canary_wait`, polling the canaries' health path (and
their containers' state); they must answer 200 every time.

Every host is connected and checked first, and what serves on it is read then:
that record is what a rollback goes back to. When any host fails (or a canary
stops answering), the wave in flight finishes its hosts, and every host this
deploy swapped is swapped back, blue/green again, to what served there before;
its record says it was rolled back and why. The error names the host and the
step that failed.

At most `deploy.max_sessions` hosts are worked on at the same moment (connect,
check, swap, watch, roll back). Each host's connection stays open until the
end, because it holds the host's deploy lock.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TypeVar

from imagebuild.errors import DeployError, ImageBuildError
from imagebuild.oci.digest import Digest
from imagebuild.recipe.fleet import BatchSize, parse_batch, parse_duration
from imagebuild.recipe.hosts import Host
from imagebuild.recipe.model import Recipe
from imagebuild.release.deploy.front import Front
from imagebuild.release.deploy.migrations import Phases
from imagebuild.release.deploy.release import Release
from imagebuild.release.deploy.rollout import (DeployResult, Event, Events, HostOutcome, HostRollout, _probe_failure,
                                               check_spec, now)
from imagebuild.release.deploy.ssh import SshOptions, SshSession

DEFAULT_CANARY_WAIT = "60s"
CANARY_POLL = 1.0           # seconds between looks at the canaries
FLEET = "fleet"             # the "host" of events about the whole fleet (waves, the canary verdict)

# The step a host was on when it failed, from the last event it reported: each step reports when it is done.
NEXT_STEP = {None: "connect", "connect": "check", "known-hosts": "connect", "check": "pull", "note": "pull",
             "pull": "start", "cleanup": "start", "migrate": "migrate", "migrated": "start",
             "compatibility": "compatibility check", "compatible": "start", "start": "health",
             "unhealthy": "health", "healthy": "switch", "reload": "switch", "put-back": "switch",
             "switch": "stop", "stop": "done", "done": "canary", "unchanged": "canary", "front": "canary"}

T = TypeVar("T")


def plan_waves(hosts: int, batch: BatchSize, canary: int = 0) -> list[list[int]]:
    """Host indexes per wave, in order: the canaries alone, then `batch` at a time."""
    order = list(range(hosts))
    waves = [order[:canary]] if canary > 0 and hosts else []
    rest = order[canary:] if canary > 0 else order
    size = batch.of(hosts)
    return waves + [rest[start:start + size] for start in range(0, len(rest), size)]


def describe(recipe: Recipe, hosts: int) -> str:
    """How the hosts will be swapped, for the command's first line."""
    spec = recipe.deploy
    size = parse_batch(spec.batch).of(hosts)
    how = "one at a time" if size == 1 else f"{size} at a time"
    if spec.canary:
        wait = parse_duration(spec.canary_wait or DEFAULT_CANARY_WAIT)
        how = f"{min(spec.canary, hosts)} canary host(s) watched for {wait} s first, then {how}"
    return how


@dataclass
class _MigrationGate:
    """The migration runs once per deploy; hosts of the same wave that need it wait for its verdict."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    ran_on: Host | None = None
    ok: bool = False


class _NotStarted(DeployError):
    """A host that waited for the migration on another host, which failed: that host's error is the one to show."""


@dataclass(frozen=True)
class _NotedFront(Front):
    """The front, with extra facts written into the deploy record in the same command as the switch."""

    note: dict = field(default_factory=dict)

    def switch(self, record: dict, on_reload: Callable[[str], None] = lambda _: None) -> str:
        return super().switch({**record, **self.note}, on_reload)


class FleetRollout(HostRollout):
    """rollout.py's per-host steps, with the migration shared by a wave and the canary's health watch."""

    def __init__(self, session: SshSession, recipe: Recipe, release: Release, events: Events,
                 gate: _MigrationGate, note: dict | None = None):
        super().__init__(session, recipe, release, events)
        self.gate = gate
        if note:
            front = self.front
            self.front = _NotedFront(front.session, front.directory, front.listen, front.port, front.drain, note)

    def _expand(self, phases: Phases, serving: dict | None, env: dict[str, str]) -> None:
        gate = self.gate
        with gate.lock:
            mine = gate.ran_on is None
            if mine:
                gate.ran_on = self.host
        if not mine:
            gate.done.wait()
            if not gate.ok:
                raise _NotStarted(f"{self.host}: not started, the migration on {gate.ran_on} failed")
            return
        try:
            super()._expand(phases, serving, env)
            gate.ok = True
        finally:
            gate.done.set()

    @property
    def health_path(self) -> str:
        path = self.recipe.health.path
        return path if path.startswith("/") else "/" + path

    def still_serving(self, name: str, upstream: int) -> str | None:
        """None while the container runs and its health path answers 200; else what is wrong."""
        state, probe = self._look(name, upstream, self.health_path)
        if state is None or not state.get("Running") or state.get("Restarting"):
            return f"{name} stopped (exit code {state.get('ExitCode') if state else '?'})"
        if (state.get("Health") or {}).get("Status") == "unhealthy":
            return "Docker's health check reports unhealthy"
        status_line = probe.stdout.strip()
        if probe.ok and status_line.split()[1:2] == ["200"]:
            return None
        return f"GET {self.health_path} answered {status_line or _probe_failure(probe)}"


class _StepTracker:
    """The last step each host reported, to name the step a failure happened in."""

    def __init__(self, listener: Callable[[Event], None] | None):
        self.listener = listener
        self.last: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        self.last[event.host] = event.step
        if self.listener:
            self.listener(event)

    def failed_step(self, host: Host | str) -> str:
        return NEXT_STEP.get(self.last.get(str(host)), self.last.get(str(host)) or "connect")


class _Failed(Exception):
    def __init__(self, host: Host, step: str, error: BaseException):
        super().__init__(str(error))
        self.host, self.step, self.error = host, step, error


def _each(pool: ThreadPoolExecutor, work: Callable[[int], T], indexes: Iterable[int]) -> dict[int, T | BaseException]:
    """`work` for every index at once (bounded by the pool), waiting for all; results or exceptions by index."""
    futures = {index: pool.submit(work, index) for index in indexes}
    found: dict[int, T | BaseException] = {}
    for index, future in futures.items():
        error = future.exception()
        found[index] = error if error is not None else future.result()
    return found


class FleetDeploy:
    def __init__(self, recipe: Recipe, release: Release, hosts: Sequence[Host], options: SshOptions,
                 listener: Callable[[Event], None] | None, force: bool = False):
        check_spec(recipe)
        self.force = force
        self.phases: Phases | None = None   # the migration phases, once every host is prepared
        self.recipe, self.release, self.hosts, self.options = recipe, release, list(hosts), options
        spec = recipe.deploy
        self.waves = plan_waves(len(self.hosts), parse_batch(spec.batch), spec.canary)
        self.canary_wait = parse_duration(spec.canary_wait or DEFAULT_CANARY_WAIT) if spec.canary else 0
        self.steps = _StepTracker(listener)
        self.events = Events(self.steps)
        self.result = DeployResult(release, events=self.events.items)
        self.gate = _MigrationGate()
        self.sessions: dict[int, SshSession] = {}
        self.rollouts: dict[int, FleetRollout] = {}
        self.before: dict[int, dict | None] = {}     # each host's record before this deploy: what a rollback restores
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(spec.max_sessions, len(self.hosts))),
                                       thread_name_prefix="deploy-host")

    def run(self) -> DeployResult:
        begun = time.monotonic()
        interrupted = False
        try:
            self._prepare()
            self.phases = Phases(self.recipe, self.release, self.events,
                                 [self.rollouts[i] for i in sorted(self.rollouts)], force=self.force)
            self.phases.begin()     # a refused rollback, or a deferred contract, before any host changes
            for number, wave in enumerate(self.waves):
                self._wave(number, wave)
                if number == 0 and self.recipe.deploy.canary:
                    self._watch_canaries(wave)
            self.phases.finish()    # every host serves the release: contract, unless deferred
            self.result.migrations = self.phases.entry()
        except _Failed as failed:
            self._fail(failed)
        except KeyboardInterrupt:
            # Ctrl-C: hosts not started never start, those under way stop when their session closes below.
            # Each host is left as its own steps leave it (serving); running the deploy again continues.
            interrupted = True
            raise
        finally:
            self.pool.shutdown(wait=not interrupted, cancel_futures=True)
            for session in self.sessions.values():
                session.close()
            self.result.seconds = time.monotonic() - begun
        return self.result

    def _prepare(self) -> None:
        """Connect, lock and check every host, and read what serves there; nothing changes yet."""
        def prepare(index: int) -> None:
            host = self.hosts[index]
            session = SshSession(host, self.options, on_note=lambda text: self.events.emit(host, "known-hosts", text))
            self.sessions[index] = session
            self.events.emit(host, "connect", f"{host.user}@{host.address}:{host.ssh_port}, host key verified")
            rollout = FleetRollout(session, self.recipe, self.release, self.events, self.gate)
            rollout.preflight()
            self.before[index] = rollout.front.read_state()
            self.rollouts[index] = rollout

        found = _each(self.pool, prepare, range(len(self.hosts)))
        for index, error in found.items():
            if isinstance(error, DeployError):
                host = self.hosts[index]
                raise DeployError(f"{host}: {self.steps.failed_step(host)} failed: "
                                  f"{error.message.removeprefix(f'{host}: ')}; nothing was changed on any host",
                                  hint=error.hint) from error
            if isinstance(error, BaseException):
                raise error   # a user's mistake (host key, login) keeps its own exit code and line

    def _wave(self, number: int, wave: list[int]) -> None:
        kind = "canary" if number == 0 and self.recipe.deploy.canary else f"{len(wave)} host(s)"
        self.events.emit(FLEET, "wave", f"{number + 1} of {len(self.waves)} ({kind}): "
                                        + ", ".join(str(self.hosts[i]) for i in wave))
        migrate = not self.result.migrated
        found = _each(self.pool, lambda index: self.rollouts[index].run(migrate=migrate, phases=self.phases),
                      wave)
        failures = [(index, value) for index, value in found.items() if isinstance(value, BaseException)]
        for index, value in found.items():
            if not isinstance(value, BaseException):
                outcome, migrated = value
                self.result.hosts.append(outcome)
                self.result.migrated = self.result.migrated or migrated
        if failures:
            index, error = sorted(failures, key=lambda pair: isinstance(pair[1], _NotStarted))[0]
            raise _Failed(self.hosts[index], self.steps.failed_step(self.hosts[index]), error)

    def _watch_canaries(self, wave: list[int]) -> None:
        """The canaries keep serving for canary_wait: each poll, their containers run and answer 200."""
        watched = {index: self._serving_of(index) for index in wave}
        self.events.emit(FLEET, "canary", f"watching {len(wave)} canary host(s) for {self.canary_wait} s: "
                                          f"GET {self.rollouts[wave[0]].health_path} every {CANARY_POLL:g} s")
        deadline = time.monotonic() + self.canary_wait
        polls = 0
        while True:
            found = _each(self.pool, lambda index: self.rollouts[index].still_serving(*watched[index]), wave)
            polls += 1
            for index, problem in found.items():
                if problem is not None:
                    error = problem if isinstance(problem, BaseException) else DeployError(
                        f"{self.hosts[index]}: the canary {self.release.version} stopped serving: {problem}")
                    raise _Failed(self.hosts[index], "canary", error)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(CANARY_POLL, max(0.0, deadline - time.monotonic())))
        self.events.emit(FLEET, "canary-ok", f"{self.release.version} answered all {polls} polls on "
                                             f"{len(wave)} canary host(s); the rest follows")

    def _serving_of(self, index: int) -> tuple[str, int]:
        state = self.rollouts[index].front.read_state() or {}
        return state.get("container", ""), int(state.get("upstream") or 0)

    def _fail(self, failed: _Failed) -> None:
        """Swap back every host this deploy swapped, then raise one line naming the host and the step."""
        error = failed.error
        detail = error.message if isinstance(error, ImageBuildError) else f"{type(error).__name__}: {error}"
        detail = detail.removeprefix(f"{failed.host}: ")
        reason = f"{failed.host}: {failed.step} failed: {detail}"
        rolled, kept, problems = self._roll_back(reason)
        line = reason
        if rolled:
            line += f"; rolled back to what served before on {len(rolled)} host(s): {', '.join(rolled)}"
        if kept:
            line += f"; {self.release.version} stays on {', '.join(kept)}, where nothing served before"
        if problems:
            line += "; rollback FAILED on " + "; ".join(problems)
        if not isinstance(error, ImageBuildError):
            raise error     # a bug: the hosts are rolled back, the traceback is kept
        raise DeployError(line, hint="the hosts that could be rolled back serve what they served before; "
                                     "`imagebuild status` shows each host" if problems else error.hint) from error

    def _roll_back(self, reason: str) -> tuple[list[str], list[str], list[str]]:
        """Hosts that now serve this release and served something else before: swapped back, in parallel."""
        candidates = [i for i in sorted(self.rollouts)   # filled as hosts answered; reported in recipe order
                      if (self.before.get(i) or {}).get("digest") != str(self.release.digest)]
        current = _each(self.pool, lambda index: self.rollouts[index].front.read_state(), candidates)
        swapped = [i for i in candidates if isinstance(current[i], dict)
                   and current[i].get("digest") == str(self.release.digest)]
        kept = [str(self.hosts[i]) for i in swapped if not self.before.get(i)]
        back = [i for i in swapped if self.before.get(i)]
        for host in kept:
            self.events.emit(host, "rollback", f"nothing served here before; {self.release.version} stays")
        found = _each(self.pool, lambda index: self._roll_back_one(index, reason), back)
        rolled = [str(self.hosts[i]) for i in back if not isinstance(found[i], BaseException)]
        problems = [f"{self.hosts[i]}: {found[i]}" for i in back if isinstance(found[i], BaseException)]
        return rolled, kept, problems

    def _roll_back_one(self, index: int, reason: str) -> HostOutcome:
        before = self.before[index] or {}
        host = self.hosts[index]
        previous = Release(environment=self.release.environment, digest=Digest(before["digest"]),
                           version=before.get("version") or "", reference=before.get("reference")
                           or self.release.reference.rpartition("@")[0] + "@" + before["digest"])
        note = {"rolled_back": {"from_version": self.release.version, "from_digest": str(self.release.digest),
                                "reason": reason, "at": now()}}
        self.events.emit(host, "rollback", f"back to {previous.version}: {reason}")
        # No migration: the schema was migrated for the new release, which must stay readable by the old one.
        return FleetRollout(self.sessions[index], self.recipe, previous, self.events, _MigrationGate(),
                            note=note).run(migrate=False, phases=self.phases)[0]


def deploy_fleet(recipe: Recipe, release: Release, hosts: Sequence[Host], options: SshOptions,
                 listener: Callable[[Event], None] | None = None, force: bool = False) -> DeployResult:
    """Roll `release` onto `hosts` in the recipe's waves; on any failure every swapped host goes back and
    DeployError names the host and step. `force`: roll back even across a contract that has run."""
    return FleetDeploy(recipe, release, hosts, options, listener, force).run()
