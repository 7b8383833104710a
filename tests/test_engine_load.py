"""Streaming `docker load` into the real engine: what is sent, what is left out, what fails cleanly;
and the engine reached over tcp:// on loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid

import pytest

from imagebuild.errors import CorruptBlobError
from imagebuild.build.cache import store_layer
from imagebuild.oci.layer import Entry
from imagebuild.oci.model import Image
from imagebuild.stores import engine
from imagebuild.stores.layout import LayoutStore
from tests.bake_support import bake, example_repo, published_port, seed, wait_for_http
from tests.debian_fixtures import debian_python_base  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path, debian_python_base) -> LayoutStore:  # noqa: F811
    return seed(tmp_path / "store", debian_python_base)


def python_image(store: LayoutStore, base, *files: tuple[str, bytes]) -> str:
    """The Debian python layers plus one layer holding `files`; its manifest digest."""
    image = Image(created="2025-01-01T00:00:00Z", layers=tuple(base.oci_layers()),
                  runtime={"Env": ["PATH=/usr/bin:/bin"]})
    if files:
        top = store_layer(store, [Entry.file(path, data) for path, data in files], 0)
        image = image.with_layer(top.as_layer(), created_by="test")
    return str(store.write_image(image).digest)


def unique(name: str) -> str:
    return f"imagebuild-test-{name}:{uuid.uuid4().hex[:10]}"


def test_only_the_layers_the_engine_lacks_are_sent(store, debian_python_base, docker_client,  # noqa: F811
                                                  docker_leftovers):
    marker = uuid.uuid4().hex.encode() + b"\n"   # a line: the log driver may hold back a partial one
    base_digest = python_image(store, debian_python_base)
    top_digest = python_image(store, debian_python_base, ("marker", marker))
    base_tag, top_tag = unique("base"), unique("top")
    docker_leftovers.images.extend([top_tag, base_tag])

    first = engine.load_image(store, base_digest, [base_tag])
    assert first.tags == (base_tag,)
    second = engine.load_image(store, top_digest, [top_tag])
    assert (second.layers, second.layers_sent) == (3, 1)
    assert second.bytes_sent < 64 * 1024          # the marker layer and the archive's JSON, not the OS
    assert docker_client.containers.run(top_tag, ["cat", "/marker"], remove=True) == marker
    assert docker_client.images.get(top_tag).id == second.image_id


def test_an_engine_that_has_the_image_is_only_tagged(store, debian_python_base, docker_client,  # noqa: F811
                                                    docker_leftovers):
    digest = python_image(store, debian_python_base, ("marker", uuid.uuid4().hex.encode()))
    first_tag, second_tag = unique("first"), unique("second")
    docker_leftovers.images.extend([first_tag, second_tag])
    assert engine.load_image(store, digest, [first_tag]).layers_sent >= 1
    again = engine.load_image(store, digest, [second_tag])
    assert (again.layers_sent, again.bytes_sent, again.tags) == (0, 0, (second_tag,))
    assert docker_client.images.get(second_tag).id == docker_client.images.get(first_tag).id


def test_a_layer_left_out_that_the_engine_lacks_is_sent_again(store, debian_python_base, docker_client,  # noqa: F811
                                                              docker_leftovers, monkeypatch):
    # An engine can drop an image between the question and the load. Cue that by claiming it has
    # every layer but the top one, when the one below the top is new to it too.
    image = Image(created="2025-01-01T00:00:00Z", layers=tuple(debian_python_base.oci_layers()))
    for name in ("lower", "upper"):
        layer = store_layer(store, [Entry.file(name, uuid.uuid4().hex.encode())], 0)
        image = image.with_layer(layer.as_layer(), created_by="test")
    digest = str(store.write_image(image).digest)
    monkeypatch.setattr(engine, "_layers_present", lambda client, diff_ids, tags: len(diff_ids) - 1)
    tag = unique("fallback")
    docker_leftovers.images.append(tag)
    report = engine.load_image(store, digest, [tag])
    assert report.layers_sent == 4
    assert docker_client.containers.run(tag, ["ls", "/lower", "/upper"], remove=True).split() == \
        [b"/lower", b"/upper"]


def test_a_corrupt_blob_stops_the_load_and_says_so(store, debian_python_base, docker_client,  # noqa: F811
                                                  docker_leftovers):
    digest = python_image(store, debian_python_base, ("marker", b"x" * 200_000))
    top = store.read_manifest(digest).layers[-1]
    path = store.blob_path(top.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    tag = unique("corrupt")
    docker_leftovers.images.append(tag)
    with pytest.raises(CorruptBlobError) as caught:
        engine.load_image(store, digest, [tag])
    assert str(top.digest) in caught.value.one_line()
    assert not docker_client.images.list(name=tag.partition(":")[0])


class UnixForwarder:
    """tcp://127.0.0.1:PORT in front of the engine's unix socket: the engine as a tcp:// DOCKER_HOST.
    (The engine here was started with only its socket; a second listener is the test's own.)
    `limit`: cut a connection once its client has sent that many bytes (an engine gone mid-request)."""

    def __init__(self, target: str = engine.DEFAULT_SOCKET, limit: int | None = None):
        self.target = target
        self.limit = limit
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.cut = threading.Event()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.target)
            for source, sink, limit in ((client, engine, self.limit), (engine, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, limit), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while data := source.recv(1 << 16):
                passed += len(data)
                if limit is not None and passed > limit:
                    self.cut.set()
                    for end in (source, sink):   # closed with unread data: a reset, as when a host dies
                        end.close()
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._closing = True
        self.server.close()


@pytest.fixture
def engine_over_tcp():
    forwarder = UnixForwarder()
    yield forwarder
    forwarder.close()


def test_bake_load_over_tcp_runs(tmp_path, store, debian_python_base, engine_over_tcp, docker_client,  # noqa: F811
                                docker_leftovers):
    repo = example_repo(tmp_path, "flask-hello", lock=debian_python_base.lock_path)
    done = bake(repo, store.root, "--json", "--load", env={"DOCKER_HOST": engine_over_tcp.url})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    docker_leftovers.images.append(result["image"])
    assert engine_over_tcp.connections > 0
    assert f"loaded into Docker as {result['image']}" in done.stderr
    container = docker_client.containers.run(result["image"], detach=True, environment={"IMAGEBUILD_ENV": "dev"},
                                             ports={"8000/tcp": ("127.0.0.1", None)})
    docker_leftovers.containers.append(container)
    status, _ = wait_for_http(f"http://127.0.0.1:{published_port(container, 8000)}/health", container)
    assert status == 200
