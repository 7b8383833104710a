"""Layers applied in order the way an engine applies them: whiteouts, opaque directories, hard links,
a directory replaced by a file. The merged tar is what genext2fs turns into the disk's root."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagebuild.build.disk import assemble
from imagebuild.build.disk.build import build_disk
from imagebuild.build.disk.rootfs import CHUNK, Budget, MergedTree, image_layers, unpack_layer
from imagebuild.errors import UserError
from imagebuild.sources.debian_index import DebianSource
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.model import Descriptor, Image, Layer, ParsedManifest
from imagebuild.stores.layout import LayoutStore


def _layer(path: Path, entries: list[tuple]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname = 1_700_000_000, 7, 8, "someone"
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o4755 if name.endswith("su") else 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def _merged(tmp_path: Path, *layers: list[tuple]) -> dict[str, tarfile.TarInfo | bytes]:
    paths = [_layer(tmp_path / f"layer{number}.tar", entries) for number, entries in enumerate(layers)]
    out = io.BytesIO()
    with MergedTree(paths) as tree:
        tree.write_tar(out)
    out.seek(0)
    found: dict = {}
    with tarfile.open(fileobj=out) as tar:
        for member in tar.getmembers():
            found[member.name] = member
            if member.isfile():
                found[member.name + ":data"] = tar.extractfile(member).read()
    return found


def test_whiteouts_remove_lower_paths_and_opaque_directories_hide_lower_contents(tmp_path):
    merged = _merged(
        tmp_path,
        [("etc", "dir", None), ("etc/a", "file", b"a"), ("etc/b", "file", b"b"), ("var", "dir", None),
         ("var/cache", "dir", None), ("var/cache/x", "file", b"x"), ("var/cache/sub", "dir", None),
         ("var/cache/sub/y", "file", b"y"), ("tmp", "dir", None)],
        [("etc/.wh.a", "file", b""), ("var/cache/.wh..wh..opq", "file", b""), ("var/cache/new", "file", b"n")],
        [("etc/a", "file", b"again")])
    names = sorted(name for name in merged if not name.endswith(":data"))
    assert names == ["etc", "etc/a", "etc/b", "tmp", "var", "var/cache", "var/cache/new"]
    assert merged["etc/a:data"] == b"again"
    assert merged["tmp"].mode == 0o1777
    assert all(not name.split("/")[-1].startswith(".wh.") for name in names)


def test_owners_modes_and_times_are_kept_and_owner_names_dropped(tmp_path):
    merged = _merged(tmp_path, [("usr", "dir", None), ("usr/bin", "dir", None), ("usr/bin/su", "file", b"su")])
    su = merged["usr/bin/su"]
    assert (su.mode, su.uid, su.gid, su.mtime) == (0o4755, 7, 8, 1_700_000_000)
    assert su.uname == "" and su.gname == ""


def test_hard_links_stay_links_even_when_the_original_path_is_replaced(tmp_path):
    merged = _merged(
        tmp_path,
        [("bin", "dir", None), ("bin/zz-original", "file", b"shared"), ("bin/aa-link", "link", "bin/zz-original")],
        [("bin/zz-original", "file", b"replaced")])
    # the link sorts first, so it carries the bytes; the replaced path has its own
    assert merged["bin/aa-link"].isfile() and merged["bin/aa-link:data"] == b"shared"
    assert merged["bin/zz-original:data"] == b"replaced"


def test_a_file_replacing_a_directory_takes_its_children_away(tmp_path):
    merged = _merged(
        tmp_path,
        [("opt", "dir", None), ("opt/tool", "dir", None), ("opt/tool/x", "file", b"x")],
        [("opt/tool", "symlink", "/usr/bin/tool")])
    assert merged["opt/tool"].issym() and merged["opt/tool"].linkname == "/usr/bin/tool"
    assert "opt/tool/x" not in merged


def test_hard_links_within_a_layer_are_written_once(tmp_path):
    merged = _merged(tmp_path, [("a", "file", b"data"), ("b", "link", "a"), ("c", "link", "a")])
    assert merged["a"].isfile()
    assert merged["b"].islnk() and merged["b"].linkname == "a"
    assert merged["c"].islnk() and merged["c"].linkname == "a"


# What an image may expand to on a disk is bounded (disk.max_size): counted while a layer is decompressed,
# sparse files at their full length; sparse files within the bound stay sparse.

MIB, GIB = 1 << 20, 1 << 30


def _stored_image(tmp_path: Path, blob: bytes) -> tuple[LayoutStore, ParsedManifest]:
    store = LayoutStore(tmp_path / "store").ensure()
    digest = store.put_blob(blob)
    layer = Layer(Descriptor(mt.OCI_LAYER_GZIP, digest, len(blob)), "sha256:" + "0" * 64)
    image = Image(created="2025-01-01T00:00:00Z").with_layer(layer, created_by="test")
    descriptor = store.write_image(image.with_runtime(Cmd=["/big"]), ["big:1"])
    return store, store.read_manifest(str(descriptor.digest))


def _gzip_bomb(expanded: int) -> bytes:
    """A gzip layer of one file of EXPANDED zero bytes: gzip members of 1 MiB of zeros, about 1 KiB each."""
    header = tarfile.TarInfo("big")
    header.size = expanded
    zeros = gzip.compress(bytes(MIB), compresslevel=9, mtime=0)
    return (gzip.compress(header.tobuf(tarfile.PAX_FORMAT), mtime=0) + zeros * (expanded // MIB)
            + gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))


def _sparse_layer(tmp_path: Path, size: int, data_at: int) -> bytes:
    """A gzip layer holding one sparse file of SIZE bytes with 4 bytes of data at DATA_AT (GNU tar --sparse)."""
    source = tmp_path / "sparse-source"
    source.mkdir()
    with open(source / "sparse", "wb") as handle:
        handle.truncate(size)
        handle.seek(data_at)
        handle.write(b"data")
    tarred = subprocess.run(["tar", "--sparse", "--format=pax", "-C", str(source), "-cf", "-", "sparse"],
                            capture_output=True, check=True).stdout
    return gzip.compress(tarred, mtime=0)


def test_a_small_gzip_layer_expanding_to_gigabytes_is_refused_while_it_is_decompressed(tmp_path):
    blob = _gzip_bomb(2 * GIB)
    assert len(blob) < 4 * MIB
    store, manifest = _stored_image(tmp_path, blob)
    budget = Budget(64 * MIB)
    into = tmp_path / "layer.tar"
    with pytest.raises(UserError) as refused:
        unpack_layer(store, manifest.layers[0], into, budget)
    assert "disk.max_size (64 MiB)" in refused.value.one_line()
    assert budget.spent <= 64 * MIB + CHUNK             # it stopped at the bound, not at the end of the layer
    assert not into.exists()                            # nothing half-written

    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UserError) as refused:            # before any package is fetched
        build_disk(store, manifest, DebianSource(), "linux-image-cloud-amd64", work, "big", max_size=64 * MIB)
    assert "disk.max_size" in refused.value.one_line() and list(work.iterdir()) == []


def test_a_sparse_file_counts_at_its_full_length(tmp_path):
    blob = _sparse_layer(tmp_path, 20 * GIB, 10 * GIB)
    assert len(blob) < 4096
    store, manifest = _stored_image(tmp_path, blob)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UserError) as refused:
        build_disk(store, manifest, DebianSource(), "linux-image-cloud-amd64", work, "big")     # 4 GiB default
    line = refused.value.one_line()
    assert "the image's files" in line and "disk.max_size (4 GiB)" in line
    assert sum(path.stat().st_blocks for path in work.iterdir()) * 512 < MIB


def test_sparse_files_within_the_bound_stay_sparse_in_the_root_tar_and_file_system(tmp_path):
    store, manifest = _stored_image(tmp_path, _sparse_layer(tmp_path, 256 * MIB, 128 * MIB))
    layers = list(image_layers(store, list(manifest.layers), tmp_path, Budget(GIB)))
    root_tar, root = tmp_path / "root.tar", tmp_path / "root.ext2"
    with MergedTree(layers) as tree:
        assert tree.content_bytes() == 256 * MIB
        with open(root_tar, "wb") as out:
            entries, content = tree.write_tar(out)
        blocks = tree.data_blocks(assemble.BLOCK)
    assert root_tar.stat().st_size > 256 * MIB and root_tar.stat().st_blocks * 512 < MIB     # holes, not zeros
    size = assemble.root_filesystem(root_tar, assemble.RootStats(entries, content, blocks), root, "seed", 0)
    assert size < 128 * MIB and root.stat().st_blocks * 512 < 16 * MIB
    shown = subprocess.run(["debugfs", "-R", "stat /sparse", str(root)], capture_output=True, text=True).stdout
    assert f"Size: {256 * MIB}" in shown
    assert int(shown.split("Blockcount: ")[1].split()[0]) * 512 < MIB     # indirect blocks, no data
    dumped = subprocess.run(["debugfs", "-R", "cat /sparse", str(root)], capture_output=True).stdout
    assert len(dumped) == 256 * MIB and dumped[128 * MIB:128 * MIB + 4] == b"data"
