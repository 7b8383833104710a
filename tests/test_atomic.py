"""Files are replaced whole or not at all, and every writer of one says so in one line
when the place is read-only (a real read-only bind mount: root ignores file modes)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from imagebuild.atomic import replacing, write_atomically
from imagebuild.sources.lockfile import DebianLock, LockFileError, read_lock, write_lock

from tests.conftest import REGISTRY, imagebuild
from tests.test_export_errors import all_files, assert_one_line_error, read_only_view


def test_new_file_gets_its_bytes_and_mode(tmp_path):
    target = tmp_path / "a.json"
    write_atomically(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomically(target, b"secret\n", mode=0o600)
    assert target.read_bytes() == b"secret\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["a.json"]


@pytest.mark.parametrize("failure", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_failure_inside_keeps_the_old_file_and_leaves_no_temp(tmp_path, failure):
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    with pytest.raises(type(failure)):
        with replacing(target) as pending:
            pending.write(b"half of the new")
            assert pending.temp_path.parent == tmp_path and pending.temp_path.name.startswith(".index.json.tmp-")
            raise failure
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["index.json"]


def test_read_only_directory_raises_oserror_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with read_only_view(empty, tmp_path / "ro") as ro:
        with pytest.raises(OSError):
            write_atomically(ro / "x", b"x")
        assert all_files(ro) == []


def test_lock_in_a_read_only_directory_is_a_lock_file_error(tmp_path):
    lock = DebianLock(inputs={"suite": "bookworm"}, source_date_epoch=1, os={"bash": "5.2"})
    (tmp_path / "app").mkdir()
    write_lock(tmp_path / "app" / "imagebuild.lock", lock)
    with read_only_view(tmp_path / "app", tmp_path / "ro") as ro:
        with pytest.raises(LockFileError) as caught:
            write_lock(ro / "imagebuild.lock", DebianLock(inputs={}, source_date_epoch=2))
        assert "Read-only file system" in caught.value.one_line()
        assert read_lock(ro / "imagebuild.lock") == lock
        assert all_files(ro) == ["imagebuild.lock"]


def test_init_into_a_read_only_directory(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>hi</h1>\n")
    with read_only_view(site, tmp_path / "ro") as ro:
        assert_one_line_error(imagebuild("init", ro), "cannot write", "Read-only file system")
        assert all_files(ro) == ["index.html"]


@pytest.mark.integration
def test_login_with_a_read_only_docker_config(tmp_path):
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {}}))
    with read_only_view(config, tmp_path / "ro") as ro:
        done = imagebuild("login", REGISTRY, "-u", "someone", "--password-stdin", input="not-printed\n",
                          env={"DOCKER_CONFIG": str(ro)})
        line = assert_one_line_error(done, "cannot save the credentials", "Read-only file system")
        assert "not-printed" not in line + done.stdout
        assert all_files(ro) == ["config.json"]


class Stopped(BaseException):
    """What the test's SIGTERM handler raises, as the CLI's raises KeyboardInterrupt."""


def test_a_signal_as_the_temp_file_is_made_leaves_no_temp(tmp_path, monkeypatch):
    # A real SIGTERM arrives the moment the temp file has been made: before the fix it landed before
    # the `try` that removes the file, and the temp file stayed in the target's directory for good.
    # The process may have other threads (the kernel may hand them the signal), as a push has.
    import signal

    real_open = os.open

    def open_then_signal(*args, **kwargs):
        made = real_open(*args, **kwargs)
        if len(args) > 1 and args[1] & os.O_CREAT:
            os.kill(os.getpid(), signal.SIGTERM)
        return made

    def stop(_signum, _frame):
        raise Stopped

    monkeypatch.setattr(os, "open", open_then_signal)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stopped):
            write_atomically(tmp_path / "index.json", b"new")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == []
