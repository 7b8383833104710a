"""Layers applied in order the way an engine applies them: whiteouts, opaque directories, hard links,
a directory replaced by a file. The merged tar is what genext2fs turns into the disk's root."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from imagebuild.build.disk.rootfs import MergedTree


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
