"""Every failure of the command line is one `error:` line and an exit code, also
click's usage errors; with --json, stdout holds exactly one JSON object."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from imagebuild.atomic import replacing
from imagebuild.cli import everyday, main as cli_main

from conftest import imagebuild

COMMANDS = ["init", "bake", "lock", "images", "export", "image", "image from-dir", "push", "pull",
            "promote", "status", "history", "login", "sbom"]


def one_error_line(done, exit_code: int) -> str:
    assert done.returncode == exit_code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and "╭" not in done.stderr
    return lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["images", "--bogus"], "No such option: --bogus (see 'imagebuild images --help')"),
    (["bak"], "No such command 'bak'. Did you mean 'bake'?"),
    (["push"], "Missing argument 'image' (see 'imagebuild push --help')"),
    (["push", "x:1", "--parallel", "many"], "Invalid value for '--parallel'"),
    (["push", "x:1", "--parallel", "0"], "Invalid value for '--parallel'"),
    (["promote", "v1"], "Missing option '--to'"),
    (["image", "from-dir", "."], "Missing argument 'name'"),
])
def test_usage_mistakes_are_one_line_with_exit_code_2(args, fragment):
    line = one_error_line(imagebuild(*args), 2)
    assert fragment in line, line


def test_usage_mistake_with_json_prints_one_json_object(tmp_path):
    done = imagebuild("images", "--json", "--bogus", "--store", tmp_path / "store")
    one_error_line(done, 2)
    error = json.loads(done.stdout)["error"]
    assert error["exit_code"] == 2 and "--bogus" in error["message"] and error["kind"] == "UsageError"


def test_user_error_with_json_prints_one_json_object(tmp_path):
    done = imagebuild("export", "nothing:here", f"oci:{tmp_path / 'out'}", "--json", "--store", tmp_path / "store")
    line = one_error_line(done, 2)
    error = json.loads(done.stdout)["error"]
    assert line == f"error: {error['message']}" and error["exit_code"] == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_plain_text(command):
    done = imagebuild(*command.split(), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: imagebuild {command} ")
    assert not any(ch in done.stdout for ch in "╭│╰"), done.stdout


def test_no_command_shows_the_help_with_exit_code_2():
    done = imagebuild()
    assert done.returncode == 2
    assert "Commands:" in done.stderr and "bake" in done.stderr and done.stdout == ""


def test_login_without_a_terminal_asks_for_password_stdin(tmp_path):
    done = imagebuild("login", "127.0.0.1:5000", "-u", "someone", env={"DOCKER_CONFIG": str(tmp_path)}, input="")
    line = one_error_line(done, 2)
    assert "--password-stdin" in line
    assert not (tmp_path / "config.json").exists()


def _run_main(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


# Ctrl-C and a bug cannot be produced at a chosen point from outside, so the
# store opener raises them here.
def test_ctrl_c_is_one_line_with_exit_code_130(monkeypatch, capsys, tmp_path):
    def interrupted(_store):
        raise KeyboardInterrupt

    monkeypatch.setattr(everyday, "open_store", interrupted)
    code, out, err = _run_main(capsys, "images", "--json", "--store", str(tmp_path))
    assert code == 130 and err == "error: interrupted\n"
    assert json.loads(out)["error"]["exit_code"] == 130


def test_an_unexpected_failure_is_one_line_unless_debugging(monkeypatch, capsys, tmp_path):
    def broken(_store):
        raise RuntimeError("the index is upside down")

    monkeypatch.setattr(everyday, "open_store", broken)
    monkeypatch.delenv(cli_main.DEBUG_VARIABLE, raising=False)
    code, out, err = _run_main(capsys, "images", "--store", str(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith("error: unexpected RuntimeError: the index is upside down (a bug: set IMAGEBUILD_DEBUG=1")
    assert err.count("\n") == 1

    monkeypatch.setenv(cli_main.DEBUG_VARIABLE, "1")
    with pytest.raises(RuntimeError):
        cli_main.main(["images", "--store", str(tmp_path)])


def test_sigterm_unwinds_like_ctrl_c_and_removes_temp_files(monkeypatch, capsys, tmp_path):
    # A cancelled CI job sends SIGTERM; here the command sends it to itself mid-write.
    target = tmp_path / "index.json"
    target.write_bytes(b"old")

    def terminated_mid_write(_store):
        with replacing(target) as pending:
            pending.write(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(30)  # the handler interrupts this wait at once

    monkeypatch.setattr(everyday, "open_store", terminated_mid_write)
    previous = signal.getsignal(signal.SIGTERM)
    code, out, err = _run_main(capsys, "images", "--store", str(tmp_path))
    assert code == 143 and err == "error: terminated\n" and out == ""
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["index.json"]
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_signal_swallowed_in_a_weakref_callback_still_stops_the_command(monkeypatch, capsys, tmp_path):
    # CPython ignores an exception raised in a weakref callback (an import's module lock being freed
    # is one): the signal whose handler ran there must still end the command, without a traceback.
    import weakref

    class Thing:
        pass

    def in_a_callback(_ref):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):   # the handler runs here, inside the callback
            pass

    def signalled_inside_a_callback(_store):
        thing = Thing()
        ref = weakref.ref(thing, in_a_callback)
        del thing
        assert ref() is None
        threading.Event().wait(30)  # the signal, sent again, interrupts this wait at once

    monkeypatch.setattr(everyday, "open_store", signalled_inside_a_callback)
    code, out, err = _run_main(capsys, "images", "--store", str(tmp_path))
    assert (code, err, out) == (143, "error: terminated\n", "")
