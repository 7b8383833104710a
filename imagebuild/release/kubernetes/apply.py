"""`imagebuild deploy ENV` for an environment that names a cluster.

1. the expand Job (the migration before traffic moves) is applied and waited for; a failure stops the
   deploy before the Deployment changes, and the old pods keep serving;
2. the Service and the Deployment are applied (server-side apply, field manager `imagebuild`);
3. the rollout is watched as `kubectl rollout status` watches it: every replica updated and available,
   no old one left; a new pod that cannot start (its image, its Secret, a crash loop) fails it at once,
   a pod that never turns ready fails it after `kubernetes.rollout_timeout` seconds;
4. on failure the Deployment is rolled back as `kubectl rollout undo` does (the previous ReplicaSet's pod
   template put back) and the command exits 6; maxUnavailable 0 kept the old pods serving all along;
5. the contract Job (the migration after the old version is gone) is applied and waited for.

A Job is named after its phase and the digest, so deploying the same digest again finds the Job that
already succeeded and does not run it twice; a failed one is deleted and run again, and one still
running is waited for, never cut off.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

from imagebuild.errors import DeployError
from imagebuild.recipe.cluster import object_name
from imagebuild.recipe.model import Recipe
from imagebuild.release.deploy.release import Release
from imagebuild.release.events import Event, Events
from imagebuild.release.kubernetes.cluster import Cluster
from imagebuild.release.kubernetes.manifests import (DIGEST_ANNOTATION, VERSION_ANNOTATION, Migrations, PinnedImage,
                                                     job, kubernetes_environment, migrations_of, selector,
                                                     deployment as deployment_object, service as service_object)

REVISION = "deployment.kubernetes.io/revision"
POLL = 1.0                      # seconds between looks at the cluster
GONE_WAIT = 60                  # seconds a deleted Job gets to disappear
# Waiting reasons that do not mend by waiting: the image cannot be pulled, the Secret or a key is
# missing, the container keeps crashing.
STUCK = frozenset({"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                   "CreateContainerError", "CrashLoopBackOff"})


class RolloutFailed(Exception):
    """The new pods did not become ready; the message says what the cluster showed."""


@dataclass
class ClusterDeployResult:
    release: Release
    target: str                          # CONTEXT/NAMESPACE
    deployment: str
    action: str = "deployed"             # "deployed" | "unchanged"
    previous_version: str | None = None
    previous_digest: str | None = None
    migrated: list[str] = field(default_factory=list)    # the phases whose Job ran
    seconds: float = 0.0
    events: list[Event] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"environment": self.release.environment, "digest": self.release.digest,
                "version": self.release.version, "reference": self.release.reference,
                "rolled_back": self.release.rolled_back, "target": self.target, "deployment": self.deployment,
                "action": self.action, "previous_version": self.previous_version,
                "previous_digest": self.previous_digest, "migrated": self.migrated,
                "seconds": round(self.seconds, 3), "events": [e.to_dict() for e in self.events]}


def target_label(context: str | None, namespace: str) -> str:
    return f"{context or '(current context)'}/{namespace}"


def deploy(recipe: Recipe, release: Release, image: PinnedImage, cluster: Cluster,
           listener: Callable[[Event], None] | None = None, migrations: Migrations | None = None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
           ) -> ClusterDeployResult:
    env = kubernetes_environment(recipe, release.environment)
    rollout = ClusterRollout(recipe, env, image, cluster, Events(listener), clock, sleep)
    result = ClusterDeployResult(release, rollout.target, rollout.name)
    started = clock()
    try:
        rollout.run(migrations if migrations is not None else migrations_of(recipe), result)
    finally:
        result.events = rollout.events.items
    result.seconds = clock() - started
    return result


class ClusterRollout:
    def __init__(self, recipe: Recipe, env, image: PinnedImage, cluster: Cluster, events: Events,
                 clock: Callable[[], float], sleep: Callable[[float], None]):
        self.recipe, self.env, self.image, self.cluster = recipe, env, image, cluster
        self.events, self.clock, self.sleep = events, clock, sleep
        self.spec = env.kubernetes
        self.namespace = self.spec.namespace
        self.name = object_name(recipe, env)
        self.target = target_label(self.spec.context, self.namespace)
        self.selector = ",".join(f"{key}={value}" for key, value in sorted(selector(recipe, env).items()))

    def emit(self, step: str, message: str) -> None:
        self.events.emit(self.target, step, message)

    def run(self, migrations: Migrations, result: ClusterDeployResult) -> None:
        current = self.cluster.read("Deployment", self.namespace, self.name)
        if current is not None:
            annotations = _template_annotations(current)
            result.previous_digest = annotations.get(DIGEST_ANNOTATION)
            result.previous_version = annotations.get(VERSION_ANNOTATION)
        serving = result.previous_version or "nothing"
        self.emit("check", f"Deployment {self.name} at {self.cluster.server}: "
                           + (f"runs {serving}" if current is not None else "not there yet"))
        if migrations.expand and self.run_job("expand", migrations.expand, f"no pod changed, {serving} keeps serving"):
            result.migrated.append("expand")
        self.cluster.apply(service_object(self.recipe, self.env))
        applied = self.cluster.apply(deployment_object(self.recipe, self.env, self.image))
        unchanged = current is not None and applied.get("metadata", {}).get("generation") == \
            current.get("metadata", {}).get("generation")
        result.action = "unchanged" if unchanged else "deployed"
        self.emit("apply", f"Service and Deployment {self.name}: {self.image.reference}, "
                           f"{self.spec.replicas} replica(s)" + (" (no change)" if unchanged else ""))
        try:
            self.wait_rollout(self.image.digest, self.spec.rollout_timeout)
        except RolloutFailed as exc:
            if unchanged:   # this deploy changed nothing, so there is nothing of it to undo
                raise DeployError(f"{self.target}: {self.image.version} already ran there and is not fully "
                                  f"available: {exc}; nothing was changed") from None
            back = self.roll_back(current)
            raise DeployError(f"{self.target}: {self.image.version} did not roll out: {exc}; {back}") from None
        self.emit("rolled-out", f"{self.spec.replicas} of {self.spec.replicas} pod(s) run {self.image.version}")
        if migrations.contract and self.run_job(
                "contract", migrations.contract,
                f"{self.image.version} serves; run `imagebuild deploy {self.env.name}` again to retry it"):
            result.migrated.append("contract")

    # -- migrations --------------------------------------------------------------------------------

    def run_job(self, phase: str, argv, after_failure: str) -> bool:
        """True when the Job ran now, False when it had already succeeded for this digest."""
        document = job(self.recipe, self.env, self.image, phase, argv)
        name = document["metadata"]["name"]
        shown = " ".join(argv)
        existing = self.cluster.read("Job", self.namespace, name)
        finished = existing is not None and (_condition(existing, "Complete") or _condition(existing, "Failed"))
        same = existing is not None and _job_args(existing) == list(argv)
        if existing is not None and same and _condition(existing, "Complete"):
            self.emit(phase, f"Job {name} already succeeded for {self.image.version}; not run again")
            return False
        if existing is not None and not finished:
            # A migration under way (an earlier deploy stopped while it ran) is never cut off.
            if not same:
                raise DeployError(f"{self.target}: Job {name} still runs `{' '.join(_job_args(existing))}` from an "
                                  f"earlier deploy; {after_failure}",
                                  hint=f"wait for it, or stop it with kubectl -n {self.namespace} delete job {name}")
            self.emit(phase, f"Job {name} still runs from an earlier attempt; waiting for it")
        else:
            if existing is not None:
                self.emit(phase, f"Job {name} is there from an earlier attempt; deleting it to run it again")
                self.cluster.delete_job(self.namespace, name)
                self._wait_gone(name)
            self.emit(phase, f"Job {name}: running `{shown}` from {self.image.version}")
            self.cluster.apply(document)
        deadline = self.clock() + self.spec.job_timeout + 30
        while True:
            found = self.cluster.read("Job", self.namespace, name) or {}
            if _condition(found, "Complete"):
                self.emit(f"{phase}ed", f"`{shown}` succeeded")
                return True
            failed = _condition(found, "Failed")
            pods = self.cluster.pods(self.namespace, f"job-name={name}")
            stuck = next(filter(None, (_stuck(pod) for pod in pods)), None)
            if failed or stuck or self.clock() > deadline:
                said = self._job_said(pods, phase)
                why = (f"{failed.get('reason')}: {failed.get('message') or 'the pod failed'}" if failed
                       else stuck or f"not finished within {self.spec.job_timeout} s")
                if not failed:
                    self.cluster.delete_job(self.namespace, name)
                raise DeployError(f"{self.target}: {phase} migration `{shown}` from {self.image.version} failed "
                                  f"({why}){said}; {after_failure}")
            self.sleep(POLL)

    def _job_said(self, pods: list[dict], container: str) -> str:
        for pod in pods:
            line = self.cluster.log_tail(self.namespace, pod["metadata"]["name"], container)
            if line:
                return f": {line}"
        return ""

    def _wait_gone(self, name: str) -> None:
        deadline = self.clock() + GONE_WAIT
        while self.cluster.read("Job", self.namespace, name) is not None:
            if self.clock() > deadline:
                raise DeployError(f"{self.target}: Job {name} was deleted but is still there after {GONE_WAIT} s",
                                  hint=f"check its finalizers: kubectl -n {self.namespace} get job {name} -o yaml")
            self.sleep(POLL)

    # -- the rollout --------------------------------------------------------------------------------

    def wait_rollout(self, digest: str, timeout: int) -> None:
        """Until every replica runs `digest` and is available, as `kubectl rollout status` decides."""
        deadline = self.clock() + timeout
        shown = None
        while True:
            found = self.cluster.read("Deployment", self.namespace, self.name) or {}
            done, progress = rollout_state(found)
            if done:
                return
            if progress != shown:
                self.emit("progress", progress)
                shown = progress
            pods = [pod for pod in self.cluster.pods(self.namespace, self.selector)
                    if (pod.get("metadata", {}).get("annotations") or {}).get(DIGEST_ANNOTATION) == digest]
            stuck = next(filter(None, (_stuck(pod) for pod in pods)), None)
            if stuck:
                raise RolloutFailed(stuck)
            # The controller's verdict counts only once it has seen this spec: before, it may be a stale one.
            seen = found.get("status", {}).get("observedGeneration", 0) >= found.get("metadata", {}).get("generation", 0)
            deadline_passed = seen and _condition(found, "Progressing", reason="ProgressDeadlineExceeded")
            if deadline_passed or self.clock() > deadline:
                raise RolloutFailed(f"not ready within {timeout} s ({progress}){self._unready(pods)}")
            self.sleep(POLL)

    def _unready(self, pods: list[dict]) -> str:
        for pod in pods:
            if not _condition(pod, "Ready"):
                said = self.cluster.last_event(self.namespace, pod["metadata"]["name"])
                if said:
                    return f"; pod {pod['metadata']['name']}: {said}"
        return ""

    def roll_back(self, before: dict | None) -> str:
        """`kubectl rollout undo`, aimed: the pod template of the ReplicaSet that served before this deploy
        (the one with the digest `before` ran; by revision for a Deployment imagebuild did not make) is
        put back. Aimed, because "the revision before the newest" is the wrong one when the controller
        never made a ReplicaSet for this deploy."""
        if before is None:
            return (f"nothing ran before, so there is nothing to roll back to: Deployment {self.name} stays as it "
                    "is (fix the release and deploy again, or delete it)")
        now = self.cluster.read("Deployment", self.namespace, self.name) or before
        uid = now.get("metadata", {}).get("uid")
        owned = [rs for rs in self.cluster.replica_sets(self.namespace, self.selector)
                 if any(ref.get("uid") == uid for ref in rs.get("metadata", {}).get("ownerReferences") or [])]
        wanted = _template_annotations(before).get(DIGEST_ANNOTATION)
        if wanted:
            candidates = [rs for rs in owned if _template_annotations(rs).get(DIGEST_ANNOTATION) == wanted]
        else:
            candidates = [rs for rs in owned if _revision(rs) < _revision(now)]
        if candidates:
            previous = max(candidates, key=_revision)
            template = copy.deepcopy(previous["spec"]["template"])
            (template.get("metadata", {}).get("labels") or {}).pop("pod-template-hash", None)
            source = f"the pod template of revision {_revision(previous)}"
        else:   # its ReplicaSet is gone: the template read before the apply is the same one
            template = copy.deepcopy(before["spec"]["template"])
            source = "the pod template read before this deploy"
        annotations = template.get("metadata", {}).get("annotations") or {}
        version = annotations.get(VERSION_ANNOTATION) or "the previous release"
        self.emit("roll-back", f"putting back {source} ({version})")
        self.cluster.replace_template(self.namespace, self.name, template)
        try:
            self.wait_rollout(annotations.get(DIGEST_ANNOTATION) or "", self.spec.rollout_timeout)
        except RolloutFailed as exc:
            return f"rolled back to {version}, which is not ready either: {exc}"
        self.emit("rolled-back", f"{version} serves again")
        return f"rolled back to {version}, which serves"


def rollout_state(deployment: dict) -> tuple[bool, str]:
    """(done, what it waits for): kubectl's rule for a RollingUpdate Deployment."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    progress = f"{updated} of {wanted} updated, {available} available, {max(total - updated, 0)} old"
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False, "waiting for the controller to see the new spec"
    if updated < wanted or total > updated or available < updated:
        return False, progress
    return True, progress


def _template_annotations(deployment: dict) -> dict:
    return deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}


def _revision(obj: dict) -> int:
    text = (obj.get("metadata", {}).get("annotations") or {}).get(REVISION, "0")
    return int(text) if str(text).isdigit() else 0


def _condition(obj: dict, kind: str, reason: str | None = None) -> dict | None:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind and (reason is None and condition.get("status") == "True"
                                              or reason is not None and condition.get("reason") == reason):
            return condition
    return None


def _stuck(pod: dict) -> str | None:
    """Why a pod cannot start, when waiting will not mend it."""
    status = pod.get("status", {})
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK:
            message = " ".join(str(waiting.get("message") or "").split())[:300]
            return f"pod {pod['metadata']['name']}: {waiting['reason']}" + (f": {message}" if message else "")
    return None


def _job_args(found: dict) -> list:
    containers = found.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    return list(containers[0].get("args") or [])
