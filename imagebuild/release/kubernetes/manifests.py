"""The Kubernetes objects of an environment at one digest: pure values, no I/O, the same every time.

One Deployment (the image by digest, never a tag; the launcher's variable naming the environment; the
environment's Secret as envFrom; probes from `health`; RollingUpdate with maxUnavailable 0), one
Service, and a migration Job per phase (expand before the rollout, contract after it), run from the
same digest through the image's launcher. `imagebuild manifests` prints them (to_yaml) and
`imagebuild deploy` applies them (apply.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import yaml

from imagebuild.contract import DEFAULT_VARIABLE, DIGEST_VARIABLE, KUBERNETES_LABEL, LAUNCHER_PATH
from imagebuild.errors import UserError
from imagebuild.recipe.cluster import object_name
from imagebuild.recipe.model import Environment, Recipe, environment_index

MANAGER = "imagebuild"                    # app.kubernetes.io/managed-by, and the server-side apply field manager
CONTAINER = "app"
PORT_NAME = "http"
READY_PERIOD = 2                          # seconds between readiness probes at most: a ready pod gets traffic soon
PRESTOP_SECONDS = 5                       # a stopping pod keeps serving while the endpoints drop it
JOB_TTL = 7 * 86_400                      # finished Jobs (and their logs) stay a week
REVISION_HISTORY = 10                     # old ReplicaSets kept: the rollback restores the previous one
PHASES = ("expand", "contract")
PARTS = ("service", "deployment", "expand", "contract")
ENVIRONMENT_LABEL = KUBERNETES_LABEL + "environment"
PHASE_LABEL = KUBERNETES_LABEL + "phase"
DIGEST_ANNOTATION = KUBERNETES_LABEL + "digest"
VERSION_ANNOTATION = KUBERNETES_LABEL + "version"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?\Z")
_PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class PinnedImage:
    """What runs: REGISTRY/REPOSITORY@sha256:..., its version, the variable its launcher reads, and the
    TCP ports its config exposes (none: unknown)."""

    reference: str
    version: str
    variable: str = DEFAULT_VARIABLE
    ports: tuple[int, ...] = ()

    def __post_init__(self):
        if not _PINNED.match(self.reference):
            raise UserError(f"{self.reference!r} is not an image pinned by digest",
                            hint="the cluster runs REGISTRY/NAME@sha256:..., never a tag")

    @property
    def digest(self) -> str:
        return self.reference.rpartition("@")[2]


@dataclass(frozen=True)
class Migrations:
    """The argv of each migration phase: expand runs before the rollout, contract after it."""

    expand: tuple[str, ...] = ()
    contract: tuple[str, ...] = ()


def migrations_of(recipe: Recipe) -> Migrations:
    """`deploy.migrations: {expand, contract}` where the recipe has it; `deploy.migrate` is the expand phase."""
    return Migrations(expand=tuple(recipe.deploy.expand), contract=tuple(recipe.deploy.migrations.contract))


def kubernetes_environment(recipe: Recipe, environment: str) -> Environment:
    """The environment, which must name a cluster; else a UserError saying how to."""
    env = recipe.environments[environment_index(recipe.environments, environment)]
    if env.kubernetes is None:
        raise UserError(f"environment {environment} names no cluster",
                        hint=f"add `kubernetes: {{namespace: NAME}}` to {environment} in the recipe")
    return env


def selector(recipe: Recipe, env: Environment) -> dict[str, str]:
    """The labels that pick the environment's serving pods (never a migration Job's): fixed for the
    Deployment's life, since a Deployment's selector cannot change."""
    return {"app.kubernetes.io/name": _label_value(recipe.name), "app.kubernetes.io/instance": object_name(recipe, env),
            "app.kubernetes.io/component": "server"}


def container_port(recipe: Recipe, image: PinnedImage) -> int:
    """`server.port`, unless the image exposes other ports only (an older image baked with another
    port): then its first one, as the SSH deploy takes it."""
    if not image.ports or recipe.server.port in image.ports:
        return recipe.server.port
    return image.ports[0]


def job_name(recipe: Recipe, env: Environment, phase: str, image: PinnedImage) -> str:
    """One Job per phase and digest: deploying the same digest again finds the Job that already ran."""
    return f"{object_name(recipe, env)}-{phase}-{image.digest.removeprefix('sha256:')[:12]}"


def objects(recipe: Recipe, environment: str, image: PinnedImage, migrations: Migrations | None = None,
            parts: Iterable[str] = PARTS) -> list[dict[str, Any]]:
    """The environment's objects in the order they act: expand Job, Service, Deployment, contract Job.
    A phase without an argv has no Job."""
    env = kubernetes_environment(recipe, environment)
    migrations = migrations if migrations is not None else migrations_of(recipe)
    wanted = set(parts)
    unknown = sorted(wanted - set(PARTS))
    if unknown:
        raise UserError(f"unknown part {unknown[0]!r}", hint=f"parts: {', '.join(PARTS)}")
    out: list[dict[str, Any]] = []
    if "expand" in wanted and migrations.expand:
        out.append(job(recipe, env, image, "expand", migrations.expand))
    if "service" in wanted:
        out.append(service(recipe, env))
    if "deployment" in wanted:
        out.append(deployment(recipe, env, image))
    if "contract" in wanted and migrations.contract:
        out.append(job(recipe, env, image, "contract", migrations.contract))
    return out


def deployment(recipe: Recipe, env: Environment, image: PinnedImage) -> dict[str, Any]:
    spec = env.kubernetes
    pod_labels = {**_labels(env, image), **selector(recipe, env)}
    container = {**_container(recipe, env, image),
                 "ports": [{"name": PORT_NAME, "containerPort": container_port(recipe, image), "protocol": "TCP"}],
                 "readinessProbe": _probe(recipe, readiness=True),
                 "livenessProbe": _probe(recipe, readiness=False),
                 "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(env, image, object_name(recipe, env), {**pod_labels}),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": REVISION_HISTORY,
            "progressDeadlineSeconds": spec.rollout_timeout,
            "selector": {"matchLabels": selector(recipe, env)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": _annotations(image)},
                "spec": {**_pod_spec(recipe, env, container),
                         # The server gets SIGTERM after the preStop pause, then `deploy.drain` seconds to finish.
                         "terminationGracePeriodSeconds": PRESTOP_SECONDS + recipe.deploy.drain},
            },
        },
    }


def service(recipe: Recipe, env: Environment) -> dict[str, Any]:
    spec = env.kubernetes
    labels = {**_labels(env, None), **selector(recipe, env)}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(recipe, env), "namespace": spec.namespace, "labels": labels},
        "spec": {"type": spec.service.type, "selector": selector(recipe, env),
                 "ports": [{"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}]},
    }


def job(recipe: Recipe, env: Environment, image: PinnedImage, phase: str, argv: Sequence[str]) -> dict[str, Any]:
    """A migration: the argv run once through the image's launcher, as the environment's pods run (same
    variables, same Secret); no retry, since a half-applied migration is not safe to run blindly again."""
    if phase not in PHASES:
        raise ValueError(f"unknown migration phase {phase!r}")
    labels = {**_labels(env, image), "app.kubernetes.io/name": _label_value(recipe.name),
              "app.kubernetes.io/instance": object_name(recipe, env), "app.kubernetes.io/component": "migration",
              PHASE_LABEL: phase}
    container = {**_container(recipe, env, image), "name": phase, "command": [LAUNCHER_PATH], "args": list(argv)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(env, image, job_name(recipe, env, phase, image), labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": env.kubernetes.job_timeout,
            "ttlSecondsAfterFinished": JOB_TTL,
            "template": {"metadata": {"labels": labels, "annotations": _annotations(image)},
                         "spec": {**_pod_spec(recipe, env, container), "restartPolicy": "Never"}},
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: each document stands alone, as kubectl and kustomize read them best."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(documents: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML, keys sorted, block style: the same bytes for the same objects."""
    return yaml.dump_all(documents, Dumper=_PlainDumper, explicit_start=True, sort_keys=True,
                         default_flow_style=False, allow_unicode=True, width=1_000_000)


# -- the parts -----------------------------------------------------------------------------------

def _labels(env: Environment, image: PinnedImage | None) -> dict[str, str]:
    labels = {"app.kubernetes.io/managed-by": MANAGER, ENVIRONMENT_LABEL: env.name}
    if image is not None and _LABEL_VALUE.match(image.version):
        labels["app.kubernetes.io/version"] = image.version
    return labels


def _annotations(image: PinnedImage) -> dict[str, str]:
    return {DIGEST_ANNOTATION: image.digest, VERSION_ANNOTATION: image.version}


def _metadata(env: Environment, image: PinnedImage, name: str, labels: dict) -> dict[str, Any]:
    return {"name": name, "namespace": env.kubernetes.namespace, "labels": labels, "annotations": _annotations(image)}


def _container(recipe: Recipe, env: Environment, image: PinnedImage) -> dict[str, Any]:
    spec = env.kubernetes
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image.reference,
        "imagePullPolicy": "IfNotPresent",    # a digest never changes what it names
        "env": [{"name": image.variable, "value": env.name}, {"name": DIGEST_VARIABLE, "value": image.digest}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if spec.secret:
        container["envFrom"] = [{"secretRef": {"name": spec.secret}}]
    resources = {kind: dict(getattr(spec.resources, kind)) for kind in ("requests", "limits")
                 if getattr(spec.resources, kind)}
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(recipe: Recipe, env: Environment, container: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [container], "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}
    if recipe.app.user.partition(":")[0] != "0":
        pod["securityContext"]["runAsNonRoot"] = True
    if env.kubernetes.pull_secret:
        pod["imagePullSecrets"] = [{"name": env.kubernetes.pull_secret}]
    return pod


def _probe(recipe: Recipe, readiness: bool) -> dict[str, Any]:
    """From `health`, as the image's Docker Healthcheck reads it: liveness waits start_period, then
    checks every interval; readiness checks from the start, every READY_PERIOD seconds at most."""
    health = recipe.health
    probe: dict[str, Any] = {"httpGet": {"path": health.path, "port": PORT_NAME},
                             "timeoutSeconds": health.timeout, "failureThreshold": health.retries}
    if readiness:
        probe["periodSeconds"] = min(health.interval, READY_PERIOD)
        probe["successThreshold"] = 1
    else:
        probe["periodSeconds"] = health.interval
        probe["initialDelaySeconds"] = health.start_period
    return probe


def _label_value(text: str) -> str:
    """A recipe name as a label value: `/` is not allowed there."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.") or "app"
