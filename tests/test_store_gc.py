"""`imagebuild rm` and `imagebuild gc` on real stores holding real images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, imagebuild, run
from oci_support import build_busybox_image
from imagebuild.build.cache import LayerCache, store_layer
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import Entry
from imagebuild.release.promote import EMPTY_JSON, Record, record_manifest
from imagebuild.stores.place import LayoutPlace, put_bytes
from imagebuild.registry.client import ManifestBytes
from imagebuild.stores.lease import release_lease
from imagebuild.stores.layout import LayoutStore

GC_TIMEOUT = 300    # a hang (a lease never released) fails the test instead of stalling the run


def blobs(store_dir: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (store_dir / "blobs" / "sha256").iterdir()}


def image_blobs(store_dir: Path, manifest_digest: str) -> set[str]:
    manifest = json.loads((store_dir / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes())
    return {manifest_digest, manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}


def gc(store_dir: Path, *args: str) -> dict:
    # The test process read the store through the library and so holds a lease on it; a gc waits for that.
    release_lease(store_dir)
    done = run([sys.executable, "-m", "imagebuild", "gc", "--store", str(store_dir), "--json", *args],
               timeout=GC_TIMEOUT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def export_and_validate(store_dir: Path, ref: str, tmp_path: Path) -> None:
    layout = tmp_path / f"export-{ref.replace(':', '-')}"
    exported = imagebuild("export", ref, f"oci:{layout}", "--store", store_dir)
    assert exported.returncode == 0, exported.stderr
    checked = run(["oci-image-tool", "validate", "--type", "image", str(layout)])
    assert checked.returncode == 0 and "Validation succeeded" in checked.stdout + checked.stderr, \
        checked.stdout + checked.stderr


def put_record(store: LayoutStore, name: str, subject_digest: str) -> str:
    """A promotion record in the local store, written the way `promote` writes one without a registry."""
    raw = store.read_blob(subject_digest)
    subject = ManifestBytes(raw, "application/vnd.oci.image.manifest.v1+json", subject_digest)
    record = Record(environment="dev", sequence=1, digest=subject_digest, version="v1",
                    time="2026-01-01T00:00:00Z", target=f"local store ({name})")
    home = LayoutPlace(store, name)
    put_bytes(home, EMPTY_JSON)
    home.put_manifest(record_manifest(record, subject), [record.tag])
    return f"{name}:{record.tag}"


@pytest.fixture
def two_images(store_dir, tmp_path):
    """Two busybox images sharing their one layer, differing in config (and so manifest)."""
    store = LayoutStore(store_dir)
    a = build_busybox_image(store, tmp_path / "a", "hello:a")
    b = build_busybox_image(store, tmp_path / "b", "hello:b", entrypoint=["/bin/busybox", "true"])
    release_lease(store_dir)
    return store, str(a.digest), str(b.digest)


def test_gc_keeps_everything_reachable_and_the_image_still_validates(two_images, store_dir, tmp_path):
    store, a, b = two_images
    record_ref = put_record(store, "hello", a)
    before = blobs(store_dir)
    result = gc(store_dir)
    assert result["removed_blobs"] == 0 and result["freed_bytes"] == 0
    assert blobs(store_dir) == before
    assert result["kept_blobs"] == len(before) == 7    # 2 manifests, 2 configs, the shared layer, a record and its empty blob
    export_and_validate(store_dir, "hello:a", tmp_path)
    export_and_validate(store_dir, "hello:b", tmp_path)
    assert record_ref in LayoutStore(store_dir).refs()


def test_gc_removes_unreachable_blobs_and_stale_temp_files(two_images, store_dir):
    store, a, b = two_images
    orphan = str(store.put_blob(b"nothing references this blob"))
    stale = store_dir / "tmp" / "blob-stale"
    stale.write_bytes(b"x" * 10)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = store_dir / "tmp" / "blob-fresh"
    fresh.write_bytes(b"y")
    kept = blobs(store_dir) - {orphan}
    result = gc(store_dir)
    assert result["removed_digests"] == [orphan]
    assert result["freed_bytes"] == len(b"nothing references this blob")
    assert result["removed_temp_files"] == 1
    assert blobs(store_dir) == kept
    assert not stale.exists() and fresh.exists()


def test_dry_run_deletes_nothing(two_images, store_dir):
    store, a, b = two_images
    orphan = str(store.put_blob(b"an orphan"))
    assert imagebuild("rm", "hello:a", "--store", store_dir).returncode == 0
    before = blobs(store_dir)
    result = gc(store_dir, "--dry-run")
    assert result["dry_run"] is True
    assert set(result["removed_digests"]) == {orphan} | (image_blobs(store_dir, a) - image_blobs(store_dir, b))
    assert blobs(store_dir) == before


def test_rm_then_gc_frees_unique_blobs_but_not_shared_ones(two_images, store_dir, tmp_path):
    store, a, b = two_images
    unique_to_a = image_blobs(store_dir, a) - image_blobs(store_dir, b)
    assert len(unique_to_a) == 2    # its manifest and config; the layer is shared
    removed = imagebuild("rm", "hello:a", "--store", store_dir, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["removed"] == [{"ref": "hello:a", "digest": a}]
    result = gc(store_dir)
    assert set(result["removed_digests"]) == unique_to_a
    assert result["freed_bytes"] > 0
    assert blobs(store_dir) == image_blobs(store_dir, b)
    export_and_validate(store_dir, "hello:b", tmp_path)


def test_rm_by_digest_removes_every_tag_on_it(two_images, store_dir):
    store, a, b = two_images
    store.tag("other:v1", store.resolve("hello:a"))
    release_lease(store_dir)
    removed = imagebuild("rm", a, "--store", store_dir, "--json")
    assert removed.returncode == 0, removed.stderr
    assert sorted(r["ref"] for r in json.loads(removed.stdout)["removed"]) == ["hello:a", "other:v1"]
    assert set(LayoutStore(store_dir).refs()) == {"hello:b"}


def test_a_tagged_record_keeps_its_subject_alive(two_images, store_dir):
    store, a, b = two_images
    record_ref = put_record(store, "hello", a)
    unique_to_a = image_blobs(store_dir, a) - image_blobs(store_dir, b)
    record_digest = str(store.resolve(record_ref).digest)
    assert imagebuild("rm", "hello:a", "--store", store_dir).returncode == 0
    assert gc(store_dir)["removed_blobs"] == 0
    assert image_blobs(store_dir, a) <= blobs(store_dir)
    assert imagebuild("rm", record_ref, "--store", store_dir).returncode == 0
    freed = set(gc(store_dir)["removed_digests"])
    assert freed == unique_to_a | {record_digest, str(Digest.of(EMPTY_JSON))}
    assert blobs(store_dir) == image_blobs(store_dir, b)


def test_cache_entries_keep_their_layers_unless_dropped(store_dir):
    store = LayoutStore(store_dir).ensure()
    layer = store_layer(store, [Entry.file("etc/cached", b"cached layer")], 1_700_000_000)
    LayerCache(store).put("os-key", layer)
    assert gc(store_dir)["removed_blobs"] == 0
    assert LayerCache(store).get("os-key") == layer
    result = gc(store_dir, "--cache")
    assert result["removed_digests"] == [str(layer.digest)] and result["dropped_cache_entries"] == 1
    assert LayerCache(store).get("os-key") is None
    assert not list((store_dir / "imagebuild-cache" / "layers").glob("*.json"))


WRITER = r"""
import sys
from imagebuild.oci.model import rfc3339
from imagebuild.build.cache import store_layer
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import Entry
from imagebuild.oci.model import Image
from imagebuild.stores.lease import release_lease
from imagebuild.stores.layout import LayoutStore

store = LayoutStore(sys.argv[1])
layer = store_layer(store, [Entry.file("app/data", b"written by a bake in progress")], 1_700_000_000)
if sys.argv[2] == "drop-lease":
    release_lease(store.root)
print(layer.digest, flush=True)
sys.stdin.readline()    # the test runs gc here, between the layer and the tag
image = Image(created=rfc3339(1_700_000_000)).with_layer(layer.as_layer(), created_by="test")
print(store.write_image(image, ["inflight:v1"]).digest, flush=True)
"""


def start_writer(store_dir: Path, mode: str) -> tuple[subprocess.Popen, str]:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store_dir), mode], cwd=REPO_ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return writer, writer.stdout.readline().strip()


def test_gc_waits_for_a_writer_between_its_layer_and_its_tag(two_images, store_dir, tmp_path):
    writer, layer = start_writer(store_dir, "keep-lease")
    assert layer.startswith("sha256:"), writer.stderr.read()
    refused = imagebuild("gc", "--no-wait", "--store", store_dir)
    assert refused.returncode == 4 and "another imagebuild process" in refused.stderr
    assert layer in blobs(store_dir)
    release_lease(store_dir)
    collector = subprocess.Popen([sys.executable, "-m", "imagebuild", "gc", "--json", "--store", str(store_dir)],
                                 cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert "waiting for other imagebuild processes" in collector.stderr.readline()
    assert collector.poll() is None    # it cannot finish: the writer holds its lease
    out, _ = writer.communicate("go\n", timeout=GC_TIMEOUT)
    assert writer.returncode == 0
    result = json.loads(collector.communicate(timeout=GC_TIMEOUT)[0])
    assert collector.returncode == 0
    assert layer not in result["removed_digests"] and result["removed_blobs"] == 0
    assert layer in blobs(store_dir)
    export_and_validate(store_dir, "inflight:v1", tmp_path)


def test_without_the_lease_the_same_writer_would_lose_its_layer(two_images, store_dir):
    # The control for the test above: the protection is the lease, nothing else.
    writer, layer = start_writer(store_dir, "drop-lease")
    assert layer.startswith("sha256:"), writer.stderr.read()
    result = gc(store_dir)
    assert result["removed_digests"] == [layer]
    _, err = writer.communicate("go\n", timeout=GC_TIMEOUT)
    assert writer.returncode != 0 and f"layer {layer} is not in the store" in err


def test_bad_refs_exit_2_and_remove_nothing(two_images, store_dir, tmp_path):
    for ref in ("hello:nope", "sha256:" + "0" * 64, "nothing"):
        done = imagebuild("rm", "hello:a", ref, "--store", store_dir)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no image") and ref in lines[0]
    assert set(LayoutStore(store_dir).refs()) == {"hello:a", "hello:b"}
    not_a_store = tmp_path / "empty-dir"
    not_a_store.mkdir()
    for args in (("rm", "hello:a"), ("gc",)):
        done = imagebuild(*args, "--store", not_a_store)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not an imagebuild store" in done.stderr


def test_gc_and_the_store_sweep_remove_stale_atomic_temps_outside_tmp(two_images, store_dir):
    # A process killed while replacing index.json or a cache entry leaves `.tmp-*` beside the file.
    store, _a, _b = two_images
    cache = store_dir / "imagebuild-cache" / "layers"
    cache.mkdir(parents=True, exist_ok=True)
    old = time.time() - 2 * 3600
    stale = [store_dir / ".tmp-index", cache / ".tmp-entry", store_dir / ".registry-blobs.json.tmp-x"]
    for path in stale:
        path.write_bytes(b"half")
        os.utime(path, (old, old))
    fresh = store_dir / ".tmp-being-written"
    fresh.write_bytes(b"live")
    mine = store_dir / ".tmp-not-a-file"
    mine.mkdir()
    os.utime(mine, (old, old))
    result = gc(store_dir)
    assert result["removed_temp_files"] == 3
    assert not any(path.exists() for path in stale)
    assert fresh.exists() and mine.is_dir() and store.resolve("hello:a")

    # Opening the store sweeps day-old ones too, as it does in tmp/.
    day_old = store_dir / ".tmp-yesterday"
    day_old.write_bytes(b"half")
    os.utime(day_old, (time.time() - 25 * 3600,) * 2)
    LayoutStore(store_dir).ensure()
    assert not day_old.exists() and fresh.exists()


def test_gc_drops_recipe_cache_entries_whose_recipe_is_gone(two_images, store_dir, tmp_path):
    from imagebuild.recipe.cache import load_recipe_cached
    from imagebuild.stores.layout import RECIPE_CACHE_DIR
    from test_recipe_cache import FULL

    cache_dir = store_dir / RECIPE_CACHE_DIR
    recipes = []
    for name in ("kept", "moved"):
        root = tmp_path / name
        (root / "keys").mkdir(parents=True)
        (root / "keys" / "release.pub").write_text("a key\n")
        (root / "requirements.txt").write_text("flask==3.1.3\n")
        (root / "imagebuild.yaml").write_text(FULL)
        load_recipe_cached(root, cache_dir)
        recipes.append(root)
    entries = sorted(cache_dir.glob("*.json"))
    assert len(entries) == 2
    garbled = cache_dir / ("0" * 32 + ".json")
    garbled.write_text("{")
    (recipes[1] / "imagebuild.yaml").rename(recipes[1] / "old.yaml")

    assert gc(store_dir, "--dry-run")["dropped_recipe_entries"] == 2
    assert len(list(cache_dir.glob("*.json"))) == 3
    assert gc(store_dir)["dropped_recipe_entries"] == 2
    left = list(cache_dir.glob("*.json"))
    assert len(left) == 1 and json.loads(left[0].read_text())["body"]["where"]["real"] == \
        str((recipes[0] / "imagebuild.yaml").resolve())
    assert gc(store_dir)["dropped_recipe_entries"] == 0


def test_gc_forgets_verified_base_layers_whose_blob_is_gone(two_images, store_dir):
    from imagebuild.stores.layout import VERIFIED_LAYERS_FILE

    store, a, b = two_images
    layer = json.loads(store.read_blob(a))["layers"][0]["digest"]
    absent = "sha256:" + "0" * 64
    record = store_dir / VERIFIED_LAYERS_FILE
    # the layer stays; b's manifest goes with its tag in this very gc; the absent one was gone already
    record.write_text(json.dumps({layer: "kept", b: "swept now", absent: "gone", "not a digest": "x"}))
    rm = imagebuild("rm", "hello:b", "--store", store_dir)
    assert rm.returncode == 0, rm.stderr

    assert gc(store_dir, "--dry-run")["forgotten_verified_layers"] == 3
    assert len(json.loads(record.read_text())) == 4
    assert gc(store_dir)["forgotten_verified_layers"] == 3
    assert json.loads(record.read_text()) == {layer: "kept"}
    assert gc(store_dir)["forgotten_verified_layers"] == 0


def test_gc_forgets_registry_cache_entries_whose_key_the_layer_cache_no_longer_holds(two_images, store_dir):
    from imagebuild.stores.layout import LAYER_CACHE_DIR, PUBLISHED_CACHE_ENTRIES_FILE

    store, a, b = two_images
    layer = json.loads(store.read_blob(a))["layers"][0]
    layers = store_dir / LAYER_CACHE_DIR
    layers.mkdir(parents=True, exist_ok=True)
    entry = {"diff_id": layer["digest"], "digest": layer["digest"], "size": layer["size"],
             "uncompressed_size": layer["size"], "media_type": layer["mediaType"]}
    (layers / "kept.json").write_text(json.dumps(entry))
    (layers / "garbled.json").write_text("{")
    record = store_dir / PUBLISHED_CACHE_ENTRIES_FILE
    written = "sha256:" + "1" * 64
    record.write_text(json.dumps({"reg.example/app-cache": {"kept": written, "garbled": written, "gone": written},
                                  "reg.example/old-cache": {"gone": written}}))

    assert gc(store_dir, "--dry-run")["forgotten_registry_entries"] == 3
    assert len(json.loads(record.read_text())) == 2
    assert gc(store_dir)["forgotten_registry_entries"] == 3
    assert json.loads(record.read_text()) == {"reg.example/app-cache": {"kept": written}}
    assert gc(store_dir)["forgotten_registry_entries"] == 0
    # without the image, --cache drops the layer's cache entry and so what was written for it
    assert imagebuild("rm", "hello:a", "hello:b", "--store", store_dir).returncode == 0
    assert gc(store_dir, "--cache")["forgotten_registry_entries"] == 1
    assert json.loads(record.read_text()) == {}
