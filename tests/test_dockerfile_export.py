"""`imagebuild dockerfile`: the printed Dockerfile, built by `docker build` on the real engine, gives an
image that answers like the baked one and carries the same settings and generated files."""

from __future__ import annotations

import json
import uuid

import pytest

from imagebuild.oci.model import Image
from imagebuild.stores import engine
from tests.bake_support import FIRST_COMMIT_TIME, bake, commit_all, git, http_get, published_port, seed, wait_for_http
from tests.conftest import REPO_ROOT, imagebuild, run
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration

GENERATED = ["/usr/local/bin/imagebuild-launch", "/etc/imagebuild/server.sh", "/etc/imagebuild/environments.json",
             "/etc/imagebuild/env/dev.sh", "/usr/local/lib/python3.11/dist-packages/imagebuild_runtime.py"]
SETTINGS = ["Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts", "Healthcheck", "Labels"]


@pytest.fixture
def store(tmp_path, debian_python_base):  # noqa: F811
    return seed(tmp_path / "store", debian_python_base)


@pytest.fixture
def plain_http_app(tmp_path, store, debian_python_base):  # noqa: F811
    """A stdlib-only app (python -m http.server) on the Debian python base from the store."""
    image = Image(created="2025-01-01T00:00:00Z", layers=tuple(debian_python_base.oci_layers()),
                  runtime={"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})
    base = f"python-base@{store.write_image(image, ['python-base:1']).digest}"
    repo = tmp_path / "plain-http"
    repo.mkdir()
    (repo / "imagebuild.yaml").write_text(f"""\
name: plain-http
os:
  image: {base}
runtime:
  python: "3.11"
server:
  kind: command
  command: [python3.11, -m, http.server, "8000"]
  port: 8000
health:
  path: /health
environments:
  - name: dev
    config: {{GREETING: "hello $USER, it's \\"quoted\\""}}
    features: {{shiny: true}}
  - name: prod
""")
    (repo / "health").write_text(f"healthy {uuid.uuid4().hex}\n")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "plain http", FIRST_COMMIT_TIME)
    return repo, base


def test_the_printed_dockerfile_builds_and_serves_like_the_baked_image(tmp_path, store, plain_http_app,
                                                                       docker_client, docker_leftovers):
    repo, base = plain_http_app
    done = bake(repo, store.root, "--json", "--load")
    assert done.returncode == 0, done.stderr
    baked = json.loads(done.stdout)["image"]
    base_tag = f"imagebuild-test-base:{uuid.uuid4().hex[:10]}"
    built = f"imagebuild-test-dockerfile:{uuid.uuid4().hex[:10]}"
    docker_leftovers.images.extend([baked, built, base_tag])
    engine.load_image(store, base.split("@")[1], [base_tag])

    printed = imagebuild("dockerfile", "--recipe", repo / "imagebuild.yaml", "--store", store.root)
    assert printed.returncode == 0, printed.stderr
    dockerfile = tmp_path / "Dockerfile.imagebuild"      # outside the app: the tree stays clean
    dockerfile.write_text(printed.stdout)
    built_run = run(["docker", "build", "-q", "-f", str(dockerfile), "--build-arg", f"BASE={base_tag}",
                     "-t", built, str(repo)], env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"})
    assert built_run.returncode == 0, built_run.stderr

    answers = []
    for image in (baked, built):
        container = docker_client.containers.run(image, detach=True, environment={"IMAGEBUILD_ENV": "dev"},
                                                 ports={"8000/tcp": ("127.0.0.1", None)})
        docker_leftovers.containers.append(container)
        url = f"http://127.0.0.1:{published_port(container, 8000)}/health"
        wait_for_http(url, container)
        answers.append(http_get(url))
    assert answers[0] == answers[1]
    assert answers[0] == (200, (repo / "health").read_bytes())

    configs = [docker_client.api.inspect_image(image)["Config"] for image in (baked, built)]
    assert sorted(configs[0]["Env"]) == sorted(configs[1]["Env"])    # Docker keeps the base's PATH first
    for key in SETTINGS:
        assert configs[0][key] == configs[1][key], key
    sums = [docker_client.containers.run(image, GENERATED, entrypoint="sha256sum", remove=True)
            for image in (baked, built)]
    assert sums[0] == sums[1]
    owners = [docker_client.containers.run(image, ["stat", "-c", "%u:%g %a", "/run/imagebuild"], entrypoint="",
                                           remove=True) for image in (baked, built)]
    assert owners[0] == owners[1] == b"10001:10001 755\n"


def test_libraries_come_from_a_pip_stage_with_the_same_pins(tmp_path):
    """flask-hello: pip runs in its own stage with the recipe's hashes; the image only copies the result.
    (No image with pip can be pulled here, so this one is read, not built.)"""
    done = imagebuild("dockerfile", "--recipe", REPO_ROOT / "examples" / "flask-hello" / "imagebuild.yaml")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM ${PIP_IMAGE} AS libraries", "FROM ${BASE}"]
    assert "ARG BASE=debian:bookworm-slim" in lines and "ARG PIP_IMAGE=python:3.11-slim" in lines
    assert ("RUN python3 -m pip install --no-cache-dir --disable-pip-version-check --no-compile "
            "--only-binary=:all: --target /imagebuild/libraries --require-hashes -r /imagebuild/requirements.txt"
            in lines)
    assert "COPY --from=libraries /imagebuild/libraries/ /usr/local/lib/python3.11/dist-packages/" in lines
    assert "COPY --from=libraries /imagebuild/server-packages/ /usr/local/lib/imagebuild/server-packages/" in lines
    assert any(line.startswith("RUN printf '%s\\n' 'gunicorn==23.0.0 --hash=sha256:") for line in lines)
    assert lines[-1] == 'CMD ["python3.11", "-m", "gunicorn", "-c", "/etc/imagebuild/gunicorn.conf.py", "hello:app"]'


def test_node_libraries_come_from_an_npm_ci_stage_on_the_lock():
    done = imagebuild("dockerfile", "--recipe", REPO_ROOT / "examples" / "node-hello" / "imagebuild.yaml")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM ${NODE_IMAGE} AS npm", "FROM ${BASE}"]
    assert "ARG NODE_IMAGE=node:18-slim" in lines
    assert 'COPY ["package-lock.json", "/imagebuild/"]' in lines
    assert any(line.startswith("RUN npm ci --omit=dev --ignore-scripts") for line in lines)
    assert "COPY --from=npm /imagebuild/node_modules/ /app/node_modules/" in lines
    assert lines[-1] == 'CMD ["node", "/app/server.js"]'


def test_java_layers_are_refused_not_written_wrong():
    done = imagebuild("dockerfile", "--recipe", REPO_ROOT / "examples" / "java-layered" / "imagebuild.yaml")
    assert done.returncode == 2 and "java: layers" in done.stderr and done.stdout == ""


def test_a_recipe_mistake_is_one_line(tmp_path):
    (tmp_path / "imagebuild.yaml").write_text("name: x\nserver:\n  kind: gunicron\n")
    done = imagebuild("dockerfile", "--recipe", tmp_path / "imagebuild.yaml")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {tmp_path / 'imagebuild.yaml'}:3: ")
    assert done.stdout == ""


def test_an_installed_package_carries_dockerfile_base():
    """The template the printed Dockerfile starts with ships inside the package (a link in the checkout)."""
    import tomllib

    from imagebuild.build.layers.dockerfile_base import TEMPLATE

    assert TEMPLATE.read_bytes() == (REPO_ROOT / "Dockerfile.base").read_bytes()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert TEMPLATE.name in pyproject["tool"]["setuptools"]["package-data"]["imagebuild"]


def test_the_help_names_both_build_arguments_and_what_the_defaults_need():
    done = imagebuild("dockerfile", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split()).replace("--build- arg", "--build-arg")   # click wraps at a hyphen
    assert "--build-arg BASE=IMAGE" in text and "--build-arg PIP_IMAGE=IMAGE" in text
    assert "Docker Hub" in text and "python:VERSION-slim" in text and "debian:SUITE-slim" in text
