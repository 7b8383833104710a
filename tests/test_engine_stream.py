"""The streamed load's two sides: the archive written in a thread, sent by the HTTP client.
Whichever side fails, the load ends with that side's error and the writer thread is gone."""

from __future__ import annotations

import os
import threading
import uuid

import docker
import pytest

from imagebuild.build.cache import store_layer
from imagebuild.oci.layer import Entry
from imagebuild.oci.model import Image
from imagebuild.stores import engine
from imagebuild.stores.layout import LayoutStore
from tests.test_engine_load import UnixForwarder

# A hang is the failure these tests look for: pytest-timeout turns one into a failed test.
pytestmark = pytest.mark.timeout(120)


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == engine.WRITER_THREAD]


def pieces_of(total: int) -> list[bytes]:
    """Distinct pieces, so a reordering or a lost piece changes the joined bytes."""
    return [(f"{index:08d}".encode() * 1024)[: 1 << 13] for index in range(total)]


def test_the_pieces_arrive_whole_and_in_order():
    pieces = pieces_of(2_000)       # 16 MiB: many times what the queue holds
    body = engine._Streamed(lambda out: [out.write(piece) for piece in pieces])
    try:
        received = b"".join(body)
    finally:
        body.close()
    assert received == b"".join(pieces)
    assert body.sent == len(received)
    assert not writer_threads()


def test_a_failing_writer_ends_the_reading_with_its_error():
    class Damaged(Exception):
        pass

    def write(out):
        out.write(b"x" * (3 * engine.STREAM_CHUNK))
        raise Damaged("blob is corrupt")

    body = engine._Streamed(write)
    received = 0
    with pytest.raises(Damaged, match="blob is corrupt"):
        for piece in body:
            received += len(piece)
    body.close()
    assert received == 3 * engine.STREAM_CHUNK      # what came before the failure was handed out
    assert not writer_threads()


def test_a_reader_that_gives_up_stops_a_writer_blocked_on_the_full_queue():
    wrote = threading.Event()

    def write(out):
        while True:                                 # endless: only closing can stop it
            out.write(b"y" * engine.STREAM_CHUNK)
            wrote.set()

    body = engine._Streamed(write)
    next(iter(body))
    wrote.wait()
    body.close()
    assert not writer_threads()
    body.raise_failure()                            # stopping is not a failure to report


def noise_image(tmp_path, size: int) -> tuple[LayoutStore, str]:
    """A new store holding one image: a layer of `size` random bytes. Its manifest digest."""
    store = LayoutStore(tmp_path / "store").ensure()
    layer = store_layer(store, [Entry.file("noise", os.urandom(size))], 0)
    image = Image(created="2025-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    return store, str(store.write_image(image).digest)


@pytest.mark.integration
def test_an_engine_gone_in_the_middle_of_a_load_ends_it_with_one_line(tmp_path, docker_client, docker_leftovers):
    # Random bytes do not compress: the archive is far larger than what passes the cut.
    store, digest = noise_image(tmp_path, 8 * engine.STREAM_CHUNK)
    tag = f"imagebuild-test-cut:{uuid.uuid4().hex[:10]}"
    docker_leftovers.images.append(tag)
    forwarder = UnixForwarder(limit=2 * engine.STREAM_CHUNK)
    client = docker.DockerClient(base_url=forwarder.url)
    try:
        with pytest.raises(engine.EngineError) as caught:
            engine.load_image(store, digest, [tag], client=client)
    finally:
        client.close()
        forwarder.close()
    assert forwarder.cut.is_set()
    # Cut while sending or while waiting for the answer: either way the OS's words, not a repr.
    assert caught.value.one_line() in {f"docker load failed: {reason}" for reason in (
        "Broken pipe", "Connection reset by peer", "Remote end closed connection without response")}
    assert not writer_threads()
    assert not docker_client.images.list(name=tag.partition(":")[0])


@pytest.mark.integration
def test_a_store_that_fails_a_read_mid_load_is_the_stores_error(tmp_path, monkeypatch, docker_client,
                                                                 docker_leftovers):
    # A disk error while reading a blob cannot be produced on demand: the archive writer raises one.
    import errno

    from imagebuild.errors import StoreError

    def failing_write_tar(entries, out, source_date_epoch):
        out.write(b"\0" * (2 * engine.STREAM_CHUNK))
        raise OSError(errno.EIO, "Input/output error")

    store, digest = noise_image(tmp_path, 1024)
    tag = f"imagebuild-test-eio:{uuid.uuid4().hex[:10]}"
    docker_leftovers.images.append(tag)
    monkeypatch.setattr(engine, "write_tar", failing_write_tar)
    with pytest.raises(StoreError) as caught:
        engine.load_image(store, digest, [tag])
    assert caught.value.one_line() == f"store at {store.root}: Input/output error"
    assert not writer_threads()
    assert not docker_client.images.list(name=tag.partition(":")[0])
