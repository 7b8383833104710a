"""Promotion rules and the one image copy, against places held in memory (fast; no registry).

tests/test_promote.py runs the same rules against the real registry, watched by a proxy.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from dataclasses import replace

from imagebuild.contract import ANNOTATION_DIRTY
from imagebuild.errors import CorruptBlobError, PromotionConflictError, PromotionError, RegistryError, UserError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import ANNOTATION_VERSION, EMPTY_JSON, Descriptor
from imagebuild.recipe.model import Environment
from imagebuild.registry.client import ManifestBytes
from imagebuild.release.promote import Record, Target, history, promote, record_manifest, record_tag, status
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


# -- promotion as an ordered, checked transaction --------------------------------------------

def add_labelled_image(place: MemoryPlace, version: str, *, label: bool = False, annotation: bool = False) -> Digest:
    """A clean-versioned image that says it is dirty in its config label and/or its manifest annotation."""
    labels = {ANNOTATION_DIRTY: "true"} if label else {}
    config = put_bytes(place, canonical_json({"architecture": "amd64", "os": "linux",
                                              "config": {"Labels": labels}}), mt.OCI_CONFIG)
    blob = put_bytes(place, b"layer" + version.encode(), mt.OCI_LAYER_GZIP)
    annotations = {ANNOTATION_VERSION: version, **({ANNOTATION_DIRTY: "true"} if annotation else {})}
    manifest = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_dict(), "layers": [blob.to_dict()],
        "annotations": annotations}))
    place.put_manifest(manifest, [version])
    return manifest.digest


@pytest.mark.parametrize("label,annotation", [(True, False), (False, True)])
def test_an_image_marked_dirty_is_refused_whatever_its_version(home, label, annotation):
    add_labelled_image(home, "abc1234", label=label, annotation=annotation)
    with pytest.raises(PromotionError, match="rule 'clean images only'.*dev.imagebuild.dirty"):
        run(home, "abc1234", "dev")
    assert "dev" not in home.tags()


def forge(home: MemoryPlace, tag: str, record: Record, subject: Digest | None = None) -> None:
    """A record manifest written under any tag, as `imagebuild push` could once do."""
    image = home.manifest(subject or record.digest)
    put_bytes(home, EMPTY_JSON)
    home.put_manifest(record_manifest(record, image), [tag])


def test_a_record_is_honoured_only_under_its_own_tag(home):
    v1 = home.tagged["v1"]
    run(home, "v1", "dev")
    dev_record = history(home, ENVS, "dev")[0]
    # The dev record copied under a test tag: the tag says test, the content says dev.
    forge(home, record_tag("test", 1, v1), dev_record)
    warnings: list[str] = []
    with pytest.raises(PromotionError, match="never promoted to test"):
        run(home, "v1", "prod", warn=warnings.append)
    assert any("ignored" in w and record_tag("test", 1, v1) in w for w in warnings)
    assert history(home, ENVS, "test", warn=warnings.append) == []


@pytest.mark.parametrize("change", ["sequence", "digest", "subject", "artifact"])
def test_a_record_that_does_not_match_its_tag_or_image_is_ignored(home, change):
    v1, v2 = home.tagged["v1"], home.tagged["v2"]
    run(home, "v1", "dev")
    record = Record("test", 1, Digest(v1), "v1", "2026-01-01T00:00:00Z", "memory/hello:test")
    if change == "sequence":
        forge(home, record_tag("test", 1, v1), replace(record, sequence=7))
    elif change == "digest":
        forge(home, record_tag("test", 1, v1), replace(record, digest=Digest(v2)), subject=Digest(v2))
    elif change == "subject":
        forge(home, record_tag("test", 1, v1), record, subject=Digest(v2))
    else:
        raw = json.loads(record_manifest(record, home.manifest(v1)).raw)
        raw["artifactType"] = "application/vnd.example+json"
        home.put_manifest(manifest_of(canonical_json(raw)), [record_tag("test", 1, v1)])
    with pytest.raises(PromotionError, match="never promoted to test"):
        run(home, "v1", "prod", warn=lambda line: None)
    assert "prod" not in home.tags()


def test_previous_is_what_the_tag_held(home):
    v1, v2 = home.tagged["v1"], home.tagged["v2"]
    run(home, "v1", "dev")
    home.put_manifest(home.manifest(v2), ["dev"])       # moved by hand
    again = run(home, "v1", "dev")
    assert again.previous == v2
    assert history(home, ENVS, "dev")[0].previous == v2


class FailingPlace(MemoryPlace):
    """A memory place whose manifest PUT fails for the tags `fail` matches."""

    def __init__(self, label: str, fail):
        super().__init__(label)
        self.fail = fail

    def put_manifest(self, manifest, tags=(), platform=None):
        if any(self.fail(tag) for tag in tags):
            raise RegistryError("the registry failed", status=500)
        super().put_manifest(manifest, tags, platform)


def failing_home(fail) -> FailingPlace:
    place = FailingPlace("memory/hello", lambda tag: False)
    add_image(place, "v1")
    add_image(place, "v2")
    place.fail = fail
    return place


def test_a_failed_record_write_leaves_the_tag_where_it_was():
    home = failing_home(lambda tag: tag.startswith("promotion-dev-000002"))
    run(home, "v1", "dev")
    with pytest.raises(RegistryError):
        run(home, "v2", "dev")
    assert home.tagged["dev"] == home.tagged["v1"]
    assert [r.sequence for r in history(home, ENVS, "dev")] == [1]


def test_a_failed_tag_move_leaves_a_record_status_calls_not_completed():
    home = failing_home(lambda tag: False)
    v1, v2 = home.tagged["v1"], home.tagged["v2"]
    run(home, "v1", "dev")
    home.fail = lambda tag: tag == "dev"
    with pytest.raises(RegistryError):
        run(home, "v2", "dev")
    assert home.tagged["dev"] == v1
    assert record_tag("dev", 2, v2) in home.tags(), "the record stays"
    (row, *_) = status(home, ENVS, in_home(home))
    assert (row.digest, row.version, row.sequence, row.promoted_at) == (v1, "v1", 1, "2026-01-02T03:04:05Z")
    assert row.note == f"promotion 2 of v2 ({Digest(v2).short}) not completed: memory/hello:dev holds v1"
    assert [(r.sequence, r.digest) for r in history(home, ENVS, "dev", in_home(home))] == [(1, v1)]
    assert [r.sequence for r in history(home, ENVS, "dev")] == [2, 1], "without the tag, every honest record"
    # The next promotion takes the next sequence; its `previous` shows the unfinished one never took effect.
    home.fail = lambda tag: False
    done = run(home, "v2", "dev")
    assert (done.sequence, done.previous, done.action) == (3, v1, "retag")
    assert [(r.sequence, r.previous) for r in history(home, ENVS, "dev")][0] == (3, v1)


class RacingPlace(MemoryPlace):
    """A memory place where a rival promotion writes its record for the same sequence right after ours."""

    def __init__(self, label: str):
        super().__init__(label)
        self.rival: tuple[str, ManifestBytes] | None = None
        self.rival_moves_tag = False
        self.rival_withdraws_after = 0
        self.listings = 0

    def put_manifest(self, manifest, tags=(), platform=None):
        super().put_manifest(manifest, tags, platform)
        if self.rival and any(t.startswith("promotion-") for t in tags):
            tag, rival = self.rival
            self.rival = None
            super().put_manifest(rival, [tag])
            self.rival_tag = tag

    def tags(self):
        self.listings += 1
        if getattr(self, "rival_tag", None) and self.rival_withdraws_after and \
                self.listings > self.rival_withdraws_after:
            self.tagged.pop(self.rival_tag, None)
        if getattr(self, "rival_tag", None) and self.rival_moves_tag:
            self.tagged["dev"] = json.loads(self.blobs[self.tagged[self.rival_tag]])["subject"]["digest"]
        return super().tags()


def racing_home() -> RacingPlace:
    place = RacingPlace("memory/hello")
    add_image(place, "v1")
    add_image(place, "v2")
    add_image(place, "v3")
    return place


def rival_record(home: MemoryPlace, version: str, sequence: int = 1) -> tuple[str, ManifestBytes]:
    digest = Digest(home.tagged[version])
    record = Record("dev", sequence, digest, version, "2026-01-02T03:04:05Z", "memory/hello:dev")
    put_bytes(home, EMPTY_JSON)
    return record.tag, record_manifest(record, home.manifest(digest))


def by_digest(home: MemoryPlace, *versions: str) -> list[str]:
    return sorted(versions, key=lambda v: home.tagged[v])


def test_a_rival_record_with_a_smaller_digest_wins_the_sequence():
    home = racing_home()
    small, large = by_digest(home, "v1", "v2")
    home.rival = rival_record(home, small)
    with pytest.raises(PromotionConflictError, match="another promotion to dev won.*retry") as caught:
        run(home, large, "dev")
    assert caught.value.exit_code == 5
    assert record_tag("dev", 1, home.tagged[large]) not in home.tags(), "the loser withdrew its record"
    assert "dev" not in home.tagged


def test_a_rival_with_a_larger_digest_that_withdraws_lets_ours_proceed():
    home = racing_home()
    small, large = by_digest(home, "v1", "v2")
    home.rival = rival_record(home, large)
    home.rival_withdraws_after = 3
    done = run(home, small, "dev", wait=(5.0, 0.0))
    assert done.sequence == 1 and home.tagged["dev"] == home.tagged[small]
    assert [t for t in home.tags() if t.startswith("promotion-")] == [record_tag("dev", 1, home.tagged[small])]


def test_a_rival_with_a_larger_digest_that_already_moved_the_tag_wins():
    home = racing_home()
    small, large = by_digest(home, "v1", "v2")
    home.rival = rival_record(home, large)
    home.rival_moves_tag = True
    with pytest.raises(PromotionConflictError, match="another promotion to dev won"):
        run(home, small, "dev", wait=(5.0, 0.0))
    assert home.tagged["dev"] == home.tagged[large]
    assert [t for t in home.tags() if t.startswith("promotion-")] == [record_tag("dev", 1, home.tagged[large])]


def test_a_tag_moved_since_the_start_refuses_the_promotion():
    home = racing_home()
    run(home, "v1", "dev")
    original = home.put_manifest

    def put_then_move(manifest, tags=(), platform=None):
        original(manifest, tags, platform)
        if any(t.startswith("promotion-dev-000002") for t in tags):
            home.tagged["dev"] = home.tagged["v3"]      # someone else moved it meanwhile
    home.put_manifest = put_then_move
    with pytest.raises(PromotionConflictError, match="another promotion to dev won"):
        run(home, "v2", "dev")
    assert home.tagged["dev"] == home.tagged["v3"]
    assert [r.sequence for r in history(home, ENVS, "dev", warn=lambda line: None)] == [1]


def test_push_and_bake_refuse_tags_only_promotion_writes():
    from imagebuild.build.images_from_dir import store_ref_name
    from imagebuild.stores.reserved_tags import refuse_promotion_tag, refuse_version_tag

    for tag in ("promotion-prod-000001-5f1c0a9e2b7d", "prod"):
        with pytest.raises(UserError) as caught:
            refuse_promotion_tag(tag, ["dev", "test", "prod"])
        assert caught.value.exit_code == 2
        assert re.search("only promotion writes.*imagebuild promote", caught.value.one_line())
    refuse_promotion_tag("v1", ["dev", "test", "prod"])
    for version in ("prod", "promotion-x", "sha256-abc", "v1-disk"):
        with pytest.raises(UserError) as caught:
            refuse_version_tag(version, ["dev", "test", "prod"])
        assert "rename the git tag" in caught.value.one_line()
    refuse_version_tag("v1.2-3-gabc1234", ["dev", "test", "prod"])
    with pytest.raises(UserError, match="promotion record's tag"):
        store_ref_name("hello:promotion-dev-000001-5f1c0a9e2b7d")
    assert store_ref_name("hello") == "hello:latest"


def test_a_multi_platform_index_is_promoted_by_its_digest(home):
    """A bake of several platforms tags an index carrying the images' annotations; its record's
    subject is the index, and the environment's tag moves onto the index's digest."""
    children = [add_image(home, f"v3-{arch}", tag=f"v3-{arch}") for arch in ("amd64", "arm64")]
    index = manifest_of(canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_INDEX, "annotations": {ANNOTATION_VERSION: "v3"},
        "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": child, "size": len(home.blobs[child]),
                       "platform": {"architecture": arch, "os": "linux"}}
                      for child, arch in zip(children, ("amd64", "arm64"))]}))
    home.put_manifest(index, ["v3"])
    result = run(home, "v3", "dev")
    assert result.digest == index.digest and home.tagged["dev"] == index.digest
    assert run(home, "v3", "dev").action == "none"      # its record is read back as honest
