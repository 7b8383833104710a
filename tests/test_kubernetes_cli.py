"""`imagebuild manifests`, `deploy` and `status` for cluster environments, against the real registry.

The digest comes from the environment's tag in the registry (as `deploy` takes it), the launcher's
variable from the image's own label. No API server runs here: `deploy` and `status` are checked up to
the cluster (no kubeconfig, a server address nothing listens on), where they must say so in one line.
The apply path itself is tested against a real cluster in test_kubernetes_apply.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from imagebuild.contract import ANNOTATION_ENV_VARIABLE
from imagebuild.oci.reference import Reference
from imagebuild.recipe.loader import load_recipe
from imagebuild.release.kubernetes.manifests import PinnedImage, objects, to_yaml
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import push_image
from tests.conftest import imagebuild
from tests.ports import free_port
from tests.registry_support.images import write_app_image, write_server_image

pytestmark = pytest.mark.integration

RECIPE = """\
name: hello
registry: {home}
server:
  kind: command
  command: ["/bin/busybox", "httpd", "-f", "-p", "8000"]
environments:
  - name: dev
    kubernetes: {{namespace: hello-dev}}
  - name: test
  - name: prod
    secrets: [DATABASE_URL]
    kubernetes: {{namespace: hello, context: prod, secret: hello-prod}}
deploy:
  migrate: [python3, manage.py, migrate]
"""


@pytest.fixture(scope="module")
def app(registry, tmp_path_factory):
    """v1 (whose launcher reads WEB_ENV, by its label) promoted to dev; v2 (no label) pushed only."""
    root = tmp_path_factory.mktemp("kube-cli")
    store = LayoutStore(root / "store").ensure()
    home = f"{registry}/kube-{uuid.uuid4().hex[:10]}"
    digests = {}
    for version, labels in (("v1", {ANNOTATION_ENV_VARIABLE: "WEB_ENV"}), ("v2", None)):
        ref_name = write_app_image(store, "hello", version, message=version, labels=labels)
        push_image(store, ref_name, Reference.parse(f"{home}/hello"))
        digests[version] = str(store.resolve(ref_name).digest)
    served = write_server_image(store, "hello", "v3", port=9000)     # exposes 9000, not server.port
    push_image(store, served, Reference.parse(f"{home}/hello"))
    digests["v3"] = str(store.resolve(served).digest)
    (root / "imagebuild.yaml").write_text(RECIPE.format(home=home))
    promoted = imagebuild("promote", "v1", "--to", "dev", "--recipe", root, "--store", root / "store")
    assert promoted.returncode == 0, promoted.stderr
    return {"root": root, "home": home, "digests": digests, "recipe": root / "imagebuild.yaml"}


def run(app, *argv, env=None):
    return imagebuild(*argv, "--recipe", app["recipe"], "--store", app["root"] / "store", env=env)


def test_manifests_pin_the_digest_the_environment_tag_points_to(app):
    done = run(app, "manifests", "dev")
    assert done.returncode == 0, done.stderr
    v1 = app["digests"]["v1"]
    reference = f"{app['home']}/hello@{v1}"
    expected = to_yaml(objects(load_recipe(app["recipe"]), "dev", PinnedImage(reference, "v1", variable="WEB_ENV")))
    assert done.stdout == expected
    deployment = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "Deployment"][0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == reference
    assert container["env"][0] == {"name": "WEB_ENV", "value": "dev"}     # the image's label, not the default
    assert run(app, "manifests", "dev").stdout == done.stdout               # the same bytes again


def test_manifests_of_a_given_digest_and_of_some_parts(app):
    v2 = app["digests"]["v2"]
    done = run(app, "manifests", "dev", "--digest", v2, "--only", "deployment", "--only", "expand")
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all(done.stdout))
    assert [d["kind"] for d in documents] == ["Job", "Deployment"]
    (container,) = documents[1]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{app['home']}/hello@{v2}"
    assert container["env"][0] == {"name": "IMAGEBUILD_ENV", "value": "dev"}  # v2 names no other variable
    older = yaml.safe_load(run(app, "manifests", "dev", "--digest", app["digests"]["v3"], "--only", "deployment").stdout)
    (container,) = older["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9000          # the port that image serves on
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    as_json = json.loads(run(app, "manifests", "dev", "--json").stdout)
    assert as_json["digest"] == app["digests"]["v1"] and as_json["version"] == "v1"
    assert [d["kind"] for d in as_json["objects"]] == ["Job", "Service", "Deployment"]


@pytest.mark.parametrize("argv,fragment", [
    (["manifests", "prod"], "nothing was promoted to prod"),
    (["manifests", "test"], "environment test names no cluster"),
    (["manifests", "staging"], "no environment 'staging'"),
    (["manifests", "dev", "--digest", "sha256:" + "0" * 64], "has no image sha256:0000"),
    (["manifests", "dev", "--digest", "latest"], "not a sha256 digest"),
    (["manifests", "dev", "--only", "secret"], "--only 'secret' is not an object"),
    (["deploy", "dev", "--host", "ssh://deploy@web-1"], "deploys to a cluster, and --host names SSH hosts"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_mistakes_are_one_line_and_exit_2(app, argv, fragment):
    done = run(app, *argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr


def write_kubeconfig(path: Path, port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                      "insecure-skip-tls-verify": True}}],
        "users": [{"name": "deployer", "user": {"token": "token-hunter2"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "deployer"}}]}))
    return path


def test_deploy_without_a_kubeconfig_or_a_cluster_says_so(app, tmp_path):
    missing = run(app, "deploy", "dev", env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith("error: no kubeconfig with a current context") and "Traceback" not in missing.stderr
    # A kubeconfig whose server nothing listens on: the deploy step fails (6), the token is never shown.
    config = write_kubeconfig(tmp_path / "config", free_port())
    down = run(app, "deploy", "dev", env={"KUBECONFIG": str(config)})
    assert down.returncode == 6, down.stderr
    assert "cannot reach the API server at https://127.0.0.1:" in down.stderr
    assert down.stderr.count("error: ") == 1 and "hunter2" not in down.stderr + down.stdout
    prod = run(app, "deploy", "prod", env={"KUBECONFIG": str(config)})
    assert prod.returncode == 2 and "no kubeconfig with context 'prod'" in prod.stderr


def test_status_notes_a_cluster_it_cannot_read_and_still_answers(app, tmp_path):
    config = write_kubeconfig(tmp_path / "config", free_port())
    done = run(app, "status", "--json", env={"KUBECONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    rows = {row["environment"]: row for row in json.loads(done.stdout)["environments"]}
    assert rows["dev"]["version"] == "v1"
    assert rows["dev"]["cluster"]["deployment"] == "hello-dev"
    assert "cannot reach the API server" in rows["dev"]["cluster"]["note"]
    assert "no kubeconfig with context 'prod'" in rows["prod"]["cluster"]["note"]
    assert "cluster" not in rows["test"]
    text = run(app, "status", env={"KUBECONFIG": str(config)})
    assert text.returncode == 0 and "(current context)/hello-dev" in text.stdout
    assert "hunter2" not in text.stdout + done.stdout
    skipped = run(app, "status", "--no-hosts", "--json", env={"KUBECONFIG": str(config)})
    assert all("cluster" not in row for row in json.loads(skipped.stdout)["environments"])


@pytest.mark.parametrize("text", ['apiVersion: v1\nusers:\n- name: u\n  user: {token: "token-hunter2\n',
                                  "- token-hunter2\n- b\n"], ids=["not-yaml", "a-list"])
def test_a_malformed_kubeconfig_is_one_line_that_quotes_none_of_it(app, tmp_path, text):
    config = tmp_path / "config"
    config.write_text(text)
    done = run(app, "deploy", "dev", env={"KUBECONFIG": str(config)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: cannot read the kubeconfig {config}: not ") and done.stderr.count("\n") == 1
    assert "hunter2" not in done.stderr
    shown = run(app, "status", "--json", env={"KUBECONFIG": str(config)})
    assert shown.returncode == 0, shown.stderr
    rows = {row["environment"]: row for row in json.loads(shown.stdout)["environments"]}
    assert "cannot read the kubeconfig" in rows["dev"]["cluster"]["note"] and "hunter2" not in shown.stdout


def test_without_the_kubernetes_client_it_says_which_extra_to_install(app, tmp_path):
    """As on a machine where `imagebuild` was installed without the [kubernetes] extra: the package is
    shadowed by one that cannot be imported."""
    (tmp_path / "kubernetes.py").write_text("raise ImportError('No module named kubernetes')\n")
    from tests.conftest import REPO_ROOT

    env = {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", "KUBECONFIG": str(tmp_path / "none")}
    done = run(app, "deploy", "dev", env=env)
    assert done.returncode == 2, done.stderr
    assert "needs the Kubernetes client, which is not installed (pip install 'imagebuild[kubernetes]')" in done.stderr
    assert run(app, "manifests", "dev", env=env).returncode == 0      # printing the objects needs no client


def test_a_bad_kubeconfig_stops_a_rollback_before_the_tag_moves(app, tmp_path):
    assert run(app, "promote", "v2", "--to", "dev").returncode == 0
    try:
        done = run(app, "deploy", "dev", "--to", "v1", env={"KUBECONFIG": str(tmp_path / "none")})
        assert done.returncode == 2 and "no kubeconfig" in done.stderr, done.stderr
        rows = {row["environment"]: row for row in json.loads(run(app, "status", "--json", "--no-hosts").stdout)
                ["environments"]}
        assert rows["dev"]["version"] == "v2"
    finally:
        assert run(app, "promote", "v1", "--to", "dev").returncode == 0
