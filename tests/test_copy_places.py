"""The one copy between real places: the local layout and the registry on 127.0.0.1:5000 (distribution 2.8,
which has no referrers API, so attachments go through the referrers tag schema)."""

from __future__ import annotations

import uuid

import pytest

from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import Descriptor
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.copy import copy
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.place import MAX_REFERRERS, LayoutPlace, RegistryPlace, manifest_of, put_bytes, referrers_tag
from tests.registry_support.images import write_app_image

SBOM = "application/spdx+json"


def attach_sbom(place, subject) -> Descriptor:
    """An artifact whose subject is `subject`, indexed under the referrers tag."""
    empty = put_bytes(place, b"{}", mt.OCI_EMPTY)
    sbom = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": SBOM,
                                       "config": empty.to_dict(), "layers": [empty.to_dict()],
                                       "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                                                   "size": len(subject.raw)}}))
    place.put_manifest(sbom)
    descriptor = Descriptor(mt.OCI_MANIFEST, sbom.digest, len(sbom.raw))
    place.add_referrer(subject.digest, descriptor)
    return descriptor


def test_layout_to_layout_carries_the_image_and_its_attachments(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    ref_name = write_app_image(store, "hello", "v1")
    source = LayoutPlace(store, "hello")
    image = source.manifest("v1")
    sbom = attach_sbom(source, image)
    assert [d.digest for d in source.referrers(image.digest, SBOM)] == [sbom.digest]
    assert source.tags() == sorted(["v1", referrers_tag(image.digest)])

    target = LayoutPlace(LayoutStore(tmp_path / "other"), "hello")
    result = copy(source, target, image.digest, ["v1"], attachments=True)
    assert result.digest == store.resolve(ref_name).digest and result.attachments == [sbom.digest]
    assert target.manifest("v1").raw == image.raw
    assert [d.digest for d in target.referrers(image.digest)] == [sbom.digest]
    for blob in target.store.read_manifest(image.digest).blobs():
        target.store.verify_blob(blob.digest)


@pytest.mark.integration
def test_registry_without_a_referrers_api_keeps_attachments_in_the_tag_schema(registry, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    write_app_image(store, "hello", "v1")
    local = LayoutPlace(store, "hello")
    image = local.manifest("v1")
    sbom = attach_sbom(local, image)
    with RegistryClient(registry) as client:
        remote = RegistryPlace(client, f"copy-{uuid.uuid4().hex[:10]}/hello")
        pushed = copy(local, remote, image, ["v1"], attachments=[SBOM])
        assert pushed.attachments == [sbom.digest] and pushed.blobs_copied == len(store.read_manifest(image.digest).blobs())
        assert client.list_referrers(remote.repository, image.digest, max_entries=MAX_REFERRERS) is None   # distribution 2.8
        assert referrers_tag(image.digest) in remote.tags()
        assert [d.digest for d in remote.referrers(image.digest, SBOM)] == [sbom.digest]

        back = LayoutPlace(LayoutStore(tmp_path / "back"), "hello")
        pulled = copy(remote, back, image.digest, ["v1"], attachments=True)
        assert pulled.attachments == [sbom.digest] and back.manifest("v1").raw == image.raw
        assert [d.digest for d in back.referrers(image.digest)] == [sbom.digest]


@pytest.mark.integration
def test_a_copy_between_registries_retries_a_failing_blob_once_not_per_side(registry, tmp_path):
    """The target's blob retry gives up once; the source's own retry must not start those rounds over."""
    from imagebuild.errors import RegistryError
    from imagebuild.registry.client import BLOB_ATTEMPTS
    from tests.registry_support.proxy import Fault, FaultProxy

    store = LayoutStore(tmp_path / "store").ensure()
    write_app_image(store, "hello", "v1")
    local = LayoutPlace(store, "hello")
    image = local.manifest("v1")
    with RegistryClient(registry) as client, FaultProxy(registry) as proxy:
        source = RegistryPlace(client, f"copy-{uuid.uuid4().hex[:10]}/hello")
        copy(local, source, image, ["v1"])
        fault = proxy.add_fault(Fault("PUT", r"/blobs/uploads/", "500", times=0))
        with RegistryClient(proxy.address, attempts=1, backoff=0.01) as far:
            with pytest.raises(RegistryError):
                copy(source, RegistryPlace(far, f"copy-{uuid.uuid4().hex[:10]}/hello"), image.digest, ["v1"],
                     parallel=1)
        assert fault.seen == BLOB_ATTEMPTS


def test_referrers_added_at_once_leave_the_index_adding_them_one_by_one_leaves(tmp_path):
    def sboms(place, subject, kinds):
        empty = put_bytes(place, b"{}", mt.OCI_EMPTY)
        made = []
        for kind in kinds:
            manifest = manifest_of(canonical_json({
                "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": kind, "config": empty.to_dict(),
                "layers": [empty.to_dict()], "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                                                         "size": len(subject.raw)}}))
            place.put_manifest(manifest)
            made.append((Descriptor(mt.OCI_MANIFEST, manifest.digest, len(manifest.raw)), manifest))
        return made

    indexes = []
    for how in ("one by one", "at once"):
        store = LayoutStore(tmp_path / how.replace(" ", "-")).ensure()
        write_app_image(store, "hello", "v1")
        place = LayoutPlace(store, "hello")
        image = place.manifest("v1")
        (there, _), = sboms(place, image, ["application/vnd.other"])
        place.add_referrer(image.digest, there)            # what another writer left: kept by the merge
        made = sboms(place, image, [SBOM, "application/vnd.cyclonedx+json", SBOM + "+again"])
        if how == "at once":
            place.add_referrers(image.digest, made + made[:1])
        else:
            for descriptor, _ in made + made[:1]:
                place.add_referrer(image.digest, descriptor)
        indexes.append(place.manifest(referrers_tag(image.digest)).raw)
        assert len(place.referrers(image.digest)) == 4
    assert indexes[0] == indexes[1]
