"""`environments[].kubernetes`: a good one loads into the frozen types; each mistake is one line at its key,
from load_recipe and from the command line alike (exit 2, no traceback)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError
from imagebuild.recipe.cluster import MAX_NAME, object_name, quantity
from imagebuild.recipe.loader import load_recipe
from imagebuild.sources.git import GitFacts

from conftest import imagebuild

NO_GIT = {"git": GitFacts().as_context()}

HEAD = """\
name: acme/shop
registry: localhost:5000/acme
server:
  kind: command
  command: ["/bin/busybox", "httpd", "-f", "-p", "8000"]
environments:
"""

GOOD = HEAD + """\
  - name: dev
    kubernetes: {namespace: shop-dev}
  - name: prod
    secrets: [DATABASE_URL]
    kubernetes:
      context: gke_acme_europe-west1_prod
      namespace: shop
      replicas: 3
      resources:
        requests: {cpu: 250m, memory: 256Mi}
        limits: {cpu: 1, memory: 512Mi, ephemeral-storage: 1Gi}
      secret: shop-prod
      pull_secret: registry-login
      service: {port: 80, type: LoadBalancer}
      rollout_timeout: 300
      job_timeout: 900
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "imagebuild.yaml"
    path.write_text(text)
    return path


def test_a_cluster_environment_loads_with_its_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), context=NO_GIT)
    dev, prod = recipe.environments
    assert dev.hosts == () and dev.kubernetes.namespace == "shop-dev"
    assert (dev.kubernetes.context, dev.kubernetes.replicas, dev.kubernetes.secret) == (None, 2, None)
    assert (dev.kubernetes.service.port, dev.kubernetes.service.type) == (80, "ClusterIP")
    assert (dev.kubernetes.rollout_timeout, dev.kubernetes.job_timeout) == (600, 600)
    spec = prod.kubernetes
    assert spec.context == "gke_acme_europe-west1_prod" and spec.replicas == 3
    assert dict(spec.resources.requests) == {"cpu": "250m", "memory": "256Mi"}
    assert dict(spec.resources.limits) == {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert (spec.secret, spec.pull_secret, spec.service.type) == ("shop-prod", "registry-login", "LoadBalancer")
    assert object_name(recipe, dev) == "acme-shop-dev" and object_name(recipe, prod) == "acme-shop-prod"


def test_quantities_read_as_kubernetes_reads_them():
    assert quantity("250m") == Decimal("0.25")
    assert quantity("1") == 1 and quantity("1.5") == Decimal("1.5")
    assert quantity("512Mi") == 512 * 2 ** 20 and quantity("1G") == 10 ** 9
    for bad in ("", "1 Gi", "Gi", "-1", "1GB", "0x10", "1e3x"):
        assert quantity(bad) is None, bad


# (what is written under environments, the line of the error, its key, fragments of the message)
MISTAKES = [
    ("  - name: prod\n    hosts: [ssh://deploy@web-1]\n    kubernetes: {namespace: shop}\n", 9,
     "environments[0].kubernetes", "names both hosts and a cluster"),
    ("  - name: prod\n    kubernetes: {replicas: 2}\n", 8, "environments[0].kubernetes.namespace", "missing, it is required"),
    ("  - name: prod\n    kubernetes:\n      namespace: shop\n      replica: 3\n", 10,
     "environments[0].kubernetes.replica", "unknown key", "did you mean 'replicas'?"),
    ("  - name: prod\n    kubernetes: {namespace: Shop_Prod}\n", 8, "environments[0].kubernetes.namespace",
     "'Shop_Prod' is not a namespace name"),
    ("  - name: prod\n    kubernetes: {namespace: shop, context: 'a b'}\n", 8, "environments[0].kubernetes.context",
     "is not a kubeconfig context name"),
    ("  - name: prod\n    kubernetes: {namespace: shop, name: 9lives}\n", 8, "environments[0].kubernetes.name",
     "'9lives' cannot name the Deployment"),
    ("  - name: prod\n    kubernetes: {namespace: shop, replicas: 0}\n", 8, "environments[0].kubernetes.replicas",
     "must be 1 to 1000"),
    ("  - name: prod\n    kubernetes: {namespace: shop, replicas: three}\n", 8, "environments[0].kubernetes.replicas",
     "expected a whole number"),
    ("  - name: prod\n    kubernetes:\n      namespace: shop\n      resources: {requests: {gpu: 1}}\n", 10,
     "environments[0].kubernetes.resources.requests.gpu", "'gpu' is not a container resource"),
    ("  - name: prod\n    kubernetes:\n      namespace: shop\n      resources: {limits: {memory: 512MB}}\n", 10,
     "environments[0].kubernetes.resources.limits.memory", "'512MB' is not a positive Kubernetes quantity"),
    ("  - name: prod\n    kubernetes:\n      namespace: shop\n      resources:\n        requests: {cpu: '2'}\n"
     "        limits: {cpu: 500m}\n", 11, "environments[0].kubernetes.resources.requests.cpu",
     "2 is more than its limit 500m"),
    ("  - name: prod\n    secrets: [DATABASE_URL]\n    kubernetes: {namespace: shop}\n", 9,
     "environments[0].kubernetes.secret", "needs DATABASE_URL at run time", "name the Secret"),
    ("  - name: prod\n    kubernetes:\n      namespace: shop\n      secret: {DATABASE_URL: postgres://u:hunter2@db}\n",
     10, "environments[0].kubernetes.secret", "expected a string, got a mapping"),
    ("  - name: prod\n    kubernetes: {namespace: shop, secret: 'shop prod'}\n", 8, "environments[0].kubernetes.secret",
     "is not the name of a Secret"),
    ("  - name: prod\n    kubernetes: {namespace: shop, pull_secret: Login}\n", 8,
     "environments[0].kubernetes.pull_secret", "is not the name of a Secret"),
    ("  - name: prod\n    kubernetes: {namespace: shop, service: {port: 70000}}\n", 8,
     "environments[0].kubernetes.service.port", "70000 is not a TCP port"),
    ("  - name: prod\n    kubernetes: {namespace: shop, service: {type: ExternalName}}\n", 8,
     "environments[0].kubernetes.service.type", "'ExternalName' is not a Service type"),
    ("  - name: prod\n    kubernetes: {namespace: shop, rollout_timeout: 0}\n", 8,
     "environments[0].kubernetes.rollout_timeout", "must be 1 to 86400 seconds"),
    ("  - name: prod\n    kubernetes: {namespace: shop, job_timeout: 86401}\n", 8,
     "environments[0].kubernetes.job_timeout", "must be 1 to 86400 seconds"),
]


@pytest.mark.parametrize("environments,line,key,fragments", [(m[0], m[1], m[2], m[3:]) for m in MISTAKES],
                         ids=[m[2].rpartition(".")[2] + f"-{i}" for i, m in enumerate(MISTAKES)])
def test_each_mistake_is_one_line_at_its_key(tmp_path, environments, line, key, fragments):
    path = write(tmp_path, HEAD + environments)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, context=NO_GIT)
    text = caught.value.one_line()
    assert "\n" not in text and text.startswith(f"{path}:{line}:"), text
    assert caught.value.key == key, (caught.value.key, text)
    for fragment in fragments:
        assert fragment in text, text
    assert "hunter2" not in text


def test_a_derived_name_too_long_for_the_jobs_says_to_set_kubernetes_name(tmp_path):
    long_app = "a" * (MAX_NAME - len("-prod") + 1)
    path = write(tmp_path, HEAD.replace("acme/shop", long_app) + "  - name: prod\n    kubernetes: {namespace: shop}\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, context=NO_GIT)
    assert caught.value.key == "environments[0].kubernetes"
    assert f"at most {MAX_NAME} characters; set kubernetes.name" in caught.value.one_line()
    fits = write(tmp_path, HEAD.replace("acme/shop", long_app) + "  - name: prod\n    kubernetes: {namespace: shop, name: shop}\n")
    assert load_recipe(fits, context=NO_GIT).environments[0].kubernetes.name == "shop"


def test_the_command_line_says_it_in_one_line_with_exit_2(tmp_path):
    path = write(tmp_path, HEAD + "  - name: prod\n    kubernetes: {namespace: shop, replicas: 0}\n")
    for argv in (["manifests", "prod"], ["deploy", "prod"], ["status"]):
        done = imagebuild(*argv, "--recipe", path)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}:8:"), done.stderr
        assert "Traceback" not in done.stderr
