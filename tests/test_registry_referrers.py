"""A registry's hostile answers about what is attached to an image: a referrers index too large, of too
many entries, of descriptors that are no manifests, or listing the image itself, and a signature manifest
of absurd layers. Each ends the command with exit 5 and one line naming the registry and the image; and,
as a property, whatever the referrers answer holds, reading the attachments ends in a list or that line.

The answers come from a loopback fake registry: the real one cannot be made to send them.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.attachments import attachments
from imagebuild.stores.place import MAX_REFERRERS, RegistryPlace
from tests.conftest import imagebuild
from tests.registry_support.answers import REPOSITORY, serve, sha, valid_image
from tests.registry_support.fake_registry import Answer, FakeRegistry
from tests.test_export_errors import assert_one_line_error
from tests.test_registry_fuzz import FUZZ, json_values

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


# -- pages: a registry that cannot list all referrers at once names the next page in a Link header -----------

def _page(fake, path: str, entries: list[dict], next_link: str | None = None) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode()
    headers = {"Link": f'<{next_link}>; rel="next"'} if next_link else {}
    fake.answers[path] = Answer(body, content_type=mt.OCI_INDEX, headers=headers)


def _listed(fake, digest: str) -> list[str]:
    with RegistryClient(fake.address, backoff=0.001) as client:
        return [d.digest for d in RegistryPlace(client, REPOSITORY).referrers(digest)]


def test_the_referrers_of_every_page_are_listed(fake, image):
    first, second, third = ("sha256:%064x" % n for n in (1, 2, 3))
    path = f"/v2/{REPOSITORY}/referrers/{image}"
    # a relative link (the path with another query), then an absolute one on the same registry
    _page(fake, path, [_entry(first)], "?n=1&last=1")
    _page(fake, path + "?n=1&last=1", [_entry(second)], f"http://{fake.address}{path}?n=1&last=2")
    _page(fake, path + "?n=1&last=2", [_entry(third)])
    assert _listed(fake, image) == [first, second, third]


def test_a_next_page_on_another_registry_is_refused(fake, image, tmp_path):
    path = f"/v2/{REPOSITORY}/referrers/{image}"
    _page(fake, path, [_entry("sha256:%064x" % 1)], f"https://elsewhere.example{path}?page=2")
    assert_one_line_error(_sbom(fake, tmp_path), "elsewhere.example", "another registry", fake.address, code=5)


def test_entries_over_the_bound_across_pages_are_refused_without_reading_further(fake, image, tmp_path):
    path = f"/v2/{REPOSITORY}/referrers/{image}"
    half = MAX_REFERRERS // 2 + 1
    for page in range(3):
        entries = [_entry("sha256:%064x" % (page * half + n + 1)) for n in range(half)]
        _page(fake, path + (f"?page={page}" if page else ""), entries, f"?page={page + 1}")
    assert_one_line_error(_sbom(fake, tmp_path), f"over {MAX_REFERRERS}", fake.address, REPOSITORY, code=5)
    assert sum(1 for _, p in fake.requests if p == path) == 2    # the third page was never asked for


def test_pages_without_end_are_refused(fake, image, tmp_path):
    from imagebuild.registry.client import MAX_REFERRER_PAGES

    path = f"/v2/{REPOSITORY}/referrers/{image}"
    for page in range(MAX_REFERRER_PAGES + 1):
        _page(fake, path + (f"?page={page}" if page else ""), [], f"?page={page + 1}")
    assert_one_line_error(_sbom(fake, tmp_path), f"more than {MAX_REFERRER_PAGES} pages", fake.address, code=5)


# -- property: whatever the referrers answer, a list of checked attachments or one exit-5 line ---------------

entries = st.lists(st.one_of(
    json_values,
    st.fixed_dictionaries({"mediaType": st.sampled_from([mt.OCI_MANIFEST, mt.OCI_LAYER, "", 7]),
                           "digest": st.sampled_from(["sha256:" + "1" * 64, "sha256:XYZ", None]),
                           "size": st.one_of(st.integers(min_value=-5, max_value=2 ** 64), st.text(max_size=3))},
                          optional={"artifactType": st.sampled_from([SBOM, 3, None])})), max_size=4)


@settings(FUZZ, max_examples=50)
@given(manifests=st.one_of(entries, json_values), via_tag=st.booleans())
def test_any_referrers_answer_ends_in_attachments_or_one_exit_5_line(fake, manifests, via_tag):
    fake.reset()
    parts = valid_image()
    serve(fake, parts.manifest_bytes(), parts)
    digest = sha(parts.manifest_bytes())
    body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}).encode()
    if via_tag:
        fake.manifest(REPOSITORY, "sha256-" + digest.removeprefix("sha256:"), Answer(body, content_type=mt.OCI_INDEX))
    else:
        _referrers(fake, digest, body=body)
    with RegistryClient(fake.address, backoff=0.001) as client:
        try:
            found = attachments(RegistryPlace(client, REPOSITORY), digest, SBOM)
        except ImageBuildError as exc:
            assert exc.exit_code == 5, exc.one_line()
            assert fake.address in exc.one_line() and "\n" not in exc.one_line()
            return
    assert found == []     # nothing the fake serves is an attachment of this image
