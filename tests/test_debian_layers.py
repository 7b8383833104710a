"""The Debian OS and runtime layers: reproducible, locked, diffed, and runnable in Docker."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from imagebuild.errors import UserError
from imagebuild.build.cache import store_layer
from imagebuild.build.layers.debian import (base_from_store, build_debian_layers, lock_inputs, lock_packages,
                                      os_accounts, os_layer_key, resolve_packages, runtime_layer_key, source_of)
from imagebuild.sources.debian_index import AptIndex
from imagebuild.sources.debian_rootfs import LockedVersionMissingError, UnknownPackageError, build_rootfs
from imagebuild.sources.os_tree import diff_entries, parse_dpkg_status, tree_entries
from imagebuild.sources.lockfile import DebianLock, dumps, read_lock, write_lock
from imagebuild.oci.layer import Entry
from imagebuild.oci.model import Image
from imagebuild.recipe.model import OsSpec, RuntimeSpec
from imagebuild.stores.archive import write_docker_archive
from imagebuild.stores.layout import LayoutStore
from tests.debian_fixtures import PYTHON_OS, PYTHON_RUNTIME, DebianBase, debian_python_base  # noqa: F401
from tests.registry_support.images import free_port

BOOKWORM = OsSpec(debian="bookworm")


def layer_members(store: LayoutStore, digest: str) -> dict[str, tarfile.TarInfo]:
    """Every member of a stored gzip layer by path, failing on a path that appears twice."""
    members: dict[str, tarfile.TarInfo] = {}
    with gzip.open(store.blob_path(digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            assert member.name not in members, f"{member.name} appears twice in one layer"
            members[member.name] = member
    return members


def layer_file(store: LayoutStore, digest: str, path: str) -> bytes:
    with gzip.open(store.blob_path(digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name == path:
                return tar.extractfile(member).read()
    raise AssertionError(f"{path} is not in layer {digest}")


@contextlib.contextmanager
def loaded_in_docker(docker_client, store: LayoutStore, image: Image, repository: str, tmp_path: Path):
    """Load `image` into the engine under a unique tag, and remove it again afterwards."""
    descriptor = store.write_image(image)
    tag = f"{repository}:{uuid.uuid4().hex[:12]}"
    archive = write_docker_archive(store, descriptor.digest, [tag], str(tmp_path / "image.tar"))
    with open(archive, "rb") as handle:
        docker_client.images.load(handle)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def one_line(error: Exception) -> str:
    text = error.one_line()
    assert "\n" not in text
    return text


# -- errors a user can act on (the package index only, read from the mirror) ---------------


@pytest.mark.integration
def test_unknown_package_is_a_user_error_naming_it(tmp_path):
    spec = OsSpec(debian="bookworm", packages=("ca-certificates", "pythn3"))
    with pytest.raises(UnknownPackageError) as caught:
        build_debian_layers(LayoutStore(tmp_path / "store"), spec, RuntimeSpec(), tmp_path / "imagebuild.lock")
    assert caught.value.exit_code == 2
    assert one_line(caught.value) == "Debian bookworm has no package 'pythn3' (check the name in os.packages)"
    assert not (tmp_path / "imagebuild.lock").exists()


@pytest.mark.parametrize("runtime, message", [
    (RuntimeSpec(python="3.9"), "runtime python 3.9 is not shipped by Debian bookworm (it has 3.11)"),
    (RuntimeSpec(java="8"), "runtime java 8 is not shipped by Debian bookworm (it has 17)"),
    (RuntimeSpec(node="20"), "runtime node 20 is not shipped by Debian bookworm (it has 18)"),
])
@pytest.mark.integration
def test_a_runtime_version_the_suite_does_not_ship_is_refused(runtime, message):
    with pytest.raises(UserError) as caught:
        resolve_packages(BOOKWORM, runtime)
    assert caught.value.exit_code == 2
    assert one_line(caught.value) == message


@pytest.mark.parametrize("make_spec, reason", [
    (lambda: OsSpec(debian="bookwrm"),
     "The repository 'http://deb.debian.org/debian bookwrm Release' does not have a Release file."),
    (lambda: OsSpec(mirror=f"http://127.0.0.1:{free_port()}/debian"), "Connection refused"),
])
@pytest.mark.integration
def test_an_unreachable_mirror_or_unknown_suite_is_one_line(make_spec, reason, tmp_path, monkeypatch):
    spec = make_spec()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UserError) as caught:
        resolve_packages(spec, RuntimeSpec(python="3.11"))
    text = one_line(caught.value)
    assert text.startswith(f"cannot read the Debian package index for {spec.debian} from ")
    assert reason in text and text.endswith("(check os.debian, os.mirror and the network)")


@pytest.mark.integration
def test_runtimes_map_to_the_suites_packages():
    assert resolve_packages(BOOKWORM, RuntimeSpec(python="3.11")) == ([], ["python3.11", "python3"])
    assert resolve_packages(BOOKWORM, RuntimeSpec(java="17")) == ([], ["openjdk-17-jre-headless"])
    assert resolve_packages(BOOKWORM, RuntimeSpec(node="18")) == ([], ["nodejs"])
    assert resolve_packages(OsSpec(packages=("tzdata", "ca-certificates", "tzdata")), RuntimeSpec()) == (
        ["ca-certificates", "tzdata"], [])


@pytest.mark.integration
def test_a_runtime_version_that_is_not_a_number_is_refused():
    with pytest.raises(UserError, match="runtime python 'three' is not a version number"):
        resolve_packages(BOOKWORM, RuntimeSpec(python="three"))


def test_a_base_image_spec_is_not_built_from_packages():
    with pytest.raises(UserError, match="base image"):
        source_of(OsSpec(debian=None, image="localhost:5000/base@sha256:" + "0" * 64))


# -- the runtime diff, on small hand-made trees --------------------------------------------


def make_tar(path: Path, members: list[tuple]) -> Path:
    """members: (name, kind, data_or_target, mode, uid, gid)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, mode, uid, gid in members:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_000
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def test_diff_emits_changes_new_paths_parents_and_whiteouts(tmp_path):
    common = [("./", "dir", None, 0o755, 0, 0), ("./etc/", "dir", None, 0o755, 0, 0),
              ("./etc/same", "file", b"same", 0o644, 0, 0), ("./mail/", "dir", None, 0o2775, 0, 8),
              ("./usr/", "dir", None, 0o755, 0, 0), ("./usr/bin/", "dir", None, 0o755, 0, 0)]
    lower = make_tar(tmp_path / "lower.tar", common + [
        ("./etc/changed", "file", b"old", 0o644, 0, 0),
        ("./etc/chmod", "file", b"x", 0o644, 0, 0),
        ("./etc/gone", "file", b"bye", 0o644, 0, 0),
        ("./olddir/", "dir", None, 0o755, 0, 0), ("./olddir/inner", "file", b"i", 0o644, 0, 0),
        ("./usr/bin/tool", "file", b"v1", 0o755, 0, 0),
        ("./usr/bin/tool-link", "hardlink", "./usr/bin/tool", 0o755, 0, 0),
        ("./dev/", "dir", None, 0o755, 0, 0), ("./etc/hostname", "file", b"host-a", 0o644, 0, 0)])
    upper = make_tar(tmp_path / "upper.tar", common + [
        ("./etc/changed", "file", b"new", 0o644, 0, 0),
        ("./etc/chmod", "file", b"x", 0o600, 0, 0),
        ("./mail/box", "file", b"m", 0o660, 0, 8),
        ("./usr/bin/tool", "file", b"v2", 0o755, 0, 0),
        ("./usr/bin/tool-link", "hardlink", "./usr/bin/tool", 0o755, 0, 0),
        ("./usr/bin/python", "symlink", "python3.11", 0o777, 0, 0),
        ("./dev/", "dir", None, 0o755, 0, 0), ("./dev/null", "file", b"", 0o666, 0, 0),
        ("./etc/hostname", "file", b"host-b", 0o644, 0, 0)])
    with tarfile.open(lower) as below, tarfile.open(upper) as above:
        entries = {entry.path: entry for entry in diff_entries(below, above)}
        assert set(entries) == {
            "etc", "etc/changed", "etc/chmod", "etc/.wh.gone", ".wh.olddir", "mail", "mail/box",
            "usr", "usr/bin", "usr/bin/tool", "usr/bin/tool-link", "usr/bin/python"}
        # parents keep the upper tree's mode and owner rather than a default
        assert (entries["mail"].mode, entries["mail"].gid) == (0o2775, 8)
        assert entries["etc/chmod"].mode == 0o600
        assert entries["usr/bin/tool-link"].linkname == "usr/bin/tool"
        with entries["etc/changed"].opener() as handle:
            assert handle.read() == b"new"
        store = LayoutStore(tmp_path / "store")
        result = store_layer(store, entries.values(), 2_000)
    written = layer_members(store, result.digest)
    assert written["etc/.wh.gone"].isfile() and written["etc/.wh.gone"].size == 0
    assert written["usr/bin/tool-link"].islnk()


def test_tree_entries_leave_out_build_leftovers_and_empty_the_machine_id(tmp_path):
    tree = make_tar(tmp_path / "tree.tar", [
        ("./", "dir", None, 0o755, 0, 0), ("./etc/", "dir", None, 0o755, 0, 0),
        ("./etc/machine-id", "file", b"0123456789abcdef\n", 0o444, 0, 0),
        ("./etc/hostname", "file", b"build-host\n", 0o644, 0, 0),
        ("./dev/", "dir", None, 0o755, 0, 0), ("./dev/null", "file", b"", 0o666, 0, 0),
        ("./var/", "dir", None, 0o755, 0, 0), ("./var/log/", "dir", None, 0o755, 0, 0),
        ("./var/log/dpkg.log", "file", b"2024-01-01 install", 0o644, 0, 0),
        ("./var/log/wtmp", "file", b"", 0o664, 0, 43),
        ("./var/lib/", "dir", None, 0o755, 0, 0), ("./var/lib/dpkg/", "dir", None, 0o755, 0, 0),
        ("./var/lib/dpkg/status", "file", b"s", 0o644, 0, 0),
        ("./var/lib/dpkg/status-old", "file", b"o", 0o644, 0, 0)])
    with tarfile.open(tree) as tar:
        entries = {entry.path: entry for entry in tree_entries(tar)}
    assert set(entries) == {"etc", "etc/machine-id", "dev", "var", "var/log", "var/log/wtmp", "var/lib",
                            "var/lib/dpkg", "var/lib/dpkg/status"}
    assert entries["etc/machine-id"].data == b"" and entries["etc/machine-id"].mode == 0o444
    assert entries["var/log/wtmp"].gid == 43


def test_a_garbled_lock_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "imagebuild.lock"
    path.write_text("{not json")
    with pytest.raises(UserError) as caught:
        read_lock(path)
    assert caught.value.exit_code == 2 and str(path) in one_line(caught.value)
    path.write_text(json.dumps({"format": 1, "debian": {"inputs": {}}}))
    with pytest.raises(UserError, match="missing or garbles"):
        read_lock(path)
    assert read_lock(tmp_path / "absent.lock") is None


@pytest.mark.integration
def test_docker_applies_the_diff_and_its_whiteouts(tmp_path, docker_client, busybox_path):
    """The engine, not our reading of the spec, decides that the whiteouts remove what they should."""
    busybox = busybox_path.read_bytes()
    common = [("./", "dir", None, 0o755, 0, 0), ("./bin/", "dir", None, 0o755, 0, 0),
              ("./bin/busybox", "file", busybox, 0o755, 0, 0), ("./bin/sh", "symlink", "busybox", 0o777, 0, 0),
              ("./etc/", "dir", None, 0o755, 0, 0), ("./etc/kept", "file", b"kept\n", 0o644, 0, 0)]
    lower = make_tar(tmp_path / "lower.tar", common + [
        ("./etc/gone", "file", b"gone\n", 0o644, 0, 0),
        ("./olddir/", "dir", None, 0o755, 0, 0), ("./olddir/inner", "file", b"i", 0o644, 0, 0)])
    upper = make_tar(tmp_path / "upper.tar", common + [("./etc/new", "file", b"new\n", 0o644, 0, 0)])
    store = LayoutStore(tmp_path / "store").ensure()
    with tarfile.open(lower) as below, tarfile.open(upper) as above:
        os_layer = store_layer(store, tree_entries(below), 2_000)
        runtime_layer = store_layer(store, diff_entries(below, above), 2_000)
    image = (Image(created="2024-01-01T00:00:00Z")
             .with_layer(os_layer.as_layer(), created_by="os")
             .with_layer(runtime_layer.as_layer(), created_by="runtime")
             .with_runtime(Cmd=["/bin/sh", "-c", "cat /etc/kept /etc/new; ls -a /etc; "
                                "test -e /olddir && echo olddir-exists; true"]))
    with loaded_in_docker(docker_client, store, image, "imagebuild-test-whiteout", tmp_path) as tag:
        output = docker_client.containers.run(tag, remove=True).decode().split()
    engine_files = {"hostname", "hosts", "resolv.conf", "mtab"}   # mounted by the engine
    assert [word for word in output if word not in engine_files] == ["kept", "new", ".", "..", "kept", "new"]


# -- the real layers (one session-scoped build) ----------------------------------------------


@pytest.mark.integration
def test_os_layer_holds_the_os_without_build_leftovers(debian_python_base: DebianBase):
    base = debian_python_base
    members = layer_members(base.store, base.layers.os.digest)
    assert "usr/bin/dpkg" in members and "etc/ssl/certs/ca-certificates.crt" in members
    assert "usr/bin/python3.11" not in members
    assert not [name for name in members if name.startswith("dev/")]
    assert members["dev"].isdir() and members["tmp"].mode == 0o1777
    for leftover in ("etc/hostname", "etc/resolv.conf", "var/cache/ldconfig/aux-cache",
                     "etc/apt/preferences.d/imagebuild-lock.pref"):
        assert leftover not in members
    assert not [name for name in members if name.endswith("-old") and name.startswith("var/")]
    assert not [name for name in members if name.startswith(("var/lib/apt/lists/", "var/cache/apt/"))]
    assert not [m for name, m in members.items() if name.startswith("var/log/") and m.size > 0]
    # owners survive: wtmp belongs to the utmp group
    assert members["var/log/wtmp"].gid == 43
    passwd, group = os_accounts(base.store, base.layers.os)
    assert passwd.split("\n")[0].split(":")[::2] == ["root", "0", "root", "/bin/bash"]
    assert any(line.split(":")[0::2] == ["utmp", "43"] for line in group.splitlines())


@pytest.mark.integration
def test_runtime_layer_adds_python_with_its_full_standard_library(debian_python_base: DebianBase):
    base = debian_python_base
    members = layer_members(base.store, base.layers.runtime.digest)
    for path in ("usr/bin/python3.11", "usr/bin/python3", "usr/lib/python3.11/html/__init__.py",
                 "usr/lib/python3.11/email/parser.py", "usr/lib/python3.11/json/__init__.py",
                 "usr/lib/python3.11/ssl.py"):
        assert path in members, path
    assert [name for name in members if name.startswith("usr/lib/python3.11/lib-dynload/_ssl.")]
    assert "usr/bin/dpkg" not in members, "unchanged OS files must stay in the OS layer"
    # the byte-compiled standard library is kept because its pycs are checked-hash (PEP 552, flags 3)
    pycs = [name for name in members if name.startswith("usr/lib/python3.11/") and name.endswith(".pyc")]
    assert len(pycs) > 100
    with gzip.open(base.store.blob_path(base.layers.runtime.digest)) as raw, \
            tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name in pycs:
                assert tar.extractfile(member).read(8)[4:8] == (3).to_bytes(4, "little"), member.name
    # whiteouts exactly for OS paths the runtime tree no longer has
    os_members = layer_members(base.store, base.layers.os.digest)
    for name in members:
        head, _, leaf = name.rpartition("/")
        if leaf.startswith(".wh."):
            removed = f"{head}/{leaf[4:]}" if head else leaf[4:]
            assert removed in os_members, f"whiteout {name} hides nothing"
    # every parent in the layer has the mode the OS layer gives it
    for name, member in members.items():
        if member.isdir() and name in os_members:
            assert member.mode == os_members[name].mode, name


@pytest.mark.integration
def test_lock_records_every_installed_version_and_is_stable(debian_python_base: DebianBase):
    base = debian_python_base
    text = base.lock_path.read_text()
    lock = read_lock(base.lock_path)
    assert dumps(lock) == text, "the lock file is not in its canonical, sorted form"
    assert list(json.loads(text)["debian"]["os"]) == sorted(lock.os)
    assert dict(lock.inputs) == json.loads(json.dumps(lock_inputs(PYTHON_OS, PYTHON_RUNTIME)))
    os_status = parse_dpkg_status(layer_file(base.store, base.layers.os.digest, "var/lib/dpkg/status").decode())
    runtime_status = parse_dpkg_status(
        layer_file(base.store, base.layers.runtime.digest, "var/lib/dpkg/status").decode())
    assert os_status == dict(lock.os) and "libc6" in os_status and "ca-certificates" in os_status
    assert runtime_status == lock.runtime_versions()
    assert "python3.11" in lock.runtime and "python3.11" not in lock.os


@pytest.mark.integration
def test_layer_keys_follow_every_locked_version(debian_python_base: DebianBase):
    lock = read_lock(debian_python_base.lock_path)
    os_key = os_layer_key(PYTHON_OS, lock)
    assert os_key == debian_python_base.layers.os_key
    assert runtime_layer_key(PYTHON_OS, PYTHON_RUNTIME, lock, os_key) == debian_python_base.layers.runtime_key
    bumped = DebianLock(lock.inputs, lock.source_date_epoch, {**lock.os, "libc6": "9:9"}, lock.runtime)
    assert os_layer_key(PYTHON_OS, bumped) != os_key
    assert runtime_layer_key(PYTHON_OS, PYTHON_RUNTIME, lock, "0" * 64) != debian_python_base.layers.runtime_key


@pytest.mark.integration
def test_two_fresh_builds_from_the_lock_are_bit_for_bit_identical(debian_python_base: DebianBase, tmp_path):
    results = []
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        shutil.copy(debian_python_base.lock_path, workdir / "imagebuild.lock")
        store = LayoutStore(workdir / "store").ensure()
        built = build_debian_layers(store, PYTHON_OS, PYTHON_RUNTIME, workdir / "imagebuild.lock",
                                    update_lock=False, use_cache=False)
        assert not built.cached
        assert (workdir / "imagebuild.lock").read_text() == debian_python_base.lock_path.read_text()
        results.append([(r.diff_id, r.digest, r.size) for r in built.layers()])
    assert results[0] == results[1]
    # and the same as the layers the lock was first written with
    assert results[0] == [(r.diff_id, r.digest, r.size) for r in debian_python_base.results]


@pytest.mark.integration
def test_a_lock_handed_over_is_not_read_again_and_cached_layers_say_so(debian_python_base: DebianBase,
                                                                        tmp_path):
    # The lock path names no file: reading it would find no lock and resolve afresh.
    absent = tmp_path / "imagebuild.lock"
    announced: list[bool] = []
    built = build_debian_layers(debian_python_base.store, PYTHON_OS, PYTHON_RUNTIME, absent, update_lock=False,
                                lock=debian_python_base.layers.lock, on_build=announced.append)
    assert (built.os_cached, built.runtime_cached, built.cached) == (True, True, True)
    assert announced == []
    assert [r.digest for r in built.layers()] == [r.digest for r in debian_python_base.results]
    assert not absent.exists()


@pytest.mark.integration
def test_the_layers_run_python_with_tls_in_docker(debian_python_base: DebianBase, docker_client, tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    image = Image(created="2024-01-01T00:00:00Z")
    for layer, name in zip(debian_python_base.copy_into(store), ("os", "runtime")):
        image = image.with_layer(layer, created_by=f"imagebuild debian {name}")
    image = image.with_runtime(Cmd=["python3", "-c", "import html, json, ssl, email.parser; "
                                    "ssl.create_default_context(); print('ok')"])
    with loaded_in_docker(docker_client, store, image, "imagebuild-test-debian", tmp_path) as tag:
        output = docker_client.containers.run(tag, remove=True)
        assert output.decode().strip() == "ok"
        user = docker_client.containers.run(tag, ["sh", "-c", "id -u nobody && ls /dev/null"], remove=True)
        assert user.decode().split() == ["65534", "/dev/null"]


# -- locks that no longer fit ----------------------------------------------------------------


@pytest.mark.integration
def test_a_locked_version_the_mirror_dropped_is_named(debian_python_base: DebianBase, tmp_path):
    lock = read_lock(debian_python_base.lock_path)
    write_lock(tmp_path / "imagebuild.lock",
               DebianLock(lock.inputs, lock.source_date_epoch, {**lock.os, "libc6": "2.36-9+deb12u0bogus"},
                          lock.runtime))
    with pytest.raises(LockedVersionMissingError) as caught:
        build_debian_layers(LayoutStore(tmp_path / "store"), PYTHON_OS, PYTHON_RUNTIME,
                            tmp_path / "imagebuild.lock")
    assert caught.value.exit_code == 2
    assert one_line(caught.value) == ("locked package libc6=2.36-9+deb12u0bogus is no longer on the mirror; "
                                      "run `imagebuild lock --upgrade` to refresh imagebuild.lock")


@pytest.mark.integration
def test_mmdebstrap_failures_become_one_line(tmp_path):
    source = source_of(BOOKWORM)
    log = tmp_path / "logs" / "os.log"
    with pytest.raises(UnknownPackageError) as caught:
        build_rootfs(source, ["pythn3"], None, 1_700_000_000, tmp_path / "a.tar", log)
    assert one_line(caught.value) == "Debian bookworm has no package 'pythn3' (check the name in os.packages)"
    assert "Unable to locate package pythn3" in log.read_text()
    with pytest.raises(LockedVersionMissingError) as caught:
        build_rootfs(source, ["libc6=2.36-9+deb12u0bogus"], None, 1_700_000_000, tmp_path / "b.tar", log)
    assert "libc6=2.36-9+deb12u0bogus is no longer on the mirror" in one_line(caught.value)
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "b.tar").exists()


def test_an_outgrown_lock_is_refused_when_updates_are_off(tmp_path):
    lock = DebianLock(inputs=lock_inputs(BOOKWORM, RuntimeSpec()), source_date_epoch=1, os={"libc6": "1"})
    write_lock(tmp_path / "imagebuild.lock", lock)
    with pytest.raises(UserError, match="out of date"):
        build_debian_layers(LayoutStore(tmp_path / "store"), BOOKWORM, RuntimeSpec(python="3.11"),
                            tmp_path / "imagebuild.lock", update_lock=False)
    with pytest.raises(UserError, match="no imagebuild.lock"):
        build_debian_layers(LayoutStore(tmp_path / "store"), BOOKWORM, RuntimeSpec(),
                            tmp_path / "missing" / "imagebuild.lock", update_lock=False)


@pytest.mark.integration
def test_a_lock_pinning_an_older_version_installs_that_version(tmp_path):
    """Pins reach the essential packages mmdebstrap chooses itself, not only the --include ones."""
    first = tmp_path / "first"
    first.mkdir()
    lock = lock_packages(BOOKWORM, RuntimeSpec(), first / "imagebuild.lock")
    assert read_lock(first / "imagebuild.lock") == lock and lock.runtime == {}
    # The mirror keeps a second version of some packages (the suite's and its -updates');
    # which ones changes with each point release, so pick one that has two today, libc6 first.
    offered = AptIndex(source_of(BOOKWORM)).versions(sorted(lock.os))
    candidates = [name for name in ["libc6", *sorted(lock.os)] if set(offered.get(name, [])) - {lock.os[name]}]
    assert candidates, "the mirror carries a single version of every essential package; nothing to pin"
    package = candidates[0]
    older = sorted(set(offered[package]) - {lock.os[package]})[0]
    assert package not in BOOKWORM.packages  # one mmdebstrap picks itself, not one the recipe asks for
    built = build_debian_layers(LayoutStore(first / "store"), BOOKWORM, RuntimeSpec(), first / "imagebuild.lock",
                                update_lock=False)
    second = tmp_path / "second"
    second.mkdir()
    write_lock(second / "imagebuild.lock",
               DebianLock(lock.inputs, lock.source_date_epoch, {**lock.os, package: older}, lock.runtime))
    store = LayoutStore(second / "store")
    pinned = build_debian_layers(store, BOOKWORM, RuntimeSpec(), second / "imagebuild.lock", update_lock=False)
    status = parse_dpkg_status(layer_file(store, pinned.os.digest, "var/lib/dpkg/status").decode())
    assert status[package] == older
    assert pinned.os.diff_id != built.os.diff_id


# -- a base image from the store ----------------------------------------------------------------


def test_base_from_store_reads_layers_and_config_by_digest(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    layer = store_layer(store, [Entry.file("etc/os-release", b"ID=test\n")], 1_000)
    image = Image(created="2024-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    image = image.with_runtime(Env=["PATH=/usr/bin"])
    descriptor = store.write_image(image)
    ref = f"localhost:5000/base@{descriptor.digest}"
    base = base_from_store(store, ref)
    assert [(l.digest, l.diff_id) for l in base.layers] == [(layer.digest, layer.diff_id)]
    assert base.config["config"]["Env"] == ["PATH=/usr/bin"]
    assert base.manifest_digest == descriptor.digest


def test_base_from_store_says_to_pull_a_missing_image(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    ref = "localhost:5000/base@sha256:" + "a" * 64
    with pytest.raises(UserError) as caught:
        base_from_store(store, ref)
    assert caught.value.exit_code == 2
    assert f"run `imagebuild pull {ref}` first" in one_line(caught.value)
    with pytest.raises(UserError, match="not pinned by digest"):
        base_from_store(store, "localhost:5000/base:latest")


def test_base_from_store_refuses_a_manifest_with_missing_layers(tmp_path):
    store = LayoutStore(tmp_path / "store").ensure()
    layer = store_layer(store, [Entry.file("a", b"a")], 1_000)
    image = Image(created="2024-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    descriptor = store.write_image(image)
    store.blob_path(layer.digest).unlink()
    with pytest.raises(UserError, match="missing from the local store"):
        base_from_store(store, f"base@{descriptor.digest}")



def test_base_from_store_unpacks_a_layer_once_and_again_when_its_file_changes(tmp_path, monkeypatch):
    """A warm bake on a base image does not unpack every base layer again; a blob file rewritten since
    (here: damaged in place, same size) is checked again and refused."""
    from imagebuild.build.layers import debian
    from imagebuild.errors import CorruptBlobError

    store = LayoutStore(tmp_path / "store").ensure()
    layer = store_layer(store, [Entry.file("etc/os-release", b"ID=test\n" * 100)], 1_000)
    image = Image(created="2024-01-01T00:00:00Z").with_layer(layer.as_layer(), created_by="test")
    ref = f"localhost:5000/base@{store.write_image(image).digest}"
    unpacked = []
    check = debian._check_layer
    monkeypatch.setattr(debian, "_check_layer", lambda *args: (unpacked.append(args[2].digest), check(*args)))
    first, second = base_from_store(store, ref), base_from_store(store, ref)
    assert unpacked == [layer.digest] and first == second

    path = store.blob_path(layer.digest)
    damaged = bytearray(path.read_bytes())
    damaged[-12] ^= 0xFF
    path.chmod(0o644)
    before = path.stat()
    path.write_bytes(bytes(damaged))
    # as a later rewrite would leave it, also within one tick of the file system's clock
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    with pytest.raises(CorruptBlobError):
        base_from_store(store, ref)
    assert unpacked == [layer.digest, layer.digest]
