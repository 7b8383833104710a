"""A registry's garbled manifests end a promotion or a status with exit 5 and one line, never a crash.

The answers come from the loopback fake registry: the real one cannot be made to send them.
"""

from __future__ import annotations

import json

import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import ANNOTATION_VERSION
from imagebuild.recipe.model import Environment
from imagebuild.registry.client import RegistryClient
from imagebuild.release.promote import Target, promote, record_tag, status
from imagebuild.stores.place import RegistryPlace
from tests.registry_support.answers import REPOSITORY, sha, valid_image
from tests.registry_support.fake_registry import Answer, FakeRegistry

ENVS = (Environment("dev"), Environment("test"))


@pytest.fixture(scope="module")
def fake():
    with FakeRegistry() as running:
        yield running


@pytest.fixture
def home(fake):
    fake.reset()
    with RegistryClient(fake.address, backoff=0.001) as client:
        yield RegistryPlace(client, REPOSITORY)


def versioned_manifest() -> bytes:
    parts = valid_image()
    parts.manifest["annotations"] = {ANNOTATION_VERSION: "v1"}
    return parts.manifest_bytes()


def serve(fake: FakeRegistry, reference: str, body: bytes, tags: list[str] = ()) -> None:
    fake.manifest(REPOSITORY, reference, Answer(body, content_type=mt.OCI_MANIFEST))
    parts = valid_image()     # promotion reads the image's config (its dirty label)
    for blob in (parts.layer, parts.config):
        fake.blob(REPOSITORY, sha(blob), Answer(blob))
    fake.answers[f"/v2/{REPOSITORY}/tags/list"] = Answer(json.dumps({"tags": ["v1", *tags]}).encode(),
                                                         content_type="application/json")


def promote_error(home: RegistryPlace) -> ImageBuildError:
    with pytest.raises(ImageBuildError) as caught:
        promote(home, ENVS, "v1", "dev", target_for=lambda env: Target(home, env.name), name="hello")
    return caught.value


def assert_exit_5(error: ImageBuildError, home: RegistryPlace) -> None:
    line = error.one_line()
    assert error.exit_code == 5, line
    assert "\n" not in line and home.label in line, line


@pytest.mark.parametrize("body", [b"[]", b'"v1"', b'{"annotations": ["v1"]}', b'{"annotations": {"v": 1}}'],
                         ids=["list", "string", "annotations-list", "annotations-not-strings"])
def test_a_garbled_image_manifest_is_exit_5(fake, home, body):
    serve(fake, "v1", body)
    assert_exit_5(promote_error(home), home)


def test_a_garbled_promotion_record_is_exit_5(fake, home):
    manifest = versioned_manifest()
    record = record_tag("dev", 1, sha(manifest))
    serve(fake, "v1", manifest, [record])
    fake.manifest(REPOSITORY, record, Answer(b"[1, 2]", content_type=mt.OCI_MANIFEST))
    assert_exit_5(promote_error(home), home)


def test_a_garbled_disk_manifest_is_exit_5(fake, home):
    serve(fake, "v1", versioned_manifest(), ["v1-disk"])
    fake.manifest(REPOSITORY, "v1-disk", Answer(b'{"artifactType": "x", "subject": "sha256:00"}',
                                                content_type=mt.OCI_MANIFEST))
    assert_exit_5(promote_error(home), home)


def test_status_of_a_garbled_environment_tag_is_exit_5(fake, home):
    serve(fake, "v1", versioned_manifest())
    fake.manifest(REPOSITORY, "dev", Answer(b"[]", content_type=mt.OCI_MANIFEST))
    with pytest.raises(ImageBuildError) as caught:
        status(home, ENVS, lambda env: Target(home, env.name))
    assert_exit_5(caught.value, home)
