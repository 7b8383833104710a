"""A JVM app in Jib's layers: its build output (dependency jars, classes, resources, or a fat jar
exploded) bakes into separate release-dependency, snapshot-dependency, resources and classes
layers; a commit that changes one class changes the classes layer only, and its push sends only
that layer (counted at the real registry, through a loopback proxy)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from dataclasses import replace

import pytest

from imagebuild.build.layers.java import java_layers
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import JavaSpec
from imagebuild.sources.java_build import read_build_output
from imagebuild.stores.attachments import attachments
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.place import LayoutPlace
from tests.bake_support import (EXAMPLES, FIRST_COMMIT_TIME, bake_json, base_for, commit_all, example_repo,
                                http_get, published_port, seed, wait_for_http)
from tests.registry_support.proxy import FaultProxy

pytestmark = pytest.mark.integration

JAVA_LAYERS = ("libraries", "snapshots", "resources", "classes")


def build(repo) -> tuple[str, ...]:
    done = subprocess.run(["sh", str(repo / "build.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ()   # target/ stays untracked, as a build's output does


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry) as running:
        yield running


def digests(result: dict) -> dict[str, str]:
    return {layer["name"]: layer["digest"] for layer in result["layers"]}


def test_one_changed_class_changes_and_pushes_only_the_classes_layer(tmp_path, tmp_path_factory, proxy,
                                                                     docker_client, docker_leftovers):
    base = base_for("java-layered", tmp_path_factory)
    name = f"java-{uuid.uuid4().hex[:10]}/layered"

    def point_at_registry(repo):
        recipe = repo / "imagebuild.yaml"
        recipe.write_text(recipe.read_text().replace("name: java-layered", f"name: {name}\nregistry: {proxy.address}"))
        return build(repo)

    repo = example_repo(tmp_path, "java-layered", lock=base.lock_path, prepare=point_at_registry)
    store = seed(tmp_path / "store", base)
    first = bake_json(repo, store.root, "--push", "--load")
    docker_leftovers.images.append(first["image"])
    assert [layer["name"] for layer in first["layers"]] == ["os", "runtime", "libraries", "snapshots", "server",
                                                             "resources", "classes", "app", "config"]

    # the image runs, with its dependencies, resource and classes on the classpath, and a heap sized
    # from the container's memory limit (-XX:MaxRAMPercentage=75.0)
    container = docker_client.containers.run(first["image"], detach=True, mem_limit="256m",
                                             ports={"8080/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    port = published_port(container, 8080)
    status, body = wait_for_http(f"http://127.0.0.1:{port}/health", container)
    assert status == 200, body
    status, body = http_get(f"http://127.0.0.1:{port}/")
    text = body.decode()
    assert status == 200 and "*** Hi, layered Java from the classes layer ***" in text, text
    heap = int(re.search(r"max-heap=(\d+)", text).group(1))
    assert 150 << 20 < heap <= 192 << 20, heap

    # an app-only commit that changes one class
    source = repo / "src/main/java/hello/Hello.java"
    source.write_text(source.read_text().replace("from the classes layer", "from a changed class"))
    build(repo)
    commit_all(repo, "one class changed", FIRST_COMMIT_TIME + 60)
    proxy.log.clear()
    second = bake_json(repo, store.root, "--push")
    changed = {layer for layer, digest in digests(second).items() if digests(first)[layer] != digest}
    assert changed == {"classes"}
    cached = {layer["name"] for layer in second["layers"] if layer["cached"]}
    assert cached == set(digests(second)) - {"classes"}

    image_layers = set(digests(second).values())
    uploaded = {match.group(1) for exchange in proxy.log.blob_uploads()
                if (match := re.search(r"digest=(sha256(?::|%3A)[0-9a-f]{64})", exchange.path))}
    uploaded = {digest.replace("%3A", ":") for digest in uploaded}
    assert uploaded & image_layers == {digests(second)["classes"]}
    classes_size = next(layer["size"] for layer in second["layers"] if layer["name"] == "classes")
    sent = sum(exchange.sent for exchange in proxy.log.blob_uploads())
    # The push also carries the image's SBOMs (they name the commit, so each commit has its own).
    evidence = sum(len(found.payload) for found in attachments(LayoutPlace(store, name), second["digest"]))
    assert evidence > 0
    assert sent - evidence < classes_size + 16_384, (sent, evidence, classes_size)


def test_a_fat_jar_explodes_into_the_same_layers_as_the_build_directories(tmp_path):
    """The example's build output both ways (classes and jars, and the Spring Boot jar made from them):
    the same four layers, byte for byte. Built straight into a store: no Debian layers, no bake."""
    repo = tmp_path / "java-layered"
    shutil.copytree(EXAMPLES / "java-layered", repo)
    build(repo)
    recipe = load_recipe(repo)
    from_jar = replace(recipe, java=JavaSpec(jar="target/app-boot.jar"))
    store = LayoutStore(tmp_path / "store").ensure()

    def layer_digests(recipe, scratch):
        parts = read_build_output(recipe.root, recipe.java, tmp_path / scratch)
        assert parts.main_class == "hello.Hello"
        return {layer.name: str(layer.build(store).digest) for layer in java_layers(recipe, parts)}

    directories = layer_digests(recipe, "directories")
    assert list(directories) == list(JAVA_LAYERS)
    assert layer_digests(from_jar, "jar") == directories
