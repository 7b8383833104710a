"""The objects of a cluster environment: valid against the Kubernetes OpenAPI schema (kubernetes-validate,
strict: an unknown field is an error), fixed by a golden file, the same bytes every time, and holding
the digest, the probes, maxUnavailable 0 and no secret value.

IMAGEBUILD_UPDATE_GOLDEN=1 rewrites the golden file; read its diff before committing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from imagebuild.contract import DIGEST_VARIABLE, LAUNCHER_PATH
from imagebuild.errors import UserError
from imagebuild.recipe.loader import load_recipe
from imagebuild.release.kubernetes.manifests import (Migrations, PinnedImage, migrations_of, objects, selector,
                                                     to_yaml)
from imagebuild.sources.git import GitFacts

from conftest import REPO_ROOT

GOLDEN = REPO_ROOT / "tests" / "golden" / "kubernetes-prod.yaml"
# The oldest Kubernetes the manifests are meant for, and the newest schema kubernetes-validate ships.
SCHEMAS = ("1.30.0", kubernetes_validate.latest_version())
DIGEST = "sha256:" + "3f" * 32
REFERENCE = "registry.example.com/acme/shop@" + DIGEST
SECRET_VALUE = "postgres://shop:hunter2@db.internal/shop"

RECIPE = """\
name: acme/shop
registry: registry.example.com/acme
server:
  kind: command
  command: ["/bin/busybox", "httpd", "-f", "-p", "8000"]
  port: 8000
health:
  path: /health
  interval: 10
  timeout: 3
  retries: 3
  start_period: 5
detect:
  variable: SHOP_ENV
environments:
  - name: dev
    config: {LOG_LEVEL: debug}
    kubernetes: {namespace: shop-dev, replicas: 1}
  - name: prod
    config: {LOG_LEVEL: warning}
    secrets: [DATABASE_URL, PAYMENTS_TOKEN]
    kubernetes:
      context: prod
      namespace: shop
      replicas: 3
      resources:
        requests: {cpu: 250m, memory: 256Mi}
        limits: {cpu: 1, memory: 512Mi}
      secret: shop-prod
      pull_secret: registry-login
      service: {port: 80}
deploy:
  migrate: [python3, manage.py, migrate]
  drain: 20
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shop")
    (directory / "imagebuild.yaml").write_text(RECIPE)
    return load_recipe(directory, context={"git": GitFacts().as_context()})


@pytest.fixture(scope="module")
def image():
    return PinnedImage(REFERENCE, "3f2a9c1", variable="SHOP_ENV")


@pytest.fixture(scope="module")
def documents(recipe, image):
    return objects(recipe, "prod", image, Migrations(expand=("python3", "manage.py", "migrate"),
                                                     contract=("python3", "manage.py", "contract")))


def by_kind(documents, kind, phase=None):
    found = [d for d in documents if d["kind"] == kind
             and (phase is None or d["metadata"]["labels"].get("dev.imagebuild/phase") == phase)]
    assert len(found) == 1, [d["metadata"]["name"] for d in documents]
    return found[0]


def containers(document):
    """A workload's containers; a Service has none."""
    return document["spec"]["template"]["spec"]["containers"] if "template" in document["spec"] else []


@pytest.mark.parametrize("version", SCHEMAS)
def test_every_object_is_valid_against_the_openapi_schema(documents, version):
    assert [d["kind"] for d in documents] == ["Job", "Service", "Deployment", "Job"]
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_is_real_and_refuses_a_wrong_object(documents):
    """The same check fails on a field of the wrong type and on a field Kubernetes does not have."""
    wrong = yaml.safe_load(to_yaml([by_kind(documents, "Deployment")]))
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, SCHEMAS[0], strict=True)
    unknown = yaml.safe_load(to_yaml([by_kind(documents, "Service")]))
    unknown["spec"]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, SCHEMAS[0], strict=True)


def test_golden(documents):
    text = to_yaml(documents)
    if os.environ.get("IMAGEBUILD_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the manifests changed: IMAGEBUILD_UPDATE_GOLDEN=1 rewrites the golden file"
    assert list(yaml.safe_load_all(text)) == documents


def test_the_same_bytes_in_another_process(tmp_path):
    """No dict order, clock or randomness reaches the output: a fresh interpreter with another hash seed
    prints the golden file, without loading the Kubernetes client (about 2 s)."""
    (tmp_path / "imagebuild.yaml").write_text(RECIPE)
    script = (
        "import sys\n"
        "from imagebuild.recipe.loader import load_recipe\n"
        "from imagebuild.sources.git import GitFacts\n"
        "from imagebuild.release.kubernetes.manifests import Migrations, PinnedImage, objects, to_yaml\n"
        f"r = load_recipe({str(tmp_path)!r}, context={{'git': GitFacts().as_context()}})\n"
        f"i = PinnedImage({REFERENCE!r}, '3f2a9c1', variable='SHOP_ENV')\n"
        "m = Migrations(('python3', 'manage.py', 'migrate'), ('python3', 'manage.py', 'contract'))\n"
        "sys.stdout.write(to_yaml(objects(r, 'prod', i, m)))\n"
        "assert 'kubernetes' not in sys.modules, 'printing manifests loaded the Kubernetes client'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == GOLDEN.read_text()


def test_the_image_is_pinned_by_digest_everywhere(documents):
    workloads = [d for d in documents if d["kind"] != "Service"]
    assert len(workloads) == 3
    for document in workloads:
        for container in containers(document):
            assert container["image"] == REFERENCE
            assert {"name": DIGEST_VARIABLE, "value": DIGEST} in container["env"]
        assert document["metadata"]["annotations"]["dev.imagebuild/digest"] == DIGEST
    with pytest.raises(UserError, match="not an image pinned by digest"):
        PinnedImage("registry.example.com/acme/shop:prod", "3f2a9c1")
    with pytest.raises(UserError):
        PinnedImage("registry.example.com/acme/shop:prod@sha256:abc", "3f2a9c1")


def test_the_deployment_rolls_with_no_pod_down_and_is_probed_from_health(documents):
    deployment = by_kind(documents, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["revisionHistoryLimit"] >= 1       # the rollback needs the previous ReplicaSet
    (container,) = containers(deployment)
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["readinessProbe"] == {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2,
                                           "timeoutSeconds": 3, "failureThreshold": 3, "successThreshold": 1}
    assert container["livenessProbe"] == {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                                          "timeoutSeconds": 3, "failureThreshold": 3, "initialDelaySeconds": 5}
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"cpu": "1", "memory": "512Mi"}}
    # The launcher's variable is the one the image names (detect.variable), set to the environment.
    assert container["env"][0] == {"name": "SHOP_ENV", "value": "prod"}
    assert "command" not in container and "args" not in container    # the image's launcher starts the server
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 20
    assert pod["imagePullSecrets"] == [{"name": "registry-login"}]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_service_reaches_the_servers_and_never_a_migration(recipe, documents):
    service = by_kind(documents, "Service")
    wanted = selector(recipe, recipe.environment("prod"))
    assert service["spec"]["selector"] == wanted
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert by_kind(documents, "Deployment")["spec"]["selector"]["matchLabels"] == wanted
    server_labels = by_kind(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert wanted.items() <= server_labels.items()
    for phase in ("expand", "contract"):
        labels = by_kind(documents, "Job", phase)["spec"]["template"]["metadata"]["labels"]
        assert not wanted.items() <= labels.items(), f"the Service would send traffic to the {phase} Job"


def test_migration_jobs_run_the_argv_through_the_launcher_once(documents):
    for phase, argv in (("expand", ["python3", "manage.py", "migrate"]), ("contract", ["python3", "manage.py", "contract"])):
        job = by_kind(documents, "Job", phase)
        assert job["metadata"]["name"] == f"acme-shop-prod-{phase}-{'3f' * 6}"
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        (container,) = containers(job)
        assert container["command"] == [LAUNCHER_PATH] and container["args"] == argv
        assert container["envFrom"] == [{"secretRef": {"name": "shop-prod"}}]
        assert container["env"][0] == {"name": "SHOP_ENV", "value": "prod"}


def test_today_deploy_migrate_is_the_expand_phase(recipe, image):
    assert migrations_of(recipe) == Migrations(expand=("python3", "manage.py", "migrate"))
    kinds = [(d["kind"], d["metadata"]["labels"].get("dev.imagebuild/phase")) for d in objects(recipe, "prod", image)]
    assert kinds == [("Job", "expand"), ("Service", None), ("Deployment", None)]
    parts = objects(recipe, "prod", image, parts=["deployment"])
    assert [d["kind"] for d in parts] == ["Deployment"]


def test_no_secret_value_anywhere(recipe, image, monkeypatch):
    """The Secret is named, never read: values set where a careless tool would look never reach the output."""
    monkeypatch.setenv("DATABASE_URL", SECRET_VALUE)
    monkeypatch.setenv("PAYMENTS_TOKEN", "tok_live_hunter2")
    text = to_yaml(objects(recipe, "prod", image, Migrations(("migrate",), ("contract",))))
    assert "hunter2" not in text
    for document in yaml.safe_load_all(text):
        assert document["kind"] != "Secret"
        for container in containers(document):
            assert [entry["name"] for entry in container["env"]] == ["SHOP_ENV", DIGEST_VARIABLE]
            assert container["envFrom"] == [{"secretRef": {"name": "shop-prod"}}]
    # The config is baked into the image; the objects do not repeat it.
    assert "LOG_LEVEL" not in text


def test_an_environment_without_a_cluster_is_refused(recipe, image, tmp_path):
    (tmp_path / "imagebuild.yaml").write_text(RECIPE.replace("    kubernetes: {namespace: shop-dev, replicas: 1}\n", ""))
    plain = load_recipe(tmp_path, context={"git": GitFacts().as_context()})
    with pytest.raises(UserError, match="environment dev names no cluster"):
        objects(plain, "dev", image)
    with pytest.raises(UserError, match="no environment 'staging'"):
        objects(recipe, "staging", image)


def test_kustomize_reads_the_output_unchanged(documents, tmp_path):
    """`kubectl kustomize` (kustomize built into kubectl) over the printed file gives the same objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed, so kustomize cannot be run here")
    (tmp_path / "shop.yaml").write_text(to_yaml(documents))
    (tmp_path / "kustomization.yaml").write_text("resources:\n- shop.yaml\n")
    done = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    built = sorted(yaml.safe_load_all(done.stdout), key=lambda d: (d["kind"], d["metadata"]["name"]))
    assert built == sorted(documents, key=lambda d: (d["kind"], d["metadata"]["name"]))


def test_the_port_is_server_port_unless_the_image_exposes_only_others(recipe):
    """As the SSH deploy does: a rollback to an image baked with another port is probed on its own port."""
    def port(*exposed):
        image = PinnedImage(REFERENCE, "old", ports=exposed)
        (container,) = containers(objects(recipe, "prod", image, parts=["deployment"])[0])
        return container["ports"][0]["containerPort"]

    assert port() == 8000 and port(8000, 9000) == 8000 and port(9000, 9100) == 9000


def test_deploy_migrations_give_both_phases_when_the_recipe_has_them(recipe):
    """`deploy.migrations: {expand, contract}`: the Jobs run exactly the recipe's phases; deploy.migrate is
    the short form of expand."""
    import dataclasses

    from imagebuild.recipe.model import MigrationsSpec

    both = dataclasses.replace(recipe.deploy, migrate=(), migrations=MigrationsSpec(
        expand=("manage.py", "expand"), contract=("manage.py", "contract")))
    assert migrations_of(dataclasses.replace(recipe, deploy=both)) == Migrations(("manage.py", "expand"),
                                                                                 ("manage.py", "contract"))
    short = dataclasses.replace(recipe.deploy, migrate=("migrate",), migrations=MigrationsSpec(contract=("c",)))
    assert migrations_of(dataclasses.replace(recipe, deploy=short)) == Migrations(("migrate",), ("c",))
