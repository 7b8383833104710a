"""An image whose layers a registry lent (a bake that hit the registry's layer cache) is complete in the
store only once something needs its bytes: export, run and a push elsewhere fetch what the store lacks
from the repository it remembers holding it, verified; a push to that registry mounts it instead.

The store here is made so by hand (its image pushed, then a layer's blob removed), as a cache-hit bake
leaves it; tests/test_registry_layer_cache.py does it with a real bake.
"""

from __future__ import annotations

import contextlib
import uuid

import pytest

from imagebuild.errors import StoreError
from imagebuild.oci.reference import Reference
from imagebuild.publish.export import export_image
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import KNOWN_BLOBS_FILE, push_image  # noqa
from tests.registry_support.images import write_app_image

pytestmark = pytest.mark.integration


@pytest.fixture
def lent(tmp_path, registry):
    """A store whose image lacks its lowest layer's blob, which lies in a registry repository it remembers."""
    store = LayoutStore(tmp_path / "store").ensure()
    write_app_image(store, "hello", "v1")
    space = f"lent-{uuid.uuid4().hex[:10]}"
    push_image(store, "hello:v1", Reference.parse(f"{registry}/{space}/cache"))
    layer = store.read_manifest(store.resolve("hello:v1").digest).layers[0]
    store.blob_path(layer.digest).unlink()
    assert not store.has_blob(layer.digest)
    return store, layer, space


def test_export_fetches_the_lent_blob_verified(lent, tmp_path):
    store, layer, _ = lent
    export_image(store, "hello:v1", f"oci:{tmp_path / 'out'}")
    assert store.has_blob(layer.digest)
    assert LayoutStore(tmp_path / "out").has_blob(layer.digest)
    store.verify_blob(layer.digest)


def test_a_push_to_the_same_registry_mounts_it_without_fetching(lent, registry):
    store, layer, space = lent
    result = push_image(store, "hello:v1", Reference.parse(f"{registry}/{space}/elsewhere"))
    assert result.blobs_mounted >= 1
    assert not store.has_blob(layer.digest)


def test_without_a_known_registry_it_is_one_clear_store_error(lent, tmp_path):
    store, layer, _ = lent
    (store.root / KNOWN_BLOBS_FILE).unlink()
    with pytest.raises(StoreError) as failed:
        export_image(store, "hello:v1", f"oci:{tmp_path / 'out'}")
    assert failed.value.exit_code == 4
    assert str(layer.digest) in failed.value.one_line() and "no registry is known" in failed.value.one_line()
    assert not (tmp_path / "out").exists()


def test_run_fetches_the_lent_blob_before_the_engine_loads_the_image(lent):
    """`imagebuild run` streams the store's layers into `docker load`: the lent one is fetched first."""
    import io

    from imagebuild.release.run import RunOptions, run_image

    store, layer, space = lent
    name = f"imagebuild-test-{space}:v1"     # the engine is shared: a name of this test's own
    store.tag(name, store.resolve("hello:v1"))
    out, err, said = io.BytesIO(), io.BytesIO(), []
    try:
        code, _ = run_image(store, name, RunOptions(), out, err, said.append)
    finally:
        from imagebuild.stores.engine import connect
        with contextlib.suppress(Exception):
            connect(None).images.remove(name, force=True)
    assert code == 0 and out.getvalue() == b"hello\n", err.getvalue()
    assert store.has_blob(layer.digest)
    assert any(line.startswith("fetching 1 blob(s) the store lacks") for line in said), said


def test_gc_counts_a_lent_blob_as_elsewhere_not_missing(lent):
    from imagebuild.stores.gc import collect_garbage

    store, layer, _ = lent
    assert collect_garbage(store, dry_run=True).missing_blobs == []
    (store.root / KNOWN_BLOBS_FILE).unlink()
    assert collect_garbage(store, dry_run=True).missing_blobs == [layer.digest]
