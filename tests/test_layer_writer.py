"""Properties of the reproducible layer writer, checked on the bytes it writes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import subprocess
import tarfile

import pytest

from imagebuild.errors import LayerInputError
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.layer import (HARDLINK, Entry, entries_from_directory, write_layer, write_tar)
from tests.oci_support import raw_headers, tar_members

SDE = 1_700_000_000


def layer_bytes(entries, compression="gzip", sde=SDE):
    out = io.BytesIO()
    result = write_layer(entries, out, compression=compression, source_date_epoch=sde)
    return out.getvalue(), result


def tar_bytes(entries, sde=SDE):
    out = io.BytesIO()
    write_tar(entries, out, source_date_epoch=sde)
    return out.getvalue()


def sample_entries():
    return [
        Entry.file("usr/bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755, mtime=SDE + 500),
        Entry.file("etc/config", b"key=value\n", mtime=SDE - 10),
        Entry.symlink("usr/bin/alias", "tool"),
        Entry.directory("var/empty", mode=0o700),
        Entry.file("a/z-first-made", b"shared content\n"),
        Entry("a/b-link", HARDLINK, linkname="a/z-first-made"),
    ]


def test_entries_are_sorted_and_order_of_input_does_not_matter():
    entries = sample_entries()
    reference = tar_bytes(entries)
    names = [m.name for m in tar_members(reference)]
    assert names == sorted(names, key=lambda n: n.encode())
    # Parents are added, so every path has its directory before it.
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/alias")
    for seed in range(5):
        shuffled = entries[:]
        random.Random(seed).shuffle(shuffled)
        assert tar_bytes(shuffled) == reference


def test_owners_are_root_with_blank_names():
    entries = [Entry("srv/data", mode=0o644, size=3, data=b"abc", uid=1234, gid=5678)]
    members = tar_members(tar_bytes(entries + [Entry.file("srv/x", b"")]))
    for member in members:
        assert member.uname == "" and member.gname == ""
    plain = {m.name: m for m in tar_members(tar_bytes([Entry.file("srv/x", b"")]))}
    assert (plain["srv/x"].uid, plain["srv/x"].gid) == (0, 0)
    assert (plain["srv"].uid, plain["srv"].gid) == (0, 0)


def test_mtimes_are_integers_clamped_to_source_date_epoch():
    entries = [Entry.file("new", b"1", mtime=SDE + 86400), Entry.file("old", b"2", mtime=1_000_000),
               Entry.file("unset", b"3")]
    members = {m.name: m for m in tar_members(tar_bytes(entries))}
    assert members["new"].mtime == SDE
    assert members["old"].mtime == 1_000_000
    assert members["unset"].mtime == SDE
    assert all(isinstance(m.mtime, int) for m in members.values())


def test_directory_scan_ignores_owners_and_mtimes_above_epoch(tmp_path):
    def tree(root, uid, mtime, order):
        for name in order:
            path = root / "app" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode() * 10)
        os.chmod(root / "app" / "run.sh", 0o755)
        for path in [root / "app", *sorted((root / "app").iterdir())]:
            os.chown(path, uid, uid)
            # A fractional mtime would leak into a PAX header if it were not cut to an integer.
            os.utime(path, (mtime + 0.25, mtime + 0.25))
        return root

    one = tree(tmp_path / "one", 0, SDE + 1000, ["run.sh", "b.txt", "a.txt"])
    two = tree(tmp_path / "two", 4321, SDE + 99999, ["a.txt", "run.sh", "b.txt"])
    bytes_one, result_one = layer_bytes(entries_from_directory(str(one)))
    bytes_two, result_two = layer_bytes(entries_from_directory(str(two)))
    assert bytes_one == bytes_two
    assert result_one.digest == result_two.digest
    members = {m.name: m for m in tar_members(gzip.decompress(bytes_one))}
    assert members["app/run.sh"].mode == 0o755
    assert members["app/a.txt"].mode == 0o644
    assert {m.mtime for m in members.values()} == {SDE}
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


def test_exec_bits_and_symlinks_are_kept():
    members = {m.name: m for m in tar_members(tar_bytes(sample_entries()))}
    assert members["usr/bin/tool"].mode == 0o755
    assert members["usr/bin/alias"].issym() and members["usr/bin/alias"].linkname == "tool"
    assert members["var/empty"].isdir() and members["var/empty"].mode == 0o700


def test_hardlink_points_at_first_path_in_sorted_order_whatever_the_input(tmp_path):
    # Given as entries: the content sits at the later path and the link at the earlier one.
    members = {m.name: m for m in tar_members(tar_bytes(sample_entries()))}
    assert members["a/b-link"].isfile() and members["a/b-link"].size == len(b"shared content\n")
    assert members["a/z-first-made"].islnk() and members["a/z-first-made"].linkname == "a/b-link"

    # On disk: made in opposite orders, same bytes, the first sorted path carries the content.
    def tree(root, first, second):
        root.mkdir()
        (root / first).write_bytes(b"payload")
        os.link(root / first, root / second)
        return root

    one = tar_bytes(entries_from_directory(str(tree(tmp_path / "one", "zeta", "alpha"))))
    two = tar_bytes(entries_from_directory(str(tree(tmp_path / "two", "alpha", "zeta"))))
    assert one == two
    members = {m.name: m for m in tar_members(one)}
    assert members["alpha"].isfile() and members["zeta"].islnk() and members["zeta"].linkname == "alpha"
    # The tar extracts: the link follows its target.
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        tar.extractall(tmp_path / "out", filter="tar")
    assert (tmp_path / "out" / "zeta").read_bytes() == b"payload"


def test_pax_headers_carry_no_times_for_long_and_non_ascii_paths():
    long_dir = "/".join(["segment-" + str(i) * 12 for i in range(8)])
    entries = [Entry.file(f"{long_dir}/file.txt", b"x", mtime=SDE),
               Entry.file("données/naïve-ß.txt", b"y"),
               Entry.symlink("link-with-long-target", "../" * 40 + "target")]
    raw = tar_bytes(entries)
    headers = raw_headers(raw)
    pax = [payload for header, payload in headers if header[156:157] == b"x"]
    assert len(pax) >= 3, "long path, non-ASCII path and long link name each need a PAX header"
    keys = set()
    for payload in pax:
        for record in payload.decode("utf-8").splitlines():
            keys.add(record.split(" ", 1)[1].split("=", 1)[0])
    assert keys <= {"path", "linkpath"}, keys
    assert "path" in keys and "linkpath" in keys
    for header, _ in headers:
        assert header[265:297].strip(b"\0") == b"" and header[297:329].strip(b"\0") == b""
        mtime_field = header[136:148].rstrip(b"\0 ")
        assert int(mtime_field, 8) in (0, SDE)
    members = {m.name: m for m in tar_members(raw)}
    assert f"{long_dir}/file.txt" in members and "données/naïve-ß.txt" in members
    assert members["link-with-long-target"].linkname == "../" * 40 + "target"


def test_gzip_header_is_fixed_and_hashes_match_independent_recomputation():
    blob, result = layer_bytes(sample_entries())
    assert blob[:4] == b"\x1f\x8b\x08\x00", "gzip magic, deflate, and no FNAME/FEXTRA/FCOMMENT flags"
    assert blob[4:8] == b"\x00\x00\x00\x00", "mtime must be zero"
    assert blob[8] == 0 and blob[9] == 255, "XFL 0 for level 6 (as gzip -6 writes); OS unknown"
    raw = gzip.decompress(blob)
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert result.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.size == len(blob) and result.uncompressed_size == len(raw)
    assert result.media_type == mt.OCI_LAYER_GZIP
    assert raw == tar_bytes(sample_entries())
    # The system gzip agrees.
    assert subprocess.run(["gzip", "-dc"], input=blob, capture_output=True, check=True).stdout == raw


def test_zstd_layer_decompresses_with_the_zstd_tool_and_shares_the_diff_id():
    gz_blob, gz = layer_bytes(sample_entries(), "gzip")
    zst_blob, zst = layer_bytes(sample_entries(), "zstd")
    assert zst.media_type == mt.OCI_LAYER_ZSTD
    assert zst.diff_id == gz.diff_id
    assert zst.digest == "sha256:" + hashlib.sha256(zst_blob).hexdigest() and zst.size == len(zst_blob)
    tool = subprocess.run(["zstd", "-dc"], input=zst_blob, capture_output=True, check=True).stdout
    assert "sha256:" + hashlib.sha256(tool).hexdigest() == zst.diff_id
    assert layer_bytes(sample_entries(), "zstd")[0] == zst_blob


@pytest.mark.parametrize("bad,words", [
    ("/etc/passwd", "absolute path"),
    ("../escape", "escapes the layer root"),
    ("usr/../../escape", "escapes the layer root"),
])
def test_refuses_absolute_and_parent_paths_before_writing(bad, words):
    out = io.BytesIO()
    with pytest.raises(LayerInputError, match=words):
        write_layer([Entry.file("ok", b"1"), Entry.file(bad, b"2")], out)
    assert out.getvalue() == b""
    with pytest.raises(LayerInputError, match=words):
        write_layer([Entry.file("ok", b"1"), Entry("link", HARDLINK, linkname=bad)], io.BytesIO())


def test_refuses_duplicates_and_paths_under_a_file():
    with pytest.raises(LayerInputError, match="twice"):
        write_layer([Entry.file("a", b"1"), Entry.file("./a", b"2")], io.BytesIO())
    with pytest.raises(LayerInputError, match="not a directory"):
        write_layer([Entry.file("a", b"1"), Entry.file("a/b", b"2")], io.BytesIO())

