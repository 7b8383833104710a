"""What a cluster runs for an environment, for `imagebuild status`: read from its Deployment.

Status only reads: a cluster that cannot be reached, or a kubeconfig without the context, is a note on
the environment's row, not a failure of the command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from imagebuild.errors import ImageBuildError
from imagebuild.recipe.cluster import object_name
from imagebuild.recipe.model import Recipe
from imagebuild.release.kubernetes.apply import REVISION, rollout_state, target_label
from imagebuild.release.kubernetes.manifests import (DIGEST_ANNOTATION, MANAGER, VERSION_ANNOTATION,
                                                     kubernetes_environment, selector)


@dataclass
class ClusterStatus:
    environment: str
    target: str                          # CONTEXT/NAMESPACE
    deployment: str
    version: str | None = None
    digest: str | None = None
    since: str | None = None             # when the ReplicaSet of this version was made
    replicas: int | None = None          # wanted
    ready: int | None = None
    updated: int | None = None
    rolled_out: bool | None = None       # every replica runs this version and is available
    note: str | None = None              # unreachable, never deployed, ...

    def to_dict(self) -> dict:
        return asdict(self)


def cluster_status(recipe: Recipe, environment: str) -> ClusterStatus:
    from imagebuild.release.kubernetes.cluster import Cluster

    env = kubernetes_environment(recipe, environment)
    spec = env.kubernetes
    row = ClusterStatus(environment, target_label(spec.context, spec.namespace), object_name(recipe, env))
    cluster = None
    try:
        cluster = Cluster(spec.context, MANAGER)
        found = cluster.read("Deployment", spec.namespace, row.deployment)
        if found is None:
            row.note = "never deployed"
            return row
        annotations = found.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
        row.version, row.digest = annotations.get(VERSION_ANNOTATION), annotations.get(DIGEST_ANNOTATION)
        status = found.get("status", {})
        row.replicas = found.get("spec", {}).get("replicas")
        row.ready, row.updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
        row.rolled_out = rollout_state(found)[0]
        revision = (found.get("metadata", {}).get("annotations") or {}).get(REVISION)
        labels = ",".join(f"{key}={value}" for key, value in sorted(selector(recipe, env).items()))
        for replica_set in cluster.replica_sets(spec.namespace, labels):
            if (replica_set.get("metadata", {}).get("annotations") or {}).get(REVISION) == revision:
                row.since = replica_set["metadata"].get("creationTimestamp")
    except ImageBuildError as exc:
        row.note = exc.one_line()
    finally:
        if cluster is not None:
            cluster.close()
    return row
