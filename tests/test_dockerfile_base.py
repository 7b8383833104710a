"""`os: {dockerfile: ...}`: a base built by the real Docker engine from Dockerfile.base (FROM an image
imagebuild baked), cached by its rendered text and context, with the daemonless layers on top."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from imagebuild.oci.model import Image
from imagebuild.stores.layout import LayoutStore
from tests.bake_support import (FIRST_COMMIT_TIME, bake, bake_json, cached_flags, commit_all, example_repo,
                                published_port, seed, wait_for_http)
from tests.conftest import REPO_ROOT, imagebuild
from tests.debian_fixtures import debian_python_base  # noqa: F401
from tests.registry_support.images import free_port

pytestmark = pytest.mark.integration

MARKER_STEPS = """
RUN echo "made by a RUN step" > /etc/base-marker
ENV BASE_MARKER=from-dockerfile
"""


@pytest.fixture
def store(tmp_path, debian_python_base):  # noqa: F811
    return seed(tmp_path / "store", debian_python_base)


@pytest.fixture
def python_base_ref(store, debian_python_base) -> str:  # noqa: F811
    """The session's Debian python layers as an image in the store: what the Dockerfile starts FROM."""
    image = Image(created="2025-01-01T00:00:00Z", layers=tuple(debian_python_base.oci_layers()),
                  runtime={"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]})
    return f"python-base@{store.write_image(image, ['python-base:1']).digest}"


def dockerfile_repo(tmp_path, debian_python_base, os_section: str, steps: str = MARKER_STEPS):  # noqa: F811
    """flask-hello with docker/base.Dockerfile (Dockerfile.base plus `steps`) as its os.dockerfile."""
    def prepare(repo):
        (repo / "docker").mkdir()
        template = (REPO_ROOT / "Dockerfile.base").read_text() + steps
        (repo / "docker" / "base.Dockerfile").write_text(template)
        (repo / "docker" / "motd").write_text("copied from the context\n")
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("os:\n  packages: [ca-certificates]\n", os_section))
    return example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path, prepare=prepare)


def engine_tags(store: LayoutStore) -> list[str]:
    """The tags a bake leaves in the engine besides the image: the base it built, and what it started FROM."""
    return [name for name in store.refs() if name.startswith("flask-hello-base:")]


def test_a_dockerfile_base_bakes_loads_runs_and_is_reused(tmp_path, store, python_base_ref, debian_python_base,  # noqa: F811
                                                          docker_client, docker_leftovers):
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {python_base_ref}\n  dockerfile: docker/base.Dockerfile\n"
                           "  packages: [ca-certificates]\n",
                           MARKER_STEPS + "COPY motd /etc/motd\n")
    result = bake_json(repo, store.root, "--load")
    docker_leftovers.images.extend([result["image"], *engine_tags(store)])
    base_digest = python_base_ref.split("@")[1]
    docker_leftovers.images.append(f"imagebuild-base:{base_digest[7:27]}")
    names = [layer["name"] for layer in result["layers"]]
    # the two Debian layers it started FROM, the RUN and the COPY, then the daemonless layers
    assert names == ["os"] * 4 + ["libraries", "server", "app", "config"]
    assert [layer["digest"] for layer in result["layers"][:2]] == [str(r.digest) for r in debian_python_base.results]
    assert not any(layer["cached"] for layer in result["layers"][:4])
    manifest = store.read_manifest(result["digest"])
    config = store.read_config(manifest)
    assert "BASE_MARKER=from-dockerfile" in config["config"]["Env"]

    container = docker_client.containers.run(result["image"], detach=True, environment={"IMAGEBUILD_ENV": "dev"}, ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, body = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container)
    assert status == 200, body
    assert container.exec_run(["cat", "/etc/base-marker", "/etc/motd"]).output == \
        b"made by a RUN step\ncopied from the context\n"
    # The SBOM reads dpkg's status through the base's own layers too: exactly what dpkg-query finds.
    spdx = imagebuild("sbom", result["image"], "--store", store.root)
    assert spdx.returncode == 0, spdx.stderr
    listed = {(p["name"], p["versionInfo"]) for p in json.loads(spdx.stdout)["packages"]
              if p["SPDXID"].startswith("SPDXRef-deb-")}
    query = container.exec_run(["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"]).output
    assert listed == {tuple(line.split("\t")[1:]) for line in query.decode().splitlines()
                      if line.startswith("installed\t")}
    assert ("python3.11", debian_python_base.layers.lock.runtime["python3.11"]) in listed

    # An app-only commit: the base comes from the store; no engine is even reachable.
    (repo / "hello.py").write_text((repo / "hello.py").read_text() + "\n# another commit\n")
    commit_all(repo, "app only", FIRST_COMMIT_TIME + 120)
    again = bake(repo, store.root, "--json", env={"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"})
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert [layer["digest"] for layer in second["layers"][:4]] == [layer["digest"] for layer in result["layers"][:4]]
    assert cached_flags(second) == {"os": True, "libraries": True, "server": True, "app": False, "config": True}
    assert "building the base" not in again.stderr


def test_without_os_image_the_dockerfile_starts_from_the_debian_layers(tmp_path, store, debian_python_base,  # noqa: F811
                                                                       docker_client, docker_leftovers):
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           "os:\n  packages: [ca-certificates]\n  dockerfile: docker/base.Dockerfile\n")
    result = bake_json(repo, store.root, "--load")
    docker_leftovers.images.extend([result["image"], *engine_tags(store)])
    debian_refs = [name for name in store.refs() if name.startswith("flask-hello-debian:")]
    assert len(debian_refs) == 1
    docker_leftovers.images.append(f"imagebuild-base:{store.refs()[debian_refs[0]].digest[7:27]}")
    assert [layer["digest"] for layer in result["layers"][:2]] == [str(r.digest) for r in debian_python_base.results]
    assert [layer["name"] for layer in result["layers"]].count("os") == 3
    container = docker_client.containers.run(result["image"], detach=True, environment={"IMAGEBUILD_ENV": "dev"}, ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container)
    assert status == 200
    assert container.exec_run(["cat", "/etc/base-marker"]).output == b"made by a RUN step\n"


def test_a_context_change_rebuilds_the_base(tmp_path, store, python_base_ref, debian_python_base,  # noqa: F811
                                            docker_client, docker_leftovers):
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {python_base_ref}\n  dockerfile: docker/base.Dockerfile\n",
                           MARKER_STEPS + "COPY motd /etc/motd\n")
    first = bake_json(repo, store.root)
    (repo / "docker" / "motd").write_text("changed\n")
    commit_all(repo, "motd", FIRST_COMMIT_TIME + 60)
    second = bake_json(repo, store.root)
    docker_leftovers.images.extend(engine_tags(store))
    docker_leftovers.images.append(f"imagebuild-base:{python_base_ref.split('@')[1][7:27]}")
    assert len(engine_tags(store)) == 2
    assert first["layers"][3]["digest"] != second["layers"][3]["digest"]   # the COPY layer
    # the RUN layer comes from the engine's build cache the second time: the same bytes
    assert first["layers"][2]["digest"] == second["layers"][2]["digest"]


def test_a_failing_run_step_is_one_line_with_its_output_tail(tmp_path, store, python_base_ref,
                                                            debian_python_base, docker_leftovers):  # noqa: F811
    steps = "RUN echo compiling the extension; echo 'gcc: not found' >&2; exit 3\n"
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {python_base_ref}\n  dockerfile: docker/base.Dockerfile\n", steps)
    done = bake(repo, store.root)
    docker_leftovers.images.append(f"imagebuild-base:{python_base_ref.split('@')[1][7:27]}")
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    head, _, output = last.partition("; last output: ")
    assert head == ("error: building the base from base.Dockerfile failed at "
                    "`RUN echo compiling the extension; echo 'gcc: not found' >&2; exit 3`: "
                    "The command '/bin/sh -c echo compiling the extension; echo 'gcc: not found' >&2; exit 3' "
                    "returned a non-zero code: 3")
    # stdout and stderr of the step arrive through separate pipes: their order is not fixed
    assert sorted(output.split(" | ")) == ["compiling the extension", "gcc: not found"]
    assert "Traceback" not in done.stderr
    assert not engine_tags(store)


def test_a_template_mistake_names_the_template_line(tmp_path, store, python_base_ref, debian_python_base):  # noqa: F811
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {python_base_ref}\n  dockerfile: docker/base.Dockerfile\n",
                           "RUN echo {{ runtime.pyhton }}\n")
    done = bake(repo, store.root)
    assert done.returncode == 2, done.stderr
    template = repo / "docker" / "base.Dockerfile"
    line = template.read_text().splitlines().index("RUN echo {{ runtime.pyhton }}") + 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {template}:{line}: template error: ")
    assert "pyhton" in done.stderr


def test_an_uncommitted_dockerfile_is_refused(tmp_path, store, python_base_ref, debian_python_base):  # noqa: F811
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {python_base_ref}\n  dockerfile: docker/other.Dockerfile\n")
    shutil.copyfile(repo / "docker" / "base.Dockerfile", repo / "docker" / "other.Dockerfile")
    (repo / ".gitignore").write_text("docker/other.Dockerfile\n")
    commit_all(repo, "ignore it", FIRST_COMMIT_TIME + 60)
    done = bake(repo, store.root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {repo / 'imagebuild.yaml'}: os.dockerfile 'docker/other.Dockerfile' is not committed "
        "(commit it: the base is built only from what git tracks)")


def test_a_from_the_engine_cannot_find_is_one_line(tmp_path, store, python_base_ref, debian_python_base,  # noqa: F811
                                                    docker_leftovers):
    missing = f"imagebuild-no-such-base:{uuid.uuid4().hex[:12]}"

    def prepare(repo):
        (repo / "docker").mkdir()
        (repo / "docker" / "base.Dockerfile").write_text(f"FROM {missing}\nRUN true\n")
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace(
            "os:\n  packages: [ca-certificates]\n",
            f"os:\n  image: {python_base_ref}\n  dockerfile: docker/base.Dockerfile\n"))
    repo = example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path, prepare=prepare)
    done = bake(repo, store.root)
    docker_leftovers.images.append(f"imagebuild-base:{python_base_ref.split('@')[1][7:27]}")
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    # what follows is the engine's word on the pull it tried (no such host here, access denied elsewhere)
    assert last.startswith(f"error: building the base from base.Dockerfile failed at `FROM {missing}`: ")
    assert "Traceback" not in done.stderr


def test_a_from_image_never_pulled_is_refused_with_the_pull_hint(tmp_path, store, debian_python_base):  # noqa: F811
    missing = "python-base@sha256:" + "ab" * 32
    repo = dockerfile_repo(tmp_path, debian_python_base,
                           f"os:\n  image: {missing}\n  dockerfile: docker/base.Dockerfile\n")
    done = bake(repo, store.root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: base image {missing} is not in the local store at {store.root} "
        f"(run `imagebuild pull {missing}` first)")
