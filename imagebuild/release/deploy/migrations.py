"""Database changes with zero downtime: expand before the swap, contract after it.

    expand    from the new image, on the first host that needs it, before any new container starts. The
              old version still serves against the expanded schema, so it must cope with it: after expand
              the serving container must still pass its health path (and `deploy.smoke`, run from the old
              image); if not, nothing new starts and the deploy stops (exit 6).
    contract  from the new image once every host serves it and every old container was drained and removed:
              at the end of the deploy (`contract_when: after-swap`), or at the start of the next deploy that
              moves forward (`next-deploy`), from the image that then serves everywhere.

Which phase ran for which release is recorded on every host of the environment, in
STATE_DIR/INSTANCE/migrations.json, oldest release first (written beside, then renamed). That order is what
makes a rollback safe or not: rolling back to R is refused once a release deployed after R ran its contract,
because R's code may need what that contract removed.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from imagebuild.errors import DeployError, UserError
from imagebuild.recipe.hosts import Host
from imagebuild.release.deploy.release import Release
from imagebuild.release.deploy.ssh import SshOptions, SshSession

if TYPE_CHECKING:
    from imagebuild.release.deploy.rollout import HostRollout
    from imagebuild.release.events import Events
    from imagebuild.recipe.model import Recipe

RECORD = "migrations.json"
PHASES = ("expand", "contract")
OLD_HEALTH_PROBES = 2      # consecutive 200s the serving version owes after expand
OLD_HEALTH_POLL = 0.5      # seconds between them

WRITE_RECORD = r"""
set -e
umask 077
mkdir -p "$1"
printf '%s' "$2" > "$1/migrations.json.new"
mv -f "$1/migrations.json.new" "$1/migrations.json"
"""


def now() -> str:
    from imagebuild.release.events import now as stamp
    return stamp()


@dataclass
class Ledger:
    """Per release, oldest first: {"digest", "version", "phases": {phase: {"at", "host"}}, "failed": {...}}."""

    releases: list[dict] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> "Ledger":
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        releases = data.get("releases") if isinstance(data, dict) else None
        return cls([r for r in releases or [] if isinstance(r, dict) and r.get("digest")])

    def merge(self, other: "Ledger") -> None:
        """Another host's record: entries it alone has are added in its order; phases are united."""
        for theirs in other.releases:
            mine = self.find(theirs["digest"])
            if mine is None:
                self.releases.append(json.loads(json.dumps(theirs)))
                continue
            for key in ("phases", "failed"):
                for phase, stamp in (theirs.get(key) or {}).items():
                    mine.setdefault(key, {}).setdefault(phase, stamp)
        for entry in self.releases:  # a phase that ran is no longer failed
            for phase in entry.get("phases") or {}:
                (entry.get("failed") or {}).pop(phase, None)

    def find(self, digest: str) -> dict | None:
        return next((r for r in self.releases if r["digest"] == digest), None)

    def entry(self, digest: str, version: str) -> dict:
        found = self.find(digest)
        if found is None:
            found = {"digest": digest, "version": version, "phases": {}, "failed": {}}
            self.releases.append(found)
        return found

    def ran(self, digest: str, phase: str) -> bool:
        return phase in ((self.find(digest) or {}).get("phases") or {})

    def contract_after(self, digest: str, unrecorded_is_older: bool) -> dict | None:
        """The first release deployed after `digest` whose contract ran: a rollback to `digest` would cross
        it. A release the record does not know is either new (a forward deploy: nothing to cross) or older
        than the record (`unrecorded_is_older`, for `--to`: every contract in the record is after it)."""
        index = next((i for i, r in enumerate(self.releases) if r["digest"] == digest), None)
        if index is None and not unrecorded_is_older:
            return None
        later = self.releases if index is None else self.releases[index + 1:]
        return next((r for r in later if "contract" in (r.get("phases") or {})), None)

    def text(self) -> str:
        return json.dumps({"releases": self.releases}, indent=2, sort_keys=True) + "\n"


def describe(entry: dict | None) -> str | None:
    """`expand ran, contract pending` and the like, for status."""
    if not entry:
        return None
    phases, failed = entry.get("phases") or {}, entry.get("failed") or {}
    words = []
    for phase in PHASES:
        if phase in phases:
            words.append(f"{phase} ran {phases[phase].get('at')}")
        elif phase in failed:
            words.append(f"{phase} failed (exit {failed[phase].get('exit')}) {failed[phase].get('at')}")
        else:
            words.append(f"{phase} pending")
    return "migrations: " + ", ".join(words)


def read_record(session: SshSession, directory: str) -> Ledger:
    result = session.run(["cat", f"{directory}/{RECORD}"])
    return Ledger.parse(result.stdout if result.ok else None)


def read_ledger(sessions: Sequence[SshSession], directories: Sequence[str]) -> Ledger:
    ledger = Ledger()
    for session, directory in zip(sessions, directories):
        ledger.merge(read_record(session, directory))
    return ledger


def refuse_crossing_contract(ledger: Ledger, digest: str, version: str, environment: str,
                             unrecorded_is_older: bool = False) -> None:
    crossed = ledger.contract_after(digest, unrecorded_is_older)
    if crossed is not None:
        raise UserError(f"refusing to roll {environment} back to {version}: the contract phase of "
                        f"{crossed.get('version')} ran ({crossed['phases']['contract'].get('at')}), and "
                        f"{version} may need what it removed",
                        hint="deploy a release made for the contracted schema, or pass --force")


def check_rollback(recipe: "Recipe", environment: str, hosts: Sequence[Host], options: SshOptions,
                   digest: str, version: str) -> None:
    """Before `deploy --to` moves the tag: read every host's record and refuse a rollback across a contract."""
    from imagebuild.release.deploy.rollout import Instance

    sessions: list[SshSession] = []
    try:
        for host in hosts:
            sessions.append(SshSession(host, options))
        directories = [Instance.of(recipe, environment, host).directory for host in hosts]
        # `--to` names a release the environment ran before: one the record lacks predates the record.
        refuse_crossing_contract(read_ledger(sessions, directories), digest, version, environment,
                                 unrecorded_is_older=True)
    finally:
        for session in sessions:
            session.close()


class Phases:
    """The migrations of one deploy: the record of every host, the phases run, and the check of the old version."""

    def __init__(self, recipe: "Recipe", release: Release, events: "Events", rollouts: Sequence["HostRollout"],
                 force: bool = False):
        self.recipe = recipe
        self.spec = recipe.deploy.migrations
        self.expand_argv = recipe.deploy.expand
        self.release = release
        self.events = events
        self.rollouts = list(rollouts)
        self.force = force
        self.ledger = Ledger()

    @property
    def used(self) -> bool:
        return bool(self.expand_argv or self.spec.contract)

    def begin(self) -> None:
        """After the preflight: read the record of every host; refuse a rollback across a contract; run the
        serving release's deferred contract when this deploy moves forward."""
        if not self.used:
            return
        self.ledger = read_ledger([r.session for r in self.rollouts], [r.instance.directory for r in self.rollouts])
        if not self.force:
            refuse_crossing_contract(self.ledger, str(self.release.digest), self.release.version,
                                     self.release.environment)
        if self.spec.contract and self.spec.contract_when == "next-deploy":
            self._deferred_contract()

    def expand(self, rollout: "HostRollout", serving: dict | None, env: dict[str, str]) -> None:
        """Expand from the new image, then prove the serving version still works against the result."""
        self._run(rollout, "expand", self.release, self.expand_argv, env, serving)
        if serving is not None:
            self._old_still_works(rollout, serving)

    def finish(self) -> None:
        """Every host serves the release and its old containers are gone: contract, unless deferred."""
        if not self.spec.contract or self.spec.contract_when != "after-swap":
            return
        if self.ledger.ran(str(self.release.digest), "contract"):
            return
        rollout = self.rollouts[0]
        env = self._launcher_env(rollout, self.release)
        self._run(rollout, "contract", self.release, self.spec.contract, env, None)

    # -- the phases ----------------------------------------------------------------------------------

    def _run(self, rollout: "HostRollout", phase: str, release: Release, argv: Sequence[str],
             env: dict[str, str], serving: dict | None) -> None:
        shown = shlex.join(argv)
        # Expand keeps the step names of `deploy.migrate`, its short form.
        start_step, done_step = ("migrate", "migrated") if phase == "expand" else ("contract", "contracted")
        rollout.emit(start_step, f"running {phase} `{shown}` from {release.version}")
        result = rollout.docker.run_once(f"{rollout.instance.key}-{phase}", release.reference, list(argv),
                                         env=env, env_file=rollout.spec.env_file)
        entry = self.ledger.entry(str(release.digest), release.version)
        stamp = {"at": now(), "host": str(rollout.host)}
        if not result.ok:
            entry.setdefault("failed", {})[phase] = {**stamp, "exit": result.exit_code}
            self._write()
            if phase == "expand":
                keeps = f"{serving.get('version')} keeps serving" if serving else "nothing was started"
                outcome = f"no traffic moved, {keeps}"
            else:
                outcome = f"{release.version} serves on every host; run the deploy again to retry the contract"
            raise DeployError(f"{rollout.host}: {phase} migration `{shown}` from {release.version} failed "
                              f"(exit {result.exit_code}): {result.said()}; {outcome}")
        entry.setdefault("phases", {})[phase] = stamp
        entry.setdefault("failed", {}).pop(phase, None)
        self._write()
        rollout.emit(done_step, f"{phase} `{shown}` succeeded")

    def _old_still_works(self, rollout: "HostRollout", serving: dict) -> None:
        """The version now serving, against the expanded schema: its health path through its own loopback
        port (as nginx reaches it), then `deploy.smoke` from its image."""
        old_version, name = serving.get("version"), serving["container"]
        rollout.emit("compatibility", f"checking that {old_version} still works against the expanded schema")
        path = self.recipe.health.path if self.recipe.health.path.startswith("/") else "/" + self.recipe.health.path
        streak = 0
        # A few more tries than the streak needs: one slow answer on a busy host is not a verdict.
        for _ in range(OLD_HEALTH_PROBES * 3):
            _, probe = rollout._look(name, int(serving["upstream"]), path)
            line = probe.stdout.strip()
            if probe.ok and line.split()[1:2] == ["200"]:
                streak += 1
                if streak >= OLD_HEALTH_PROBES:
                    break
            else:
                streak = 0
            time.sleep(OLD_HEALTH_POLL)
        else:
            self._incompatible(rollout, old_version,
                               f"its health check GET {path} answered {line or 'nothing'}")
        if self.recipe.deploy.smoke:
            old = dataclasses.replace(self.release, digest=serving.get("digest"), version=old_version or "",
                                      reference=serving["reference"])
            shown = shlex.join(self.recipe.deploy.smoke)
            result = rollout.docker.run_once(f"{rollout.instance.key}-smoke", old.reference,
                                             list(self.recipe.deploy.smoke),
                                             env=self._launcher_env(rollout, old), env_file=rollout.spec.env_file)
            if not result.ok:
                self._incompatible(rollout, old_version, f"its smoke test `{shown}` failed "
                                                         f"(exit {result.exit_code}): {result.said()}")
        rollout.emit("compatible", f"{old_version} still works against the expanded schema"
                                   + (" (health and smoke)" if self.recipe.deploy.smoke else " (health)"))

    def _incompatible(self, rollout: "HostRollout", old_version: str | None, what: str) -> None:
        entry = self.ledger.entry(str(self.release.digest), self.release.version)
        entry.setdefault("failed", {})["compatible"] = {"at": now(), "host": str(rollout.host)}
        self._write()
        raise DeployError(f"{rollout.host}: the serving {old_version} no longer works after the expand phase of "
                          f"{self.release.version}: {what}; no traffic moved, {old_version} keeps serving",
                          hint="the expand already ran: undo it, or deploy a fix forward")

    def _deferred_contract(self) -> None:
        """`next-deploy`: the contract of the release that serves on every host, run from its image, before
        this deploy's expand; skipped for a rollback or while the hosts disagree."""
        states = [r.front.read_state() or {} for r in self.rollouts]
        digests = {state.get("digest") for state in states}
        serving = states[0]
        digest = serving.get("digest")
        if len(digests) != 1 or not digest or digest == str(self.release.digest):
            return
        entry = self.ledger.find(digest)
        if entry is None or self.ledger.ran(digest, "contract"):
            return
        if self.ledger.find(str(self.release.digest)) is not None:
            # The release being deployed ran here before: this is a step back, which the contract would break.
            self.events.emit(self.rollouts[0].host, "note", f"contract of {entry.get('version')} stays deferred: "
                                                           f"{self.release.version} is an older release")
            return
        rollout = self.rollouts[0]
        previous = dataclasses.replace(self.release, digest=digest, version=serving.get("version") or "",
                                       reference=serving["reference"])
        self._run(rollout, "contract", previous, self.spec.contract, self._launcher_env(rollout, previous), None)

    def _launcher_env(self, rollout: "HostRollout", release: Release) -> dict[str, str]:
        from imagebuild.release.deploy.rollout import launcher_env

        result = rollout.session.run(["docker", "image", "inspect", "--format", "{{json .Config}}",
                                      release.reference])
        if not result.ok:
            raise DeployError(f"{rollout.host}: cannot read the image {release.reference}: {result.said()}")
        return launcher_env(json.loads(result.stdout or "null") or {}, release)

    def _write(self) -> None:
        """The same record onto every host of the environment."""
        text = self.ledger.text()
        for rollout in self.rollouts:
            result = rollout.session.run(["sh", "-c", WRITE_RECORD, "record", rollout.instance.directory, text])
            if not result.ok:
                raise DeployError(f"{rollout.host}: writing {rollout.instance.directory}/{RECORD} failed: "
                                  f"{result.said()}")

    def entry(self) -> dict | None:
        return self.ledger.find(str(self.release.digest))
