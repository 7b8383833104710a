"""A registry's malformed or lying answers end a pull with exit 5 and one line naming the registry and
the reference, and leave the local store as it was.

The answers come from a loopback fake registry: the real one cannot be made to send them.
"""

from __future__ import annotations

import json

import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.stores.layout import LayoutStore
from tests.conftest import imagebuild
from tests.registry_support.answers import (REPOSITORY, TAG, pull_error, serve, sha, store_state,
                                            valid_image)
from tests.registry_support.fake_registry import Answer, FakeRegistry
from tests.test_export_errors import assert_one_line_error


@pytest.fixture(scope="module")
def fake():
    with FakeRegistry() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_answers(fake):
    fake.reset()


def _without_layer_digest(m):
    del m["layers"][0]["digest"]


def _size_as_string(m):
    m["layers"][0]["size"] = str(m["layers"][0]["size"])


def _layers_as_mapping(m):
    m["layers"] = {"0": m["layers"][0]}


def _negative_size(m):
    m["layers"][0]["size"] = -5


def _size_too_large(m):
    m["layers"][0]["size"] += 1000


def _bad_digest(m):
    m["layers"][0]["digest"] = "sha256:XYZ"


def _config_not_a_mapping(m):
    m["config"] = "sha256:" + "0" * 64


def _size_is_bool(m):
    m["config"]["size"] = True


MANIFEST_CHANGES = [_without_layer_digest, _size_as_string, _layers_as_mapping, _negative_size,
                    _size_too_large, _bad_digest, _config_not_a_mapping, _size_is_bool]


def assert_refused(store: LayoutStore, error, source, *words):
    assert error.exit_code == 5, error.one_line()
    line = error.one_line()
    assert "\n" not in line
    assert str(source) in line, line
    for word in words:
        assert word in line, line
    assert store_state(store) == ({}, [])


@pytest.mark.parametrize("change", MANIFEST_CHANGES, ids=lambda f: f.__name__.strip("_"))
def test_a_malformed_manifest_is_refused(fake, tmp_path, change):
    parts = valid_image()
    change(parts.manifest)
    source = serve(fake, parts.manifest_bytes(), parts)
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source)


@pytest.mark.parametrize("body", [b"[]", b'"hello"', b"not json {", b"\xff\xfe", b"",
                                  b'{"schemaVersion": 2, "annotations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
                         ids=["list", "string", "not-json", "not-utf8", "empty", "nested-100000"])
def test_a_manifest_body_that_is_no_manifest_is_refused(fake, tmp_path, body):
    source = serve(fake, body)
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source)


def test_a_manifest_over_4_mib_is_refused_before_parsing(fake, tmp_path):
    parts = valid_image()
    parts.manifest["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    source = serve(fake, parts.manifest_bytes(), parts)
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source, "4 MiB")


def test_a_redirect_loop_is_refused(fake, tmp_path):
    source = serve(fake, Answer(redirect_loop=True))
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source, "redirect")


def test_a_layer_shorter_than_its_descriptor_is_refused(fake, tmp_path):
    """The digest matches the bytes, but the manifest claims 1000 bytes more than there are."""
    parts = valid_image()
    _size_too_large(parts.manifest)
    source = serve(fake, parts.manifest_bytes(), parts)
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source)


def _diff_ids_missing(config: bytes) -> bytes:
    data = json.loads(config)
    data["rootfs"]["diff_ids"] = []
    return json.dumps(data).encode()


@pytest.mark.parametrize("change", [lambda config: b'["not", "a", "config"]', lambda config: b"{nope",
                                    _diff_ids_missing], ids=["list", "not-json", "diff_ids-missing"])
def test_a_config_that_does_not_fit_is_refused(fake, tmp_path, change):
    parts = valid_image()
    parts.config = change(parts.config)
    parts.manifest["config"].update(digest=sha(parts.config), size=len(parts.config))
    source = serve(fake, parts.manifest_bytes(), parts)
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source, "config")


def test_a_malformed_index_is_refused(fake, tmp_path):
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": sha(b"x"), "size": 1, "platform": "linux"}]}
    source = serve(fake, Answer(json.dumps(index).encode(), content_type=mt.OCI_INDEX))
    store = LayoutStore(tmp_path / "store")
    assert_refused(store, pull_error(store, source), source)


def test_the_valid_image_pulls(fake, tmp_path):
    """The cases above differ from this one only by what they break."""
    parts = valid_image()
    source = serve(fake, parts.manifest_bytes(), parts)
    store = LayoutStore(tmp_path / "store")
    from imagebuild.stores.registry import pull_image
    pull_image(store, source)
    assert list(store.refs()) == [str(source)]


@pytest.mark.parametrize("body", [b"[]", b"not json", b"[" * 100_000])
def test_the_cli_exits_5_with_one_line(fake, tmp_path, body):
    source = serve(fake, body)
    done = imagebuild("pull", str(source), "--store", tmp_path / "store")
    assert_one_line_error(done, str(source), code=5)
    assert not (tmp_path / "store").exists()


def test_the_cli_refuses_a_redirect_loop_with_exit_5(fake, tmp_path):
    source = serve(fake, Answer(redirect_loop=True))
    done = imagebuild("pull", str(source), "--store", tmp_path / "store")
    assert_one_line_error(done, str(source), "redirect", code=5)


def test_the_cli_refuses_a_lying_layer_size_with_exit_5(fake, tmp_path):
    parts = valid_image()
    _size_too_large(parts.manifest)
    source = serve(fake, parts.manifest_bytes(), parts, reference=f"{TAG}-big")
    done = imagebuild("pull", str(source), "--store", tmp_path / "store")
    assert_one_line_error(done, str(source), "size", code=5)
    assert not (LayoutStore(tmp_path / "store").root / "index.json").exists() or \
        not LayoutStore(tmp_path / "store").refs()




@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"tags": "v1"}', b'{"tags": [1, 2]}'])
def test_a_tag_list_that_is_no_tag_list_is_exit_5(fake, body):
    from imagebuild.registry.client import RegistryClient

    fake.answers["/v2/acme/hello/tags/list"] = Answer(body, content_type="application/json")
    with RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    assert caught.value.exit_code == 5 and fake.address in caught.value.one_line(), caught.value.one_line()


def test_a_garbled_digest_header_is_exit_5(fake):
    from imagebuild.registry.client import RegistryClient

    fake.manifest("acme/hello", "v1", Answer(b"{}", headers={"Docker-Content-Digest": "md5:abc"}))
    with RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.head_manifest("acme/hello", "v1")
    assert caught.value.exit_code == 5 and "md5:abc" in caught.value.one_line(), caught.value.one_line()


@pytest.mark.parametrize("body", [b'{"errors": "x"}', b'{"errors": [5]}', b"[" * 100_000, b'{"errors": {"0": 1}}'])
def test_an_error_body_that_says_nothing_usable_leaves_the_status(fake, tmp_path, body):
    source = serve(fake, Answer(body, status=400, content_type="application/json"))
    store = LayoutStore(tmp_path / "store")
    error = pull_error(store, source)
    assert error.exit_code == 5 and "HTTP 400" in error.one_line() and str(source) in error.one_line()


ERROR_START = b'{"errors": [{"code": "DENIED", "message": "' + b"x" * 1000


def _endless_error_sent(fake) -> int:
    assert fake.endless_done.wait(30), "the fake registry is still sending the endless error body"
    return fake.endless_bytes_sent


def test_an_endless_error_body_is_read_only_to_its_bound(fake, tmp_path):
    """The manifest's error answer never ends: the pull stops reading it past 64 KiB (what the loopback
    socket buffers hold besides is a few MiB, far below the fake's 64 MiB) and exits 5 on the status."""
    source = serve(fake, Answer(ERROR_START, status=400, content_type="application/json", endless=True))
    done = imagebuild("pull", str(source), "--store", tmp_path / "store")
    assert_one_line_error(done, str(source), "HTTP 400", code=5)
    assert _endless_error_sent(fake) < 16 * 1024 * 1024


def test_an_endless_error_body_of_an_unstreamed_request_is_read_only_to_its_bound(fake):
    from imagebuild.registry.client import RegistryClient

    fake.answers["/v2/acme/hello/tags/list"] = Answer(ERROR_START, status=400, content_type="application/json",
                                                      endless=True)
    with RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    line = caught.value.one_line()
    assert caught.value.exit_code == 5 and "acme/hello" in line and "HTTP 400" in line, line
    assert _endless_error_sent(fake) < 16 * 1024 * 1024


def test_tag_pages_are_followed_on_this_registry_only(fake):
    from imagebuild.registry.client import RegistryClient

    path = "/v2/acme/hello/tags/list"
    fake.answers[path] = Answer(b'{"tags": ["a"]}', content_type="application/json",
                                headers={"Link": f'<{path}?n=1&last=a>; rel="next"'})
    fake.answers[path + "?n=1&last=a"] = Answer(b'{"tags": ["b"]}', content_type="application/json")
    with RegistryClient(fake.address, backoff=0.001) as client:
        assert client.list_tags("acme/hello") == ["a", "b"]
    # a next page elsewhere would be sent this registry's credentials: refused
    fake.answers[path + "?n=1&last=a"].headers["Link"] = '<https://elsewhere.example/v2/x/tags/list>; rel="next"'
    with RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    assert caught.value.exit_code == 5 and "elsewhere.example" in caught.value.one_line(), caught.value.one_line()


def _bearer_challenge(fake) -> Answer:
    """A 401 that sends the client for a token to the fake's own `/token`."""
    return Answer(b"", status=401, headers={"WWW-Authenticate": f'Bearer realm="http://{fake.address}/token",'
                                                                'service="fake"'})


def test_an_endless_token_answer_is_read_only_to_its_bound(fake, tmp_path):
    """The token server's answer never ends: the pull stops reading it past 64 KiB and exits 5 in one
    line naming the registry and the token answer."""
    fake.manifest(REPOSITORY, TAG, _bearer_challenge(fake))
    fake.answers["/token"] = Answer(b'{"token": "', content_type="application/json", endless=True)
    source = f"{fake.address}/{REPOSITORY}:{TAG}"
    done = imagebuild("pull", source, "--store", tmp_path / "store")
    assert_one_line_error(done, fake.address, "token answer larger than 64 KiB", code=5)
    assert _endless_error_sent(fake) < 16 * 1024 * 1024


def test_an_endless_tag_list_page_is_read_only_to_its_bound(fake):
    from imagebuild.registry.client import RegistryClient

    fake.answers["/v2/acme/hello/tags/list"] = Answer(b'{"tags": ["', content_type="application/json",
                                                      endless=True)
    with RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    line = caught.value.one_line()
    assert caught.value.exit_code == 5 and "\n" not in line, line
    assert fake.address in line and "/v2/acme/hello/tags/list larger than 4 MiB" in line, line
    assert _endless_error_sent(fake) < 16 * 1024 * 1024


def _tag_pages(fake, count: int) -> None:
    """`count` pages of one tag each, each naming the next."""
    path = "/v2/acme/hello/tags/list"
    for number in range(count):
        link = {"Link": f'<{path}?page={number + 1}>; rel="next"'} if number + 1 < count else {}
        fake.answers[path + (f"?page={number}" if number else "")] = Answer(
            json.dumps({"tags": [f"t{number}"]}).encode(), content_type="application/json", headers=link)


@pytest.mark.parametrize("bound, words", [("MAX_TAG_LIST_BYTES", "in all"), ("MAX_TAG_PAGES", "in more than 2 pages")])
def test_tag_pages_are_bounded_together(fake, monkeypatch, bound, words):
    from imagebuild.registry import client as client_module

    _tag_pages(fake, 3)
    with client_module.RegistryClient(fake.address, backoff=0.001) as client:
        assert client.list_tags("acme/hello") == ["t0", "t1", "t2"]
    monkeypatch.setattr(client_module, bound, 40 if bound == "MAX_TAG_LIST_BYTES" else 2)
    with client_module.RegistryClient(fake.address, backoff=0.001) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    line = caught.value.one_line()
    assert caught.value.exit_code == 5 and fake.address in line and words in line, line


@pytest.mark.parametrize("stalled", ["/token", "/v2/acme/hello/tags/list?page=1"])
def test_a_stalled_body_read_whole_ends_at_the_read_timeout(fake, stalled):
    """Headers, then nothing: a token answer or a tag-list page that stalls ends at the read timeout
    (1 s here, per attempt), exit 5, instead of holding the command."""
    import time

    from imagebuild.registry.client import RegistryClient

    _tag_pages(fake, 2)
    if stalled == "/token":
        fake.answers["/v2/acme/hello/tags/list"] = _bearer_challenge(fake)
    fake.answers[stalled] = Answer(b'{"t', content_type="application/json", stall=True)
    started = time.monotonic()
    with RegistryClient(fake.address, backoff=0.001, attempts=2, timeout=1.0) as client:
        with pytest.raises(ImageBuildError) as caught:
            client.list_tags("acme/hello")
    assert time.monotonic() - started < 15
    line = caught.value.one_line()
    assert caught.value.exit_code == 5 and fake.address in line and "\n" not in line, line
