"""Bad input through the real CLI: one `error:` line, the right exit code, nothing half-written."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import imagebuild
from tests.oci_support import HELLO_ENTRYPOINT, make_busybox_rootfs


def assert_one_line_error(result, *words, code=2):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def built(tmp_path):
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    store = tmp_path / "store"
    made = imagebuild("image", "from-dir", rootfs, "app:v1", "--entrypoint", json.dumps(HELLO_ENTRYPOINT),
                      "--store", store, "--json")
    assert made.returncode == 0, made.stderr
    return {"store": store, "rootfs": rootfs, "digest": json.loads(made.stdout)["digest"]}


@contextlib.contextmanager
def read_only_view(source, mountpoint):
    """A real read-only mount of `source` (root ignores file modes, not a read-only mount)."""
    mountpoint.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_missing_directory(tmp_path):
    store = tmp_path / "store"
    result = imagebuild("image", "from-dir", tmp_path / "nope", "app:v1", "--store", store)
    assert_one_line_error(result, "directory not found", str(tmp_path / "nope"))
    assert not store.exists()


def test_path_traversal_entry_is_refused_and_leaves_nothing(built):
    before = all_files(built["store"])
    result = imagebuild("image", "from-dir", built["rootfs"], "app:v2", "--prefix", "../outside",
                        "--store", built["store"])
    assert_one_line_error(result, "escapes the layer root", "..")
    assert all_files(built["store"]) == before


def test_bad_reference_and_options(tmp_path):
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    assert_one_line_error(imagebuild("image", "from-dir", rootfs, "Bad Name", "--store", tmp_path / "s"),
                          "invalid")
    assert_one_line_error(imagebuild("image", "from-dir", rootfs, "a:1", "--compression", "lz4",
                                     "--store", tmp_path / "s"), "lz4")
    assert_one_line_error(imagebuild("image", "from-dir", rootfs, "a:1", "--entrypoint", "[1, 2]",
                                     "--store", tmp_path / "s"), "JSON array of strings")


@pytest.mark.parametrize("kind", ["docker-archive", "oci"])
def test_corrupt_blob_is_named_and_nothing_is_written(built, tmp_path, kind):
    layer = built["store"] / "blobs" / "sha256"
    manifest = json.loads((layer / built["digest"].split(":")[1]).read_bytes())
    layer_digest = manifest["layers"][0]["digest"]
    path = layer / layer_digest.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / ("image.tar" if kind == "docker-archive" else "layout")
    result = imagebuild("export", "app:v1", f"{kind}:{target}", "--store", built["store"])
    line = assert_one_line_error(result, layer_digest, "corrupt", code=4)
    assert str(path) in line, "the line says which file to delete"
    assert all_files(out_dir) == []


def test_store_on_a_read_only_mount(built, tmp_path):
    # Writing refuses with a user error and changes nothing.
    with read_only_view(built["store"], tmp_path / "ro-store") as ro_store:
        before = all_files(ro_store)
        result = imagebuild("image", "from-dir", built["rootfs"], "app:v2", "--store", ro_store)
        assert_one_line_error(result, "cannot write the store", str(ro_store), "Read-only file system")
        assert all_files(ro_store) == before
        # Reading still works: export from the read-only store.
        archive = tmp_path / "from-ro.tar"
        exported = imagebuild("export", "app:v1", f"docker-archive:{archive}", "--store", ro_store)
        assert exported.returncode == 0, exported.stderr
        assert archive.stat().st_size > 0
    # A store that does not exist yet, under a read-only directory.
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only_view(empty, tmp_path / "ro-parent") as ro_parent:
        result = imagebuild("image", "from-dir", built["rootfs"], "app:v1", "--store", ro_parent / "store")
        assert_one_line_error(result, "cannot write the store", "Read-only file system")
        assert all_files(ro_parent) == []


def test_export_into_a_read_only_directory(built, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only_view(empty, tmp_path / "ro") as ro:
        for destination in (f"oci:{ro / 'layout'}", f"docker-archive:{ro / 'image.tar'}"):
            result = imagebuild("export", "app:v1", destination, "--store", built["store"])
            assert_one_line_error(result, "Read-only file system")
        assert all_files(ro) == []


def test_unknown_image_and_destination(built, tmp_path):
    out = tmp_path / "x"
    assert_one_line_error(imagebuild("export", "nope:v1", f"oci:{out}", "--store", built["store"]), "nope:v1")
    assert_one_line_error(imagebuild("export", "app:v1", f"tarball:{out}", "--store", built["store"]),
                          "unknown destination")
    assert not out.exists()


def test_corrupt_zstd_layer_is_named_when_exported_for_docker(tmp_path):
    rootfs = make_busybox_rootfs(tmp_path / "rootfs")
    store = tmp_path / "store"
    made = imagebuild("image", "from-dir", rootfs, "app:z", "--compression", "zstd", "--store", store, "--json")
    assert made.returncode == 0, made.stderr
    blobs = store / "blobs" / "sha256"
    manifest = json.loads((blobs / json.loads(made.stdout)["digest"].split(":")[1]).read_bytes())
    layer_digest = manifest["layers"][0]["digest"]
    path = blobs / layer_digest.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = bytes(64)  # damage inside the compressed frame
    path.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = imagebuild("export", "app:z", f"docker-archive:{out_dir / 'image.tar'}", "--store", store)
    assert_one_line_error(result, layer_digest, "corrupt", code=4)
    assert all_files(out_dir) == []


def test_missing_blob_is_named(built, tmp_path):
    blobs = built["store"] / "blobs" / "sha256"
    manifest = json.loads((blobs / built["digest"].split(":")[1]).read_bytes())
    layer_digest = manifest["layers"][0]["digest"]
    (blobs / layer_digest.split(":")[1]).unlink()
    for destination in (f"docker-archive:{tmp_path / 'image.tar'}", f"oci:{tmp_path / 'layout'}"):
        result = imagebuild("export", "app:v1", destination, "--store", built["store"])
        assert_one_line_error(result, layer_digest, "missing", code=4)
    assert not (tmp_path / "image.tar").exists() and not (tmp_path / "layout").exists()


def test_oci_export_into_a_directory_that_is_no_layout_is_refused(built, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    result = imagebuild("export", "app:v1", f"oci:{mine}", "--store", built["store"])
    assert_one_line_error(result, f"{mine} is neither an OCI layout (no oci-layout file) nor empty")
    assert all_files(mine) == ["notes.txt"]


def test_oci_export_into_an_empty_directory_then_into_that_layout_again(built, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    for _ in ("into the empty directory", "into the layout it made"):
        made = imagebuild("export", "app:v1", f"oci:{layout}", "--store", built["store"])
        assert made.returncode == 0, made.stderr
    names = set(all_files(layout))
    assert {"oci-layout", "index.json"} <= names
    assert not {"tmp", ".lock", ".gc-lease"} & names, "store-only files leaked into the exported layout"
    inspected = subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == built["digest"]


def test_destinations_are_refused_before_any_store_is_read(tmp_path):
    from imagebuild.errors import UserError
    from imagebuild.publish.docker_archive import DockerArchiveOutput
    from imagebuild.publish.oci_dir import OciDirOutput
    from imagebuild.publish.export import destination_output

    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    refused = {
        "tar:x": "unknown destination",
        "oci:": "unknown destination",
        f"docker-archive:{tmp_path}": "is a directory",
        f"docker-archive:{tmp_path}/missing/a.tar": "does not exist",
        f"oci:{tmp_path}/file": "exists and is not a directory",
        f"oci:{tmp_path}/full": "neither an OCI layout",
        f"oci:{tmp_path}/missing/layout": "does not exist",
    }
    for destination, words in refused.items():
        with pytest.raises(UserError, match=words):
            destination_output(destination).check()
    for destination, kind in ((f"oci:{tmp_path}/empty", OciDirOutput), (f"oci:{tmp_path}/new", OciDirOutput),
                              (f"docker-archive:{tmp_path}/file", DockerArchiveOutput)):
        output = destination_output(destination)
        assert isinstance(output, kind) and str(output.path) == destination.partition(":")[2]
        output.check()


def without_root_powers(*args) -> list[str]:
    """Root reads mode-000 files; dropping its capabilities makes modes count, as for any user."""
    if os.geteuid() != 0:
        return list(args)
    return ["setpriv", "--securebits=+noroot,+noroot_locked", "--inh-caps=-all", "--bounding-set=-all", *args]


@pytest.mark.parametrize("unreadable", ["sub", "sub/secret.txt"])
def test_an_unreadable_path_is_named_not_skipped(tmp_path, unreadable):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "secret.txt").write_text("x\n")
    (tree / "top.txt").write_text("y\n")
    (tree / unreadable).chmod(0)
    store = tmp_path / "store"
    try:
        done = subprocess.run(without_root_powers(sys.executable, "-m", "imagebuild", "image", "from-dir",
                                                  str(tree), "app:v1", "--store", str(store)),
                              capture_output=True, text=True)
    finally:
        (tree / unreadable).chmod(0o755)
    assert_one_line_error(done, f"cannot read {tree / unreadable}: Permission denied")
    assert not (store / "index.json").exists() or "app:v1" not in (store / "index.json").read_text()
