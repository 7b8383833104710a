"""A registry layer cache entry: an OCI artifact with the empty config, read back only for its own key."""

from __future__ import annotations

import json

import pytest

from imagebuild.build.remote_cache import ARTIFACT_TYPE, cache_tag, entry_manifest, open_remote_cache, parse_entry
from imagebuild.errors import UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.layer import LayerResult


def test_an_entry_is_an_oci_artifact_with_the_empty_config():
    result = LayerResult(Digest.of(b"d"), Digest.of(b"c"), 10, 20, mt.OCI_LAYER_GZIP)
    raw = entry_manifest("k" * 64, "acme/hello", result)
    manifest = json.loads(raw)
    assert manifest["artifactType"] == ARTIFACT_TYPE and manifest["config"]["mediaType"] == mt.OCI_EMPTY
    assert parse_entry(raw, "k" * 64).result == result
    assert parse_entry(raw, "other") is None and parse_entry(b"{", "k") is None
    assert cache_tag("ab") == "cache-ab"


def test_an_entry_with_another_media_type_or_no_size_is_a_miss():
    result = LayerResult(Digest.of(b"d"), Digest.of(b"c"), 10, 20, mt.OCI_LAYER_GZIP)
    raw = json.loads(entry_manifest("k", "acme/hello", result))
    raw["annotations"]["dev.imagebuild.cache.media-type"] = "text/plain"
    assert parse_entry(json.dumps(raw).encode(), "k") is None
    raw = json.loads(entry_manifest("k", "acme/hello", LayerResult(result.diff_id, result.digest, 0, 0,
                                                                   mt.OCI_LAYER_GZIP)))
    assert parse_entry(json.dumps(raw).encode(), "k") is None


def test_no_registry_and_no_cache_options_mean_no_cache():
    assert open_remote_cache(None, "hello", push=False, cache_from=None, cache_to=None) is None


@pytest.mark.parametrize("value", ["hello", "localhost:5000/acme/cache:v1", "localhost:5000/acme@sha256:" + "a" * 64])
def test_a_cache_option_must_name_a_registry_repository(value):
    with pytest.raises(UserError):
        open_remote_cache(None, "hello", push=False, cache_from=value, cache_to=None)


def test_cache_from_and_to_in_two_registries_are_refused():
    with pytest.raises(UserError, match="two registries"):
        open_remote_cache(None, "hello", push=False, cache_from="a.example/x", cache_to="b.example/y")


class _RefusingSome:
    """A registry client that refuses the manifests of some tags: a fault the real registry cannot be
    made to show for one tag and not another."""

    host = "127.0.0.1:1"

    def __init__(self, refused: set[str]):
        self.refused, self.put = refused, []

    def blob_exists(self, repository: str, digest: str) -> bool:
        return True

    def put_manifest(self, repository: str, tag: str, raw: bytes, media_type: str) -> None:
        if tag in self.refused:
            from imagebuild.errors import RegistryError
            raise RegistryError(f"manifest {tag} refused")
        self.put.append((repository, tag, json.loads(raw)["annotations"]["dev.imagebuild.cache.key"]))


def test_every_entry_is_written_and_a_refused_one_is_one_warning():
    from imagebuild.build.remote_cache import RemoteCache
    from imagebuild.oci.reference import Reference

    layers = [(key, LayerResult(Digest.of(key.encode()), Digest.of(key.encode() * 2), 10, 20, mt.OCI_LAYER_GZIP))
              for key in ("a", "b", "c", "d", "e", "f")]
    client = _RefusingSome({cache_tag("c"), cache_tag("e")})
    cache = RemoteCache(client, None, Reference.parse("127.0.0.1:1/acme/hello-cache"))
    assert cache.publish(layers, "acme/hello") == 4
    assert sorted(client.put) == [("acme/hello-cache", cache_tag(key), key) for key in "abdf"]
    assert len(cache.warnings) == 1 and "was not written (manifest cache-c refused" in cache.warnings[0]


def test_an_entry_the_store_wrote_unchanged_is_not_written_again(tmp_path):
    from imagebuild.build.remote_cache import RemoteCache
    from imagebuild.oci.reference import Reference
    from imagebuild.stores.layout import LayoutStore

    def layer(key: str, salt: bytes = b"") -> tuple[str, LayerResult]:
        return key, LayerResult(Digest.of(key.encode() + salt), Digest.of(key.encode() * 2 + salt), 10, 20,
                                mt.OCI_LAYER_GZIP)

    store = LayoutStore(tmp_path / "store")
    store.ensure()
    to = Reference.parse("127.0.0.1:1/acme/hello-cache")
    first = _RefusingSome({cache_tag("c")})
    assert RemoteCache(first, None, to).publish([layer(key) for key in "abc"], "acme/hello", store) == 2
    # A warm runner's next push: its unchanged layers (not looked up) are known written; a refused entry,
    # a changed layer under a known key and a new key are written.
    again = _RefusingSome(set())
    layers = [layer("a"), layer("b", b"changed"), layer("c"), layer("d")]
    assert RemoteCache(again, None, to).publish(layers, "acme/hello", store) == 3
    assert sorted(key for _, _, key in again.put) == ["b", "c", "d"]
    # Nothing new: no request at all.
    last = _RefusingSome(set())
    assert RemoteCache(last, None, to).publish(layers, "acme/hello", store) == 0 and last.put == []


class _Lost(_RefusingSome):
    """A registry that has lost every cache entry (its tags deleted, or the registry wiped)."""

    def get_manifest(self, repository: str, tag: str):
        return None


def test_an_entry_the_lookup_finds_lost_is_written_again_though_the_store_wrote_it(tmp_path):
    from imagebuild.build.remote_cache import RemoteCache
    from imagebuild.oci.reference import Reference
    from imagebuild.stores.layout import LayoutStore

    store = LayoutStore(tmp_path / "store")
    store.ensure()
    cache_ref = Reference.parse("127.0.0.1:1/acme/hello-cache")
    layers = [("a", LayerResult(Digest.of(b"a"), Digest.of(b"aa"), 10, 20, mt.OCI_LAYER_GZIP))]
    assert RemoteCache(_RefusingSome(set()), None, cache_ref).publish(layers, "acme/hello", store) == 1
    # The registry lost it since; this store's next bake looks the layer up, misses, builds it again.
    lost = _Lost(set())
    cache = RemoteCache(lost, cache_ref, cache_ref)
    assert cache.lookup(["a"]) == {}
    assert cache.publish(layers, "acme/hello", store) == 1 and [key for _, _, key in lost.put] == ["a"]
