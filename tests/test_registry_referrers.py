"""A registry's hostile answers about what is attached to an image: a referrers index too large, of too
many entries, of descriptors that are no manifests, or listing the image itself, and a signature manifest
of absurd layers. Each ends the command with exit 5 and one line naming the registry and the image.

The answers come from a loopback fake registry: the real one cannot be made to send them.
"""

from __future__ import annotations

import json

import pytest

from imagebuild.oci import mediatypes as mt
from imagebuild.stores.place import MAX_REFERRERS
from tests.conftest import imagebuild
from tests.registry_support.answers import REPOSITORY, serve, sha, valid_image
from tests.registry_support.fake_registry import Answer, FakeRegistry
from tests.test_export_errors import assert_one_line_error

SBOM = "application/spdx+json"


@pytest.fixture(scope="module")
def fake():
    with FakeRegistry() as running:
        yield running


@pytest.fixture()
def image(fake):
    """An image served under acme/hello:v1; its manifest's digest."""
    fake.reset()
    parts = valid_image()
    serve(fake, parts.manifest_bytes(), parts)
    return sha(parts.manifest_bytes())


def _referrers(fake, digest: str, entries=None, body: bytes | None = None) -> None:
    if body is None:
        body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()
    fake.answers[f"/v2/{REPOSITORY}/referrers/{digest}"] = Answer(body, content_type=mt.OCI_INDEX)


def _entry(digest: str, media_type: str = mt.OCI_MANIFEST) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 400, "artifactType": SBOM}


def _sbom(fake, tmp_path):
    return imagebuild("sbom", f"{fake.address}/{REPOSITORY}:v1", "--store", tmp_path / "store")


@pytest.mark.parametrize("answer, words", [
    (lambda digest: {"body": b'{"manifests": [' + b" " * (5 * 1024 * 1024) + b"]}"}, "larger than 4 MiB"),
    (lambda digest: {"entries": [_entry("sha256:%064x" % n) for n in range(MAX_REFERRERS * 5)]},
     f"over {MAX_REFERRERS}"),
    (lambda digest: {"entries": [_entry(digest)]}, "among its own referrers"),
    (lambda digest: {"entries": [_entry("sha256:" + "1" * 64, mt.OCI_LAYER)]}, "not a manifest's"),
    (lambda digest: {"entries": [{"mediaType": mt.OCI_MANIFEST, "digest": "sha256:XYZ", "size": 1}]},
     "not sha256: and 64 hex digits"),
], ids=["huge", "too-many", "loop", "not-a-manifest", "bad-digest"])
def test_a_hostile_referrers_answer_is_exit_5_naming_the_registry_and_image(fake, image, tmp_path, answer, words):
    _referrers(fake, image, **answer(image))
    line = assert_one_line_error(_sbom(fake, tmp_path), words, fake.address, REPOSITORY, code=5)
    assert image in line or "referrers" in line
    assert not (tmp_path / "store" / "index.json").exists() or "hello" not in (tmp_path / "store" / "index.json").read_text()


def test_a_hostile_referrers_tag_is_exit_5_too(fake, image, tmp_path):
    # a registry without the referrers API: the index lies under the tag sha256-<hex>
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                       "manifests": [_entry("sha256:%064x" % n) for n in range(MAX_REFERRERS + 1)]}).encode()
    fake.manifest(REPOSITORY, "sha256-" + image.removeprefix("sha256:"), Answer(body, content_type=mt.OCI_INDEX))
    assert_one_line_error(_sbom(fake, tmp_path), f"over {MAX_REFERRERS}", fake.address, REPOSITORY, code=5)


@pytest.mark.parametrize("layers, words", [
    ([{"mediaType": mt.COSIGN_SIMPLESIGNING, "digest": "sha256:" + "3" * 64, "size": 2 ** 40}], "over 1048576"),
    ([{"mediaType": mt.COSIGN_SIMPLESIGNING, "digest": "sha256:%064x" % n, "size": 10} for n in range(100_000)],
     "larger than 4 MiB"),
    ([{"mediaType": mt.COSIGN_SIMPLESIGNING, "digest": "sha256:%064x" % n, "size": 10} for n in range(300)],
     "300 signatures, over 256"),
], ids=["huge-layer", "huge-manifest", "many-layers"])
def test_a_hostile_signature_manifest_is_exit_5(fake, image, tmp_path, layers, words):
    from imagebuild.evidence.keys import generate_keypair
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", None)
    config = {"mediaType": mt.OCI_CONFIG, "digest": "sha256:" + "4" * 64, "size": 10}
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": layers}).encode()
    fake.manifest(REPOSITORY, "sha256-" + image.removeprefix("sha256:") + ".sig", Answer(body, content_type=mt.OCI_MANIFEST))
    done = imagebuild("verify", f"{fake.address}/{REPOSITORY}:v1", "--key", tmp_path / "k.pub",
                      "--store", tmp_path / "store")
    assert_one_line_error(done, words, fake.address, code=5)
