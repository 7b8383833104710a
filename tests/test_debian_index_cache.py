"""The Debian index cache `imagebuild lock` keeps between runs: the apt lists handed to mmdebstrap and
the .deb files of the last resolve. Pure file handling here; the resolve itself is in
test_debian_lock_cache.py."""

from __future__ import annotations

import fcntl
import hashlib
import os

import pytest

from imagebuild.sources.debian_index import AptIndex, DebianSource, deb_identity

LIST = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
# The .deb files the tests keep, each holding its own name; the index gives their sha256.
DEBS = ("bash_5.2.15-2+b13_amd64.deb", "dpkg_1%3a1.21.22_amd64.deb")


def _stanza(file_name: str, data: bytes) -> str:
    name, version = deb_identity(file_name)
    return (f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nFilename: pool/{file_name}\n"
            f"Size: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\nDescription: x\n\n")


PACKAGES = "".join(_stanza(name, name.encode()) for name in DEBS).encode()


@pytest.fixture
def index(tmp_path):
    """An AptIndex whose lists are fresh (so nothing asks the mirror), under tmp_path."""
    index = AptIndex(DebianSource(), root=tmp_path)
    index._prepare()
    lists = index.root / "var/lib/apt/lists"
    (lists / LIST).write_bytes(PACKAGES)
    (lists / "lock").write_bytes(b"")
    (index.root / ".updated").touch()
    return index


@pytest.mark.parametrize("name, identity", [
    ("bash_5.2.15-2+b13_amd64.deb", ("bash", "5.2.15-2+b13")),
    ("libgcc-s1_12.2.0-14+deb12u1_amd64.deb", ("libgcc-s1", "12.2.0-14+deb12u1")),
    ("dpkg_1%3a1.21.22_amd64.deb", ("dpkg", "1:1.21.22")),
    ("partial", None),
    ("bash_5.2_amd64.deb.FAILED", None),
])
def test_a_deb_file_name_gives_name_and_version(name, identity):
    assert deb_identity(name) == identity


def test_the_lists_copy_is_stable_while_apt_replaces_a_list(index):
    lists = index.root / "var/lib/apt/lists"
    with index.lists_copy() as copy:
        assert sorted(path.name for path in copy.iterdir()) == [LIST]      # no lock, no partial/
        # apt-get update renames a new file over the old one: the copy keeps what it saw
        (lists / "new").write_bytes(b"Package: dash\n")
        os.replace(lists / "new", lists / LIST)
        assert (copy / LIST).read_bytes() == PACKAGES
    assert not copy.exists()
    assert (lists / LIST).read_bytes() == b"Package: dash\n"


def test_the_kept_debs_are_those_of_the_last_resolve_only(index):
    with index.package_files() as scratch:
        assert list(scratch.iterdir()) == []                                 # nothing kept yet
        for name in ("bash_5.2.15-2+b13_amd64.deb", "dpkg_1%3a1.21.22_amd64.deb", "less_590-2_amd64.deb"):
            (scratch / name).write_bytes(name.encode())
        index.keep_package_files(scratch, {("bash", "5.2.15-2+b13"), ("dpkg", "1:1.21.22")})
    assert not scratch.exists()
    kept = index.root / "archives"
    assert sorted(path.name for path in kept.iterdir()) == ["bash_5.2.15-2+b13_amd64.deb",
                                                            "dpkg_1%3a1.21.22_amd64.deb"]
    # the next resolve starts from them; a newer bash replaces the old one in the cache
    with index.package_files() as scratch:
        assert sorted(path.name for path in scratch.iterdir()) == sorted(path.name for path in kept.iterdir())
        (scratch / "bash_5.2.15-2+b14_amd64.deb").write_bytes(b"newer")
        index.keep_package_files(scratch, {("bash", "5.2.15-2+b14"), ("dpkg", "1:1.21.22")})
    assert sorted(path.name for path in kept.iterdir()) == ["bash_5.2.15-2+b14_amd64.deb",
                                                            "dpkg_1%3a1.21.22_amd64.deb"]
    assert sorted(path.name for path in index.root.iterdir() if path.name.startswith(("archives-", "debs-"))) == []


def test_a_resolve_that_fails_keeps_the_cache_as_it_was(index):
    with index.package_files() as scratch:
        (scratch / "bash_5.2.15-2+b13_amd64.deb").write_bytes(b"x")
        index.keep_package_files(scratch, {("bash", "5.2.15-2+b13")})
    with pytest.raises(RuntimeError):
        with index.package_files() as scratch:
            (scratch / "less_590-2_amd64.deb").write_bytes(b"y")
            raise RuntimeError("mmdebstrap failed")
    assert [path.name for path in (index.root / "archives").iterdir()] == ["bash_5.2.15-2+b13_amd64.deb"]


def test_a_kept_deb_that_is_not_the_one_the_index_names_is_not_handed_on(index):
    # apt takes a file in its archives by its size alone: a damaged one would be installed, and kept
    good, damaged = DEBS
    kept = index.root / "archives"
    kept.mkdir()
    (kept / good).write_bytes(good.encode())
    (kept / damaged).write_bytes(b"\0" * len(damaged))             # the same size, other bytes
    (kept / "less_590-2_amd64.deb").write_bytes(b"not in the index")
    with index.package_files() as scratch:
        assert [path.name for path in scratch.iterdir()] == [good]


def test_scratch_directories_left_by_a_killed_process_are_swept_and_those_in_use_kept(index):
    abandoned = []
    for name in ("debs-x1", "lists-x2", "archives-x3", f"archives-old-{os.getpid()}"):
        (index.root / name).mkdir()
        (index.root / name / "bash_5.2.15-2+b13_amd64.deb").write_bytes(b"left behind")
        abandoned.append(index.root / name)
    with index.lists_copy() as copy:
        # the lists copy is in use (mmdebstrap reads it) while the cache's own lock is let go
        with index.package_files() as scratch:
            assert copy.exists() and scratch.exists()
            index.keep_package_files(scratch, {("bash", "5.2.15-2+b13")})
            assert copy.exists() and scratch.exists()
        assert sorted(path.name for path in copy.iterdir()) == [LIST]
    assert [path for path in abandoned if path.exists()] == []
    assert sorted(path.name for path in index.root.iterdir() if path.name.startswith(("archives-", "debs-", "lists-"))) == []


def test_a_scratch_directory_another_process_holds_is_not_swept(index):
    held = index.root / "lists-held"
    held.mkdir()
    handle = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with index.package_files():
            pass
        assert held.exists()
    finally:
        os.close(handle)
    with index.package_files():
        pass
    assert not held.exists()


def test_a_leftover_directory_under_an_old_scratch_name_does_not_stop_keeping_debs(index):
    with index.package_files() as scratch:
        (scratch / DEBS[0]).write_bytes(DEBS[0].encode())
        index.keep_package_files(scratch, {deb_identity(DEBS[0])})
    # what a killed run with this pid left while it swapped the kept files
    (index.root / f"archives-old-{os.getpid()}").mkdir()
    (index.root / f"archives-old-{os.getpid()}" / DEBS[1]).write_bytes(b"left behind")
    with index.package_files() as scratch:
        (scratch / DEBS[1]).write_bytes(DEBS[1].encode())
        index.keep_package_files(scratch, {deb_identity(DEBS[1])})
    assert sorted(path.name for path in (index.root / "archives").iterdir()) == [DEBS[1]]
