"""The SBOM documents, built from an image's contents without I/O, checked by the formats' own
validators; the layers' dpkg status read through whiteouts; the referrers tag in the store (gc, images)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import tarfile

import pytest

from imagebuild.evidence.contents import (DPKG_STATUS, DebianPackage, Distro, ImageContents, PythonDistribution,
                                          base_packages, layer_facts, packages_of_lock, parse_dpkg_packages,
                                          python_distributions, read_layer_facts, stacked_files)
from imagebuild.evidence.sbom import cyclonedx_document, spdx_document
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.canonical import canonical_json
from imagebuild.oci.model import Descriptor
from imagebuild.sources.lockfile import DebianLock, PythonLock, PythonPackage, dumps, parse_lock
from imagebuild.sources.os_tree import package_details
from imagebuild.stores.attachments import attach, attachments
from imagebuild.stores.gc import collect_garbage, remove_refs
from imagebuild.stores.layout import DPKG_FACTS_DIR, LayoutStore
from imagebuild.stores.place import LayoutPlace, manifest_of, put_bytes, referrers_tag
from tests.conftest import imagebuild

STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u13
Description: GNU C Library
 continued line: not a field

Package: libstdc++6
Status: install ok installed
Architecture: amd64
Source: gcc-12 (12.2.0-14+deb12u1)
Version: 12.2.0-14+deb12u1

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u13

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""

CONTENTS = ImageContents(
    name="hello", version="abc1234", digest="sha256:" + "ab" * 32, created="2025-06-15T15:06:40Z",
    revision="f" * 40, repository="https://git.example.com/acme/hello.git", architecture="amd64",
    distro=Distro("debian", "12", "bookworm"), debian=tuple(parse_dpkg_packages(STATUS)),
    python=(PythonDistribution("flask", "3.1.3", "f4" * 32, "usr/local/lib/python3.11/dist-packages"),
            PythonDistribution("gunicorn", "23.0.0", "ec" * 32, "usr/local/lib/imagebuild/server-packages"),
            PythonDistribution("packaging", "26.4", "", "usr/local/lib/imagebuild/server-packages"),
            PythonDistribution("packaging", "26.4", "81" * 32, "usr/local/lib/python3.11/dist-packages")))


def test_installed_packages_are_read_with_their_architecture_and_source():
    assert parse_dpkg_packages(STATUS) == [
        DebianPackage("base-files", "12.4+deb12u13", "amd64", "base-files", "12.4+deb12u13"),
        DebianPackage("libc6", "2.36-9+deb12u13", "amd64", "glibc", "2.36-9+deb12u13"),
        DebianPackage("libstdc++6", "12.2.0-14+deb12u1", "amd64", "gcc-12", "12.2.0-14+deb12u1"),
    ]


def test_the_lock_keeps_what_dpkg_records_and_gives_the_same_packages():
    lock = DebianLock(inputs={}, source_date_epoch=1, os={"libc6": "2.36-9+deb12u13", "base-files": "12.4+deb12u13"},
                      runtime={"libstdc++6": "12.2.0-14+deb12u1"}, packages=package_details(STATUS),
                      os_release={"ID": "debian", "VERSION_ID": "12"})
    again = parse_lock(dumps(lock), "imagebuild.lock")
    assert again == lock
    assert again.packages["libstdc++6"] == {"architecture": "amd64", "source": "gcc-12 (12.2.0-14+deb12u1)"}
    assert packages_of_lock(again, with_runtime=True) == parse_dpkg_packages(STATUS)
    assert [p.name for p in packages_of_lock(again, with_runtime=False)] == ["base-files", "libc6"]
    older = DebianLock(inputs={}, source_date_epoch=1, os=dict(lock.os))
    assert "packages" not in dumps(older) and "osRelease" not in dumps(older)     # read by older imagebuilds as ever
    assert packages_of_lock(older, with_runtime=False) is None


def test_python_distributions_are_the_closure_and_the_pinned_server_packages():
    closure = PythonLock({}, (PythonPackage("flask", "3.1.3", "flask.whl", "f4" * 32),))
    found = python_distributions(closure, "site", ["gunicorn==23.0.0 --hash=sha256:" + "EC" * 32, "packaging==26.4",
                                                   "unpinned>=1"], "server")
    assert found == [PythonDistribution("flask", "3.1.3", "f4" * 32, "site"),
                     PythonDistribution("gunicorn", "23.0.0", "ec" * 32, "server"),
                     PythonDistribution("packaging", "26.4", "", "server")]
    assert python_distributions(None, "", [], "server") == []


def spdx_problems(document: bytes) -> list[str]:
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    parsed = JsonLikeDictParser().parse(json.loads(document))
    return [message.validation_message for message in validate_full_spdx_document(parsed, "SPDX-2.3")]


def cyclonedx_problem(document: bytes):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())


def test_the_spdx_document_is_valid_and_names_everything():
    document = spdx_document(CONTENTS)
    assert spdx_problems(document) == []
    data = json.loads(document)
    packages = {p["SPDXID"]: p for p in data["packages"]}
    assert len(packages) == len(data["packages"]) == 2 + 3 + 4     # image, app, Debian, Python
    libc = next(p for p in data["packages"] if p["name"] == "libc6")
    assert libc["versionInfo"] == "2.36-9+deb12u13"
    assert "glibc 2.36-9+deb12u13" in libc["sourceInfo"]
    assert libc["externalRefs"][0]["referenceLocator"] == \
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u13?arch=amd64&distro=debian-12&upstream=glibc"
    app = packages["SPDXRef-App"]
    assert app["downloadLocation"] == f"git+https://git.example.com/acme/hello.git@{'f' * 40}"
    assert data["creationInfo"]["created"] == "2025-06-15T15:06:40Z"
    image = packages["SPDXRef-Image"]
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": "ab" * 32}]
    contained = {r["relatedSpdxElement"] for r in data["relationships"] if r["relationshipType"] == "CONTAINS"}
    assert contained == set(packages) - {"SPDXRef-Image", "SPDXRef-App"}


def test_the_cyclonedx_document_is_valid_and_names_everything():
    document = cyclonedx_document(CONTENTS)
    assert cyclonedx_problem(document) is None
    data = json.loads(document)
    assert data["specVersion"] == "1.6" and data["metadata"]["timestamp"] == "2025-06-15T15:06:40Z"
    assert data["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    names = sorted((c["name"], c["version"]) for c in data["components"] if c["type"] == "library")
    assert names == sorted([(p.name, p.version) for p in CONTENTS.debian]
                           + [(d.name, d.version) for d in CONTENTS.python])
    refs = [c["bom-ref"] for c in data["components"]]
    assert len(refs) == len(set(refs))
    app = next(c for c in data["components"] if c["bom-ref"] == "app")
    assert app["externalReferences"] == [{"type": "vcs", "url": "https://git.example.com/acme/hello.git"}]


def test_a_document_fails_its_validator_when_broken():
    # the validators above can fail: a package without its required downloadLocation, a component without a name
    spdx = json.loads(spdx_document(CONTENTS))
    del spdx["packages"][2]["downloadLocation"]
    with pytest.raises(Exception):
        assert spdx_problems(json.dumps(spdx).encode()) == []
    cyclonedx = json.loads(cyclonedx_document(CONTENTS))
    del cyclonedx["components"][0]["name"]
    assert cyclonedx_problem(json.dumps(cyclonedx).encode()) is not None


def test_the_documents_are_the_same_bytes_whatever_order_the_contents_come_in():
    shuffled = dataclasses.replace(CONTENTS, debian=tuple(reversed(CONTENTS.debian)),
                                   python=tuple(reversed(CONTENTS.python)))
    assert spdx_document(shuffled) == spdx_document(CONTENTS)
    assert cyclonedx_document(shuffled) == cyclonedx_document(CONTENTS)
    other = dataclasses.replace(CONTENTS, digest="sha256:" + "cd" * 32)
    for build, key in ((spdx_document, "documentNamespace"), (cyclonedx_document, "serialNumber")):
        assert json.loads(build(other))[key] != json.loads(build(CONTENTS))[key]     # unique per image


def test_a_local_path_or_no_remote_is_no_download_location():
    for repository in (None, "/srv/git/hello", "git.example.com:acme/hello.git", "http://127.0.0.1:8080/hello.git"):
        document = spdx_document(dataclasses.replace(CONTENTS, repository=repository, distro=None))
        assert spdx_problems(document) == []
        assert cyclonedx_problem(cyclonedx_document(dataclasses.replace(CONTENTS, repository=repository))) is None
        app = next(p for p in json.loads(document)["packages"] if p["SPDXID"] == "SPDXRef-App")
        assert app["downloadLocation"] == "NOASSERTION"


# -- the layers ---------------------------------------------------------------------------------------

def layer(files: dict[str, str | None], compress: bool = True) -> bytes:
    """A layer tar: path → text, or None for an empty marker file (a whiteout)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, text in files.items():
            data = (text or "").encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0) if compress else buffer.getvalue()


def facts_of(files, compress=True):
    return read_layer_facts(io.BytesIO(layer(files, compress)), mt.OCI_LAYER_GZIP if compress else mt.OCI_LAYER)


def test_the_topmost_status_counts_and_whiteouts_remove_it():
    os_layer = facts_of({"./etc/hostname": "x", "./var/lib/dpkg/status": STATUS,
                         "usr/lib/os-release": 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'})
    runtime = facts_of({"var/lib/dpkg/status": STATUS.split("\n\n")[0] + "\n"}, compress=False)
    packages, distro = base_packages(stacked_files([os_layer, runtime]))
    assert [p.name for p in packages] == ["libc6"]
    assert distro == Distro("debian", "12", "bookworm")
    removed = facts_of({"var/lib/dpkg/.wh.status": None})
    assert DPKG_STATUS not in stacked_files([os_layer, removed])
    opaque = facts_of({"var/lib/dpkg/.wh..wh..opq": None})
    assert DPKG_STATUS not in stacked_files([os_layer, opaque])
    gone_dir = facts_of({"var/lib/.wh.dpkg": None, "etc/os-release": "ID=alpine\n"})
    packages, distro = base_packages(stacked_files([os_layer, gone_dir]))
    assert packages == [] and distro == Distro("alpine", "", "")


def test_a_layer_is_read_once_then_its_facts_are_kept(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    blob = layer({"var/lib/dpkg/status": STATUS})
    digest = store.put_blob(blob)
    descriptor = Descriptor(mt.OCI_LAYER_GZIP, digest, len(blob))
    first = layer_facts(store, descriptor)
    store.blob_path(str(digest)).unlink()     # gone from the store (a layer the registry's cache lent)
    assert layer_facts(store, descriptor) == first
    fetched = []
    (store.root / DPKG_FACTS_DIR / f"{digest.hex}.json").unlink()
    with pytest.raises(Exception, match="not in the store"):
        layer_facts(store, descriptor, fetch=fetched.append)
    assert fetched == [descriptor]


# -- the referrers tag in the store --------------------------------------------------------------------

def small_image(place, tag):
    config = put_bytes(place, canonical_json({"architecture": "amd64", "os": "linux", "tag": tag}), mt.OCI_CONFIG)
    blob = put_bytes(place, b"layer bytes " + tag.encode(), mt.OCI_LAYER_GZIP)
    manifest = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                           "config": config.to_dict(), "layers": [blob.to_dict()]}))
    place.put_manifest(manifest, [tag])
    return manifest


def test_gc_keeps_the_sbom_of_a_kept_image_and_drops_it_with_the_image(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    place = LayoutPlace(store, "hello")
    kept, removed = small_image(place, "v1"), small_image(place, "v2")
    for image in (kept, removed):
        attach(place, image, mt.SPDX_JSON, b'{"image": "%s"}' % image.digest.encode(), mt.SPDX_JSON)
    collect_garbage(store)
    assert len(attachments(place, kept.digest, mt.SPDX_JSON)) == 1
    assert len(attachments(place, removed.digest, mt.SPDX_JSON)) == 1

    remove_refs(store, ["hello:v2"])
    result = collect_garbage(store)
    assert f"hello:{referrers_tag(removed.digest)}" not in store.refs()     # its attachments' index went with it
    assert not store.has_blob(removed.digest)         # and the attachment no longer keeps the image
    assert str(removed.digest) in {str(d) for d in result.removed_blobs}
    (sbom,) = attachments(place, kept.digest, mt.SPDX_JSON)
    assert sbom.payload == b'{"image": "%s"}' % kept.digest.encode()
    assert collect_garbage(store).missing_blobs == []


def test_images_lists_no_referrers_tag_unless_asked(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    place = LayoutPlace(store, "hello")
    image = small_image(place, "v1")
    attach(place, image, mt.SPDX_JSON, b"{}", mt.SPDX_JSON)
    listed = imagebuild("images", "--store", store.root, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["image"] for row in json.loads(listed.stdout)["images"]] == ["hello:v1"]
    every = json.loads(imagebuild("images", "--store", store.root, "--json", "--all").stdout)["images"]
    assert {row["image"]: row["kind"] for row in every}[f"hello:{referrers_tag(image.digest)}"] == "referrers"


def test_sbom_of_an_image_without_one_is_one_line_and_exit_2(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    small_image(LayoutPlace(store, "hello"), "v1")
    for argv, message in [
        (["hello:v1"], "error: hello:v1 has no SPDX SBOM attached ("),
        (["hello:v1", "--format", "cyclonedx"], "error: hello:v1 has no CycloneDX SBOM attached ("),
        (["hello:v1", "--format", "swid"], "error: --format 'swid' is not one of spdx, cyclonedx ("),
        (["hello:v9"], "error: no image 'hello:v9' in the local store at "),
    ]:
        done = imagebuild("sbom", *argv, "--store", store.root)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    failed = imagebuild("sbom", "hello:v1", "--store", store.root, "--json")
    assert failed.returncode == 2 and json.loads(failed.stdout)["error"]["exit_code"] == 2


# -- `imagebuild sbom` of a multi-platform index: one platform's, named by --platform ------------------------

@pytest.fixture
def index_store(tmp_path):
    """hello:v1 in a store: an index of linux/amd64 and linux/arm64, each image with its own SPDX SBOM, and
    both SBOMs attached to the index too, as a bake of several platforms attaches them."""
    from tests.evidence_support import small_image

    store = LayoutStore(tmp_path / "store").ensure()
    place = LayoutPlace(store, "hello")
    children = []
    for architecture in ("amd64", "arm64"):
        image = small_image(place, architecture.encode(), tag=f"v1-{architecture}")
        children.append((architecture, image))
    index = manifest_of(canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": image.digest, "size": len(image.raw),
         "platform": {"os": "linux", "architecture": architecture}} for architecture, image in children]}))
    place.put_manifest(index, ["v1"])
    for architecture, image in children:
        document = json.dumps({"spdxVersion": "SPDX-2.3", "name": architecture}).encode()
        for subject in (image, index):
            attach(place, subject, mt.SPDX_JSON, document, mt.SPDX_JSON)
    return tmp_path / "store"


def test_the_sbom_of_an_index_is_one_platforms_named_by_platform(index_store):
    for architecture in ("amd64", "arm64"):
        done = imagebuild("sbom", "hello:v1", "--platform", f"linux/{architecture}", "--store", index_store)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["name"] == architecture
    alone = imagebuild("sbom", "hello:v1-arm64", "--platform", "linux/amd64", "--store", index_store)
    assert json.loads(alone.stdout)["name"] == "arm64"    # one image: its own, as pull --platform takes it


@pytest.mark.parametrize("args, words", [
    ((), "hello:v1 is an index of several platforms (linux/amd64, linux/arm64), each with its own SBOM "
         "(name one with --platform OS/ARCH)"),
    (("--platform", "linux/s390x"), "hello:v1 has no image for linux/s390x (it offers linux/amd64, linux/arm64)"),
    (("--platform", "linux"), "'linux' is not a platform"),
])
def test_the_sbom_of_an_index_without_a_platform_it_offers_is_refused_naming_them(index_store, args, words):
    done = imagebuild("sbom", "hello:v1", *args, "--store", index_store)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
