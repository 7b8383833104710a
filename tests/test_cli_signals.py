"""Ctrl-C and SIGTERM at any moment of start-up: exit 130 or 143 and one `error:` line, never a
traceback. Real processes, real signals, sent at several delays after the process starts.

The command waits for a password on a pipe that never delivers one, so it cannot finish before the
signal: whatever the delay, the only right answers are 130 and 143. The process starts with SIGINT and
SIGTERM blocked, as a parent may leave them. No program can handle a signal before its interpreter
has run a line of it; blocked, a signal sent that early waits instead of killing the process by
default, so what is tested is that every moment from the first line of the entry point on is covered:
the handlers are in place before the signals are let in and before typer and the commands are imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

STOP = {signal.SIGINT, signal.SIGTERM}
EXPECTED = {signal.SIGINT: (130, "error: interrupted"), signal.SIGTERM: (143, "error: terminated")}


def start_waiting_command(tmp_path) -> subprocess.Popen:
    env = dict(os.environ, DOCKER_CONFIG=str(tmp_path), IMAGEBUILD_STORE=str(tmp_path / "store"))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP)   # inherited by the child
    try:
        return subprocess.Popen([sys.executable, "-m", "imagebuild", "login", "127.0.0.1:5000", "-u", "someone",
                                 "--password-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@pytest.mark.parametrize("delay", [0, 0.02, 0.05, 0.1, 0.2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_is_one_line_and_its_exit_code(tmp_path, signum, delay):
    process = start_waiting_command(tmp_path)
    try:
        time.sleep(delay)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    code, line = EXPECTED[signum]
    assert "Traceback" not in err, err
    assert (process.returncode, err, out) == (code, line + "\n", "")
    assert not (tmp_path / "config.json").exists()


def test_the_signal_handlers_are_given_back_after_an_in_process_run(tmp_path):
    # Tests call main() in-process: it must leave pytest's own Ctrl-C handling as it found it.
    from imagebuild.cli import main as cli_main

    before = {signum: signal.getsignal(signum) for signum in STOP}
    with pytest.raises(SystemExit):
        cli_main.main(["images", "--store", str(tmp_path / "store")])
    assert {signum: signal.getsignal(signum) for signum in STOP} == before



@pytest.mark.parametrize("signum", [None, signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGINT", "SIGTERM"])
def test_the_interrupted_line_gives_the_signal_handlers_back_itself(capsys, signum):
    # Whoever catches the SystemExit of an interrupted command gets its own Ctrl-C handling back: the
    # handlers ignored while the line is written are restored by the failure itself, not by its caller.
    from imagebuild.cli import main as cli_main

    before = {stop: signal.getsignal(stop) for stop in STOP}
    cli_main._Stop.signum = signum
    try:
        with pytest.raises(SystemExit) as ended:
            cli_main._Stop.fail(json_out=False)
    finally:
        cli_main._Stop.signum = None
    assert ended.value.code == (143 if signum == signal.SIGTERM else 130)
    assert capsys.readouterr().err in ("error: interrupted\n", "error: terminated\n")
    assert {stop: signal.getsignal(stop) for stop in STOP} == before
