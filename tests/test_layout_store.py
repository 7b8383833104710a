"""The local store: content addressing, atomic writes, verified reads, tags, concurrency."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import sys

import pytest

from imagebuild.errors import CorruptBlobError, StoreError
from imagebuild.oci.layer import Entry, write_layer
from imagebuild.oci.model import ANNOTATION_REF_NAME, Image
from imagebuild.stores.layout import LayoutStore, default_store_path


def leftovers(store: LayoutStore) -> list[str]:
    """Temp files anywhere in the store: blob temps in tmp/, index temps at the top."""
    found = [p.name for p in (store.root / "tmp").iterdir()] if (store.root / "tmp").exists() else []
    found += [p.name for p in store.root.iterdir() if p.name.startswith(".tmp-")]
    found += [p.name for p in (store.root / "blobs" / "sha256").iterdir() if len(p.name) != 64]
    return found


def one_layer_image(store: LayoutStore, content: bytes, ref_name: str):
    with store.blob_writer() as writer:
        result = write_layer([Entry.file("data", content)], writer, source_date_epoch=0)
        writer.commit(result.digest)
    image = Image(created="1970-01-01T00:00:00Z").with_layer(result.as_layer(), created_by="test")
    return store.write_image(image, [ref_name])


def test_blobs_are_content_addressed_and_leave_no_temp_files(tmp_path):
    store = LayoutStore(tmp_path / "s").ensure()
    digest = store.put_blob(b"hello blob")
    path = store.blob_path(digest)
    assert path.name == hashlib.sha256(b"hello blob").hexdigest()
    assert path.read_bytes() == b"hello blob"
    assert path.stat().st_mode & 0o777 == 0o644
    assert store.put_blob(b"hello blob") == digest
    assert json.loads((store.root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert leftovers(store) == []


def test_failed_writes_leave_nothing(tmp_path):
    store = LayoutStore(tmp_path / "s").ensure()
    with pytest.raises(CorruptBlobError, match="does not match"):
        store.put_blob_stream(io.BytesIO(b"actual"), expected="sha256:" + "0" * 64)
    with pytest.raises(RuntimeError):
        with store.blob_writer() as writer:
            writer.write(b"half a blob")
            raise RuntimeError("interrupted")
    assert leftovers(store) == []
    assert list((store.root / "blobs" / "sha256").iterdir()) == []


def test_reads_are_verified_even_when_the_reader_stops_at_the_size(tmp_path):
    store = LayoutStore(tmp_path / "s").ensure()
    digest = store.put_blob(b"A" * 5000)
    path = store.blob_path(digest)
    path.write_bytes(b"B" + b"A" * 4999)  # same size, different bytes
    with pytest.raises(CorruptBlobError, match=digest):
        store.read_blob(digest)
    with pytest.raises(CorruptBlobError, match=digest):
        with store.open_blob(digest) as reader:
            reader.read(5000)  # exactly the size, as tar and copy loops do; no extra empty read
    with pytest.raises(StoreError, match="missing"):
        store.read_blob("sha256:" + "1" * 64)
    with pytest.raises(StoreError, match="missing"):
        store.blob_size("sha256:" + "1" * 64)


def test_tags_live_in_index_json(tmp_path):
    store = LayoutStore(tmp_path / "s").ensure()
    first = one_layer_image(store, b"one", "app:v1")
    second = one_layer_image(store, b"two", "app:v2")
    one_layer_image(store, b"three", "app:v1")  # retag moves the name
    index = json.loads((store.root / "index.json").read_bytes())
    names = [d["annotations"][ANNOTATION_REF_NAME] for d in index["manifests"]]
    assert names == ["app:v1", "app:v2"]
    assert store.resolve("app:v2").digest == second.digest
    assert store.resolve("app:v1").digest != first.digest
    assert store.resolve(str(second.digest)).digest == second.digest
    assert store.untag("app:v2") and not store.untag("app:v2")
    assert list(store.refs()) == ["app:v1"]


def _writer(root: str, name: str, rounds: int) -> None:
    store = LayoutStore(root)
    for i in range(rounds):
        one_layer_image(store, f"{name}-{i}".encode(), f"{name}:{i}")
        one_layer_image(store, f"{name}-latest-{i}".encode(), f"{name}:latest")


def test_two_processes_writing_at_once_keep_every_tag(tmp_path):
    root = str(tmp_path / "shared")
    rounds = 40
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(root, name, rounds)) for name in ("alpha", "beta")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
        assert worker.exitcode == 0
    store = LayoutStore(root)
    index = json.loads((store.root / "index.json").read_bytes())
    refs = store.refs()
    expected = {f"{n}:{i}" for n in ("alpha", "beta") for i in range(rounds)} | {"alpha:latest", "beta:latest"}
    assert set(refs) == expected
    assert len(index["manifests"]) == len(expected)
    for name, descriptor in refs.items():
        manifest = store.read_manifest(descriptor.digest)
        for blob in manifest.blobs():
            store.verify_blob(blob.digest)
    assert leftovers(store) == []


def test_default_store_location(monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGEBUILD_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "imagebuild" / "store"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / ".cache" / "imagebuild" / "store"
    monkeypatch.setenv("IMAGEBUILD_STORE", str(tmp_path / "explicit"))
    assert default_store_path() == tmp_path / "explicit"
    assert LayoutStore().root == tmp_path / "explicit"


def test_cli_store_location_option_env_and_xdg_default(tmp_path):
    from tests.conftest import run
    from tests.oci_support import make_busybox_rootfs

    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGEBUILD_STORE", "XDG_CACHE_HOME")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def cli(*args, **extra):
        result = run([sys.executable, "-m", "imagebuild", *map(str, args)], env={**env, **extra})
        assert result.returncode == 0, result.stderr
        return result

    cli("image", "from-dir", rootfs, "where:default")
    cli("image", "from-dir", rootfs, "where:env", IMAGEBUILD_STORE=str(tmp_path / "by-env"))
    cli("image", "from-dir", rootfs, "where:option", "--store", tmp_path / "by-option",
        IMAGEBUILD_STORE=str(tmp_path / "by-env"))
    assert list(LayoutStore(tmp_path / "xdg" / "imagebuild" / "store").refs()) == ["where:default"]
    assert list(LayoutStore(tmp_path / "by-env").refs()) == ["where:env"]
    assert list(LayoutStore(tmp_path / "by-option").refs()) == ["where:option"]
    listed = cli("images", "--json", "--store", tmp_path / "by-option")
    assert [row["image"] for row in json.loads(listed.stdout)["images"]] == ["where:option"]


def test_temp_files_left_by_a_killed_writer_are_swept(tmp_path):
    store = LayoutStore(tmp_path / "s").ensure()
    stale = store.root / "tmp" / "blob-killed"
    stale.write_bytes(b"x" * 1000)
    old = 1_000_000_000
    os.utime(stale, (old, old))
    fresh = store.root / "tmp" / "blob-still-writing"
    fresh.write_bytes(b"y")
    LayoutStore(store.root).put_blob(b"anything")  # the next process to write sweeps
    assert not stale.exists()
    assert fresh.exists()
