"""Images written by imagebuild, judged by other tools: oci-image-tool, umoci, skopeo, docker."""

from __future__ import annotations

import hashlib
import json
import tarfile
import shutil
import uuid

import pytest

from tests.conftest import imagebuild, run
from tests.oci_support import HELLO, HELLO_ENTRYPOINT, make_busybox_rootfs


def _export(tmp_path_factory, compression):
    """A busybox image made by `imagebuild image from-dir`, exported as an OCI layout and a docker-archive."""
    work = tmp_path_factory.mktemp(f"export-{compression}")
    rootfs = make_busybox_rootfs(work / "rootfs")
    store = work / "store"
    name = f"ib-test-{uuid.uuid4().hex[:12]}"
    made = imagebuild("image", "from-dir", rootfs, f"{name}:v1", "--entrypoint", json.dumps(HELLO_ENTRYPOINT),
                      "--compression", compression, "--store", store, "--json",
                      env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert made.returncode == 0, made.stderr
    digest = json.loads(made.stdout)["digest"]
    layout = work / "oci"
    archive = work / "image.tar"
    for destination in (f"oci:{layout}", f"docker-archive:{archive}"):
        done = imagebuild("export", f"{name}:v1", destination, "--store", store)
        assert done.returncode == 0, done.stderr
    return {"compression": compression, "name": name, "digest": digest, "layout": layout,
            "archive": archive, "work": work}


@pytest.fixture(scope="session")
def gzip_export(tmp_path_factory):
    return _export(tmp_path_factory, "gzip")


@pytest.fixture(scope="session")
def zstd_export(tmp_path_factory):
    return _export(tmp_path_factory, "zstd")


# oci-image-tool 1.0.0 and umoci 0.4.7 (Debian's) predate zstd layers and refuse the media type,
# so they judge the gzip image; skopeo and docker judge both.
@pytest.fixture(params=["gzip", "zstd"])
def exported(request):
    return request.getfixturevalue(f"{request.param}_export")


def test_oci_image_tool_validates_the_layout(gzip_export):
    exported = gzip_export
    for extra in ([], ["--ref", "name=v1"]):
        result = run(["oci-image-tool", "validate", "--type", "image", *extra, str(exported["layout"])])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Validation succeeded" in result.stdout + result.stderr


def test_skopeo_reads_the_layout(exported):
    result = run(["skopeo", "inspect", f"oci:{exported['layout']}:v1"])
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == exported["digest"]
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Created"] == "2023-11-14T22:13:20Z"
    raw = run(["skopeo", "inspect", "--raw", f"oci:{exported['layout']}:v1"])
    media = json.loads(raw.stdout)["layers"][0]["mediaType"]
    assert media.endswith("+gzip" if exported["compression"] == "gzip" else "+zstd")


def test_umoci_unpacks_the_layout(gzip_export):
    exported = gzip_export
    bundle = exported["work"] / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    result = run(["umoci", "unpack", "--image", f"{exported['layout']}:v1", str(bundle)])
    assert result.returncode == 0, result.stdout + result.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == open("/bin/busybox", "rb").read()
    assert (rootfs / "bin" / "busybox").stat().st_mode & 0o777 == 0o755
    assert (rootfs / "bin" / "sh").is_symlink() and (rootfs / "bin" / "sh").readlink().as_posix() == "busybox"
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == HELLO_ENTRYPOINT


@pytest.mark.integration
def test_docker_loads_and_runs_the_archive(exported, docker_client):
    tag = f"{exported['name']}:v1"
    try:
        loaded = run(["docker", "load", "-i", str(exported["archive"])])
        assert loaded.returncode == 0, loaded.stderr
        assert tag in loaded.stdout
        ran = run(["docker", "run", "--rm", tag])
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == HELLO
        shell = run(["docker", "run", "--rm", "--entrypoint", "/bin/sh", tag, "-c", "ls /bin | wc -l"])
        assert shell.returncode == 0, shell.stderr
        assert int(shell.stdout.strip()) >= 6
    finally:
        run(["docker", "rmi", "-f", tag])


def test_export_by_digest_keeps_the_images_tag(exported):
    store = exported["work"] / "store"
    archive = exported["work"] / "by-digest.tar"
    done = imagebuild("export", exported["digest"], f"docker-archive:{archive}", "--store", store)
    assert done.returncode == 0, done.stderr
    with tarfile.open(archive) as tar:
        doc = json.loads(tar.extractfile("manifest.json").read())
        config = json.loads(tar.extractfile(doc[0]["Config"]).read())
        layer_name = doc[0]["Layers"][0]
        layer = tar.extractfile(layer_name).read()
    assert doc[0]["RepoTags"] == [f"{exported['name']}:v1"]
    # gzip layers go in as stored; zstd ones as the plain tar named by its diff_id.
    diff_id = config["rootfs"]["diff_ids"][0]
    if exported["compression"] == "zstd":
        assert layer_name == f"blobs/sha256/{diff_id.split(':')[1]}"
        assert "sha256:" + hashlib.sha256(layer).hexdigest() == diff_id
    else:
        assert layer[:2] == b"\x1f\x8b"
    assert archive.read_bytes() == exported["archive"].read_bytes()
