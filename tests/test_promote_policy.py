"""Promotion rules and the one image copy, against places held in memory (fast; no registry).

tests/test_promote.py runs the same rules against the real registry, watched by a proxy.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from imagebuild.errors import CorruptBlobError, PromotionError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import ANNOTATION_VERSION, Descriptor
from imagebuild.recipe.model import Environment
from imagebuild.release.promote import Target, history, promote, status
from imagebuild.stores.copy import copy
from imagebuild.stores.memory import MemoryPlace
from imagebuild.stores.place import manifest_of, put_bytes

ENVS = (Environment("dev"), Environment("test"), Environment("prod"))
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def add_image(place: MemoryPlace, version: str, layer: bytes = b"layer", tag: str | None = None) -> Digest:
    """A small image: a config and one layer, the version in its annotations, tagged `version`."""
    blob = put_bytes(place, layer + version.encode(), mt.OCI_LAYER_GZIP)
    # A copy checks that the config names one diff_id per layer; the layer bytes are no real tar.
    config = put_bytes(place, canonical_json({"architecture": "amd64", "os": "linux", "v": version,
                                              "rootfs": {"type": "layers", "diff_ids": [str(blob.digest)]}}),
                       mt.OCI_CONFIG)
    manifest = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_dict(), "layers": [blob.to_dict()],
        "annotations": {ANNOTATION_VERSION: version}}))
    place.put_manifest(manifest, [tag or version])
    return manifest.digest


def in_home(home: MemoryPlace):
    return lambda env: Target(home, env.name)


def run(home, image, env, target_for=None, envs=ENVS, **kw):
    return promote(home, envs, image, env, target_for=target_for or in_home(home), name="hello",
                   now=lambda: NOW, **kw)


@pytest.fixture
def home() -> MemoryPlace:
    place = MemoryPlace("memory/hello")
    add_image(place, "v1")
    add_image(place, "v2")
    return place


def test_order_an_environment_takes_only_what_the_previous_one_had(home):
    with pytest.raises(PromotionError, match=r"rule 'promotion order' \(dev -> test -> prod\).*never promoted to dev"):
        run(home, "v1", "test")
    assert "test" not in home.tags()
    run(home, "v1", "dev")
    done = run(home, "v1", "test")
    assert done.action == "retag" and home.tagged["test"] == home.tagged["v1"]
    with pytest.raises(PromotionError, match="never promoted to test"):
        run(home, "v2", "prod")
    # The message names the image by its one short form.
    with pytest.raises(PromotionError, match=rf"v2 \({Digest(home.tagged['v2']).short}\)"):
        run(home, "v2", "test")


def test_dirty_and_unversioned_images_are_refused(home):
    add_image(home, "abc1234-dirty")
    with pytest.raises(PromotionError, match="rule 'clean images only': abc1234-dirty"):
        run(home, "abc1234-dirty", "dev")
    unversioned = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                              "config": Descriptor(mt.OCI_CONFIG, Digest.of(b"{}"), 2).to_dict(),
                                              "layers": []}))
    home.put_manifest(unversioned, ["bare"])
    with pytest.raises(PromotionError, match="rule 'versioned images only'"):
        run(home, "bare", "dev")
    assert not [t for t in home.tags() if t.startswith("promotion-")]


def test_promoting_the_digest_an_environment_holds_is_a_no_op(home):
    first = run(home, "v1", "dev")
    tags = home.tags()
    again = run(home, "v1", "dev")
    assert (again.action, again.record, again.sequence) == ("none", first.record, first.sequence)
    assert "nothing to do" in again.messages[0]
    assert home.tags() == tags, "no second record"
    assert [r.sequence for r in history(home, ENVS, "dev")] == [1]


def test_going_back_to_an_earlier_digest_is_a_rollback(home):
    v1, v2 = home.tagged["v1"], home.tagged["v2"]
    assert not run(home, "v1", "dev").rollback
    forward = run(home, "v2", "dev")
    assert not forward.rollback and forward.previous == v1
    back = run(home, "hello:v1", "dev")
    assert back.rollback and back.previous == v2 and back.sequence == 3
    assert [(r.sequence, r.digest) for r in history(home, ENVS, "dev")] == [(3, v1), (2, v2), (1, v1)]
    assert isinstance(back.digest, Digest) and json.loads(json.dumps(back.to_dict()))["digest"] == v1
    (row, *_) = status(home, ENVS, in_home(home))
    assert (row.digest, row.version, row.promoted_at) == (v1, "v1", "2026-01-02T03:04:05Z")


def test_an_environment_in_another_place_gets_a_copy_with_the_same_digest(home):
    prod = MemoryPlace("memory/prod")
    envs = (Environment("dev"), Environment("prod", registry="elsewhere"))

    def target_for(env):
        return Target(prod if env.registry else home, env.name)

    run(home, "v1", "dev", target_for, envs)
    dry = run(home, "v1", "prod", target_for, envs, dry_run=True)
    assert dry.action == "copy" and prod.tags() == []
    done = run(home, "v1", "prod", target_for, envs)
    assert done.action == "copy" and prod.tagged == {"prod": home.tagged["v1"]}
    assert (done.blobs["blobs_uploaded"], done.blobs["blobs_skipped"], done.blobs["blobs_mounted"]) == (2, 0, 0)
    manifest = home.manifest("v1")
    assert prod.manifest("prod").raw == manifest.raw
    # The record stays at home; the copy carries only the image.
    assert [t for t in prod.tags() if t.startswith("promotion-")] == []
    again = run(home, "v1", "prod", target_for, envs)
    assert again.action == "none"


def test_copy_within_one_host_mounts_and_skips_what_is_there():
    source, target = MemoryPlace("a", host="h"), MemoryPlace("b", host="h")
    digest = add_image(source, "v1")
    first = copy(source, target, digest, ["v1"])
    assert (first.blobs_mounted, first.blobs_copied, first.blob_bytes) == (2, 0, 0)
    again = copy(source, target, digest, ["again"])
    assert (again.blobs_skipped, again.blobs_mounted) == (2, 0) and target.tagged["again"] == digest


def test_copy_walks_an_index_children_first_and_carries_attachments():
    source, target = MemoryPlace("a"), MemoryPlace("b")
    child = add_image(source, "v1")
    size = len(source.blobs[child])
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": child, "size": size,
         "platform": {"architecture": "amd64", "os": "linux"}}]}))
    source.put_manifest(index, ["multi"])
    empty = put_bytes(source, b"{}", mt.OCI_EMPTY)
    sbom = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                       "artifactType": "application/spdx+json", "config": empty.to_dict(),
                                       "layers": [empty.to_dict()],
                                       "subject": {"mediaType": mt.OCI_INDEX, "digest": index.digest,
                                                   "size": len(index.raw)}}))
    source.put_manifest(sbom)
    source.add_referrer(index.digest, Descriptor(mt.OCI_MANIFEST, sbom.digest, len(sbom.raw)))
    assert [d.digest for d in source.referrers(index.digest, "application/spdx+json")] == [sbom.digest]
    assert source.referrers(index.digest, "application/other") == []

    plain = copy(source, target, index.digest, ["multi"])
    assert target.manifest(child) is not None and target.tagged["multi"] == index.digest
    assert plain.attachments == [] and target.referrers(index.digest) == []
    carried = copy(source, target, index.digest, ["multi"], attachments=["application/spdx+json"])
    assert carried.attachments == [sbom.digest]
    assert [d.digest for d in target.referrers(index.digest)] == [sbom.digest]


def test_copy_refuses_a_blob_that_does_not_match_its_digest():
    source, target = MemoryPlace("a"), MemoryPlace("b")
    digest = add_image(source, "v1")
    layer = json.loads(source.blobs[digest])["layers"][0]["digest"]
    source.blobs[layer] = b"changed"
    with pytest.raises(CorruptBlobError):
        copy(source, target, digest, ["v1"])
    assert layer not in target.blobs and "v1" not in target.tagged, "nothing half-copied is tagged"
