"""Property: whatever a registry answers to a pull, imagebuild ends with a clear error or a sound image.

A loopback fake registry serves generated answers: manifests, indexes and configs with wrong types,
missing fields, huge, negative or wrong sizes, wrong digests, deep nesting, non-JSON bodies, wrong
content types, redirect loops and truncated bodies. A pull then either succeeds with every blob whole,
or fails with exit 5 (8 when unreachable; 2 only for the documented refusals: an artifact, an index
without the platform) in one line naming the registry and the reference, leaving no tag behind.
Never exit 1, and always quickly.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest

from imagebuild.errors import ImageBuildError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import RegistryClient
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.registry import pull_image
from tests.conftest import imagebuild
from tests.registry_support.answers import REPOSITORY, ImageParts, sha, store_state, valid_image
from tests.registry_support.fake_registry import Answer, FakeRegistry

# Refusals that are the user's to act on, with exit 2, and are documented as such.
DOCUMENTED_REFUSALS = ("is not a container image", "has no image for")

FUZZ = settings(max_examples=100, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fake():
    with FakeRegistry() as running:
        yield running


@pytest.fixture(scope="module")
def client(fake):
    """One client for all examples: making one costs 0.1 s (it loads the system's CA certificates)."""
    with RegistryClient(fake.address, backoff=0.001) as running:
        yield running


# -- strategies -------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                         st.just("sha256:" + "0" * 64), st.just("sha256:XYZ"))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)

MANIFEST_PATHS = [("config",), ("layers",), ("layers", 0), ("config", "digest"), ("config", "size"),
                  ("config", "mediaType"), ("layers", 0, "digest"), ("layers", 0, "size"),
                  ("layers", 0, "mediaType"), ("layers", 0, "annotations"), ("layers", 0, "platform"),
                  ("annotations",), ("mediaType",), ("schemaVersion",)]
CONFIG_PATHS = [("rootfs",), ("rootfs", "diff_ids"), ("rootfs", "diff_ids", 0), ("config",), ("history",)]
INDEX_PATHS = [("manifests",), ("manifests", 0), ("manifests", 0, "digest"), ("manifests", 0, "size"),
               ("manifests", 0, "platform"), ("manifests", 0, "platform", "architecture"),
               ("manifests", 0, "mediaType"), ("annotations",)]
CONTENT_TYPES = [mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_INDEX, "application/json", "text/html", ""]


def _set(document, path: tuple, value, delete: bool):
    """`document` with the value at `path` replaced (or deleted); a path that no longer exists is left alone."""
    document = copy.deepcopy(document)
    parent = document
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return document
    try:
        if delete:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass
    return document


def edits(paths: list[tuple]):
    """Up to three replacements or deletions at the given paths, sizes drawn to be near-miss as well as wild."""
    sizes = st.one_of(st.integers(min_value=-10, max_value=10_000), st.sampled_from([-5, 2 ** 40, 2 ** 63, 2 ** 70]),
                      st.text(max_size=4).map(lambda t: t or "12"))
    value = st.one_of(json_values, sizes)
    return st.lists(st.tuples(st.sampled_from(paths), value, st.booleans()), min_size=1, max_size=3)


def apply(document, changes):
    for path, value, delete in changes:
        document = _set(document, path, value, delete)
    return document


def nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


whole_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.builds(nested, st.integers(min_value=500, max_value=100_000), st.sampled_from(["[", '{"a":'])),
)

blob_faults = st.sampled_from(["none", "none", "none", "altered", "truncated", "extra", "missing",
                               "redirect-loop", "wrong-type"])


# -- serving and checking -----------------------------------------------------------------------

def _blob_answer(data: bytes, fault: str) -> Answer | None:
    return {
        "none": Answer(data),
        "altered": Answer(bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"),
        "truncated": Answer(data, truncate=True),
        "extra": Answer(data + b"trailing bytes"),
        "missing": None,
        "redirect-loop": Answer(redirect_loop=True),
        "wrong-type": Answer(data, content_type="text/html"),
    }[fault]


def serve_case(fake: FakeRegistry, tag: str, top: Answer, parts: ImageParts, config_fault: str,
               layer_fault: str, extra_manifests: dict[str, Answer] | None = None) -> Reference:
    fake.reset()
    fake.manifest(REPOSITORY, tag, top)
    for digest, answer in (extra_manifests or {}).items():
        fake.manifest(REPOSITORY, digest, answer)
    for data, fault in ((parts.config, config_fault), (parts.layer, layer_fault)):
        answer = _blob_answer(data, fault)
        if answer is not None:
            fake.blob(REPOSITORY, sha(data), answer)
    return Reference.parse(f"{fake.address}/{REPOSITORY}:{tag}")


def check_pull(client: RegistryClient, source: Reference) -> None:
    """The property, for one pull into a fresh store."""
    with tempfile.TemporaryDirectory() as scratch:
        store = LayoutStore(Path(scratch) / "store")
        try:
            pull_image(store, source, client=client)
        except ImageBuildError as exc:
            line = exc.one_line()
            assert exc.exit_code != 1, line
            assert "\n" not in line
            if exc.exit_code == 2:
                assert any(words in line for words in DOCUMENTED_REFUSALS), line
            else:
                assert exc.exit_code in (5, 8), line
                assert str(source) in line and source.registry in line, line
            assert store_state(store)[0] == {}, "a refused pull left a tag"
            return
        # It pulled: then every blob it names is in the store whole, at the size its manifest says.
        tags, _ = store_state(store)
        assert list(tags) == [str(source)]
        manifest = store.read_manifest(tags[str(source)])
        for blob in manifest.blobs():
            assert store.blob_size(blob.digest) == blob.size
            store.verify_blob(blob.digest)


# -- the properties ----------------------------------------------------------------------------

@FUZZ
@given(changes=edits(MANIFEST_PATHS), content_type=st.sampled_from(CONTENT_TYPES),
       config_fault=blob_faults, layer_fault=blob_faults)
def test_pulling_a_mangled_manifest(fake, client, changes, content_type, config_fault, layer_fault):
    parts = valid_image()
    body = json.dumps(apply(parts.manifest, changes)).encode()
    check_pull(client, serve_case(fake, "manifest", Answer(body, content_type=content_type), parts,
                          config_fault, layer_fault))


@FUZZ
@given(changes=edits(CONFIG_PATHS), layer_fault=blob_faults)
def test_pulling_an_image_with_a_mangled_config(fake, client, changes, layer_fault):
    parts = valid_image()
    parts.config = json.dumps(apply(json.loads(parts.config), changes)).encode()
    parts.manifest["config"].update(digest=sha(parts.config), size=len(parts.config))
    check_pull(client, serve_case(fake, "config", Answer(parts.manifest_bytes(), content_type=mt.OCI_MANIFEST), parts,
                          "none", layer_fault))


@FUZZ
@given(changes=edits(INDEX_PATHS), child_changes=st.one_of(st.just([]), edits(MANIFEST_PATHS)),
       content_type=st.sampled_from([mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, "application/json"]))
def test_pulling_a_mangled_index(fake, client, changes, child_changes, content_type):
    parts = valid_image()
    child = json.dumps(apply(parts.manifest, child_changes)).encode()
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
             "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": sha(child), "size": len(child),
                            "platform": {"os": "linux", "architecture": "amd64"}}]}
    body = json.dumps(apply(index, changes)).encode()
    check_pull(client, serve_case(fake, "index", Answer(body, content_type=content_type), parts, "none", "none",
                          {sha(child): Answer(child, content_type=mt.OCI_MANIFEST)}))


@FUZZ
@given(body=whole_bodies, content_type=st.sampled_from(CONTENT_TYPES),
       how=st.sampled_from(["plain", "truncated", "redirect-loop"]))
def test_pulling_a_body_that_is_no_manifest(fake, client, body, content_type, how):
    if how == "truncated":  # a sound manifest cut in half on the wire
        body = valid_image().manifest_bytes()
    answer = Answer(body, content_type=content_type, truncate=how == "truncated",
                    redirect_loop=how == "redirect-loop")
    check_pull(client, serve_case(fake, "body", answer, valid_image(), "none", "none"))


def test_an_unreachable_registry_is_exit_8_naming_the_reference(tmp_path):
    from tests.registry_support.images import free_port

    source = Reference.parse(f"127.0.0.1:{free_port()}/{REPOSITORY}:v1")
    with RegistryClient(source.registry, backoff=0.001, attempts=2) as client:
        with pytest.raises(ImageBuildError) as caught:
            pull_image(LayoutStore(tmp_path / "store"), source, client=client)
    assert caught.value.exit_code == 8 and str(source) in caught.value.one_line()


# -- a few through the real command line ------------------------------------------------------

@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=edits(MANIFEST_PATHS[:10]), body=whole_bodies, use_body=st.booleans())
def test_the_cli_pull_of_a_mangled_manifest_is_never_exit_1(fake, changes, body, use_body):
    parts = valid_image()
    if not use_body:
        body = json.dumps(apply(parts.manifest, changes)).encode()
    # Only the manifest is mangled: the CLI's own retry back-off for blobs would make this slow.
    source = serve_case(fake, "cli", Answer(body, content_type=mt.OCI_MANIFEST), parts, "none", "none")
    with tempfile.TemporaryDirectory() as scratch:
        done = imagebuild("pull", str(source), "--store", Path(scratch) / "store")
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("fetched ")]
        assert done.returncode in (0, 2, 5), done.stderr
        if done.returncode:
            assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
            assert done.returncode == 2 and any(w in lines[0] for w in DOCUMENTED_REFUSALS) or \
                str(source) in lines[0], done.stderr
