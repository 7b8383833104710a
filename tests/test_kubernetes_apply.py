"""`imagebuild deploy` and `status` against a real Kubernetes API server: expand Job, server-side apply,
the rollout watched to the end, the rollback of a release whose pods never turn ready (exit 6), a failing
migration stopping the deploy before any pod changes, the contract Job after the rollout.

These run only where KUBECONFIG names a cluster (its current context), and are reported as skipped
otherwise: no fake API server stands in for one. The images are pushed to IMAGEBUILD_TEST_KUBE_REGISTRY
(default: the test registry, 127.0.0.1:5000), which the cluster's nodes must be able to pull from
(IMAGEBUILD_TEST_KUBE_INSECURE=1 when it speaks plain HTTP and is not on loopback). Each run works in a
namespace of its own, deleted at the end.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from imagebuild.oci.reference import Reference
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.conftest import REGISTRY, imagebuild
from tests.registry_support.images import write_server_image

KUBECONFIG = os.environ.get("KUBECONFIG")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not KUBECONFIG, reason="KUBECONFIG is not set: no Kubernetes API server to test the apply, "
                                               "rollout and rollback path against (schema and golden tests still ran)"),
]
KUBE_REGISTRY = os.environ.get("IMAGEBUILD_TEST_KUBE_REGISTRY", REGISTRY)
SECRET_VALUE = "postgres://app:hunter2@db/app"

RECIPE = """\
name: web
registry: {home}
server:
  kind: command
  command: ["/bin/busybox", "httpd", "-f", "-p", "8000"]
  port: 8000
health: {{path: /health, interval: 2, timeout: 1, retries: 2, start_period: 2}}
environments:
  - name: dev
    secrets: [DATABASE_URL]
    kubernetes:
      namespace: {namespace}
      replicas: 2
      secret: web-secrets
      rollout_timeout: {rollout_timeout}
      job_timeout: 120
      resources: {{requests: {{cpu: 10m, memory: 16Mi}}, limits: {{memory: 64Mi}}}}
deploy:
  migrate: {migrate}
  drain: 1
"""


@pytest.fixture(scope="module")
def cluster():
    from kubernetes import client, config

    api = config.new_client_from_config(persist_config=False)
    core = client.CoreV1Api(api)
    namespace = f"imagebuild-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="web-secrets"),
                                                             string_data={"DATABASE_URL": SECRET_VALUE}))
    try:
        yield {"namespace": namespace, "apps": client.AppsV1Api(api), "batch": client.BatchV1Api(api)}
    finally:
        core.delete_namespace(namespace)
        api.close()


@pytest.fixture(scope="module")
def app(registry, cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("kube-apply")
    store = LayoutStore(root / "store").ensure()
    home = f"{KUBE_REGISTRY}/kube-{uuid.uuid4().hex[:10]}"
    for version, healthy in (("v1", True), ("v2", True), ("v3", False)):
        push_image(store, write_server_image(store, "web", version, healthy=healthy), Reference.parse(f"{home}/web"),
                   insecure=True if os.environ.get("IMAGEBUILD_TEST_KUBE_INSECURE") else None)
    state = {"root": root, "home": home, "namespace": cluster["namespace"]}
    write_recipe(state)
    return state


def write_recipe(app, migrate='["/bin/sh", "-c", "echo expanded"]', rollout_timeout=60):
    (app["root"] / "imagebuild.yaml").write_text(RECIPE.format(home=app["home"], namespace=app["namespace"],
                                                               migrate=migrate, rollout_timeout=rollout_timeout))


def cli(app, *argv):
    extra = ["--insecure"] if os.environ.get("IMAGEBUILD_TEST_KUBE_INSECURE") else []
    return imagebuild(*argv, "--recipe", app["root"], "--store", app["root"] / "store", *extra)


def promote_and_deploy(app, version):
    promoted = cli(app, "promote", version, "--to", "dev")
    assert promoted.returncode == 0, promoted.stderr
    return cli(app, "deploy", "dev", "--json")


def serving(cluster):
    found = cluster["apps"].read_namespaced_deployment("web-dev", cluster["namespace"])
    return found.spec.template.metadata.annotations["dev.imagebuild/version"], found.status.ready_replicas


def test_deploy_rolls_out_reruns_nothing_and_rolls_back_what_never_turns_ready(app, cluster):
    first = promote_and_deploy(app, "v1")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["action"], result["migrated"], result["previous_version"]) == ("deployed", ["expand"], None)
    assert serving(cluster) == ("v1", 2)
    assert "hunter2" not in first.stdout + first.stderr

    again = cli(app, "deploy", "dev", "--json")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["action"], json.loads(again.stdout)["migrated"]) == ("unchanged", [])
    assert "already succeeded" in again.stderr          # the expand Job of this digest is not run twice

    second = promote_and_deploy(app, "v2")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["previous_version"] == "v1"
    assert serving(cluster) == ("v2", 2)

    broken = promote_and_deploy(app, "v3")            # /health answers 404: never ready
    assert broken.returncode == 6, broken.stderr
    assert "v3 did not roll out" in broken.stderr and "rolled back to v2, which serves" in broken.stderr
    assert serving(cluster) == ("v2", 2)

    shown = cli(app, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["environments"]
    assert row["version"] == "v3" and row["cluster"]["version"] == "v2" and row["cluster"]["rolled_out"] is True


def test_a_failing_expand_migration_changes_no_pod(app, cluster):
    before = serving(cluster) if deployed(cluster) else None
    write_recipe(app, migrate='["/bin/sh", "-c", "echo column users.email already exists >&2; exit 3"]')
    try:
        failed = promote_and_deploy(app, "v1")
    finally:
        write_recipe(app)
    assert failed.returncode == 6, failed.stderr
    assert "expand migration" in failed.stderr and "column users.email already exists" in failed.stderr
    assert (serving(cluster) if deployed(cluster) else None) == before


def deployed(cluster) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster["apps"].read_namespaced_deployment("web-dev", cluster["namespace"])
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_the_contract_job_runs_after_the_rollout(app, cluster):
    """Expand and contract argv lists as `deploy.migrations` gives them: contract only once every pod runs
    the new release."""
    from imagebuild.recipe.loader import load_recipe
    from imagebuild.release.kubernetes.apply import deploy
    from imagebuild.release.kubernetes.cluster import Cluster
    from imagebuild.release.kubernetes.manifests import MANAGER, Migrations
    from imagebuild.release.kubernetes.resolve import pinned_image
    from imagebuild.release.promote import Places

    assert cli(app, "promote", "v2", "--to", "dev").returncode == 0
    recipe = load_recipe(app["root"])
    places = Places(recipe.name, recipe.registry, LayoutStore(app["root"] / "store"),
                    insecure=True if os.environ.get("IMAGEBUILD_TEST_KUBE_INSECURE") else None)
    try:
        image, release = pinned_image(recipe, places, "dev")
    finally:
        places.close()
    connection = Cluster(None, MANAGER)
    try:
        result = deploy(recipe, release, image, connection,
                        migrations=Migrations(expand=("/bin/sh", "-c", "echo expanded"),
                                              contract=("/bin/sh", "-c", "echo contracted")))
    finally:
        connection.close()
    steps = [event.step for event in result.events]
    assert "contract" in result.migrated
    assert steps.index("contracted") > steps.index("rolled-out")
    job = cluster["batch"].read_namespaced_job(f"web-dev-contract-{image.digest[7:19]}", cluster["namespace"])
    assert job.status.succeeded == 1
    assert serving(cluster) == ("v2", 2)
