"""Entry point: runs the typer app and turns every failure into one line and an exit code.

CI logs are read line by line, so usage mistakes (unknown option, missing
argument) are printed as one `error:` line too, not as click's usage block.
With `--json`, a failure also prints one JSON object on stdout, so a script
that parses stdout always gets exactly one object.
"""

from __future__ import annotations

# Only what the interpreter has loaded anyway: a signal must find its handler installed before
# the slow imports (typer, click, the commands) start, so they are made inside main().
import errno
import gc
import os
import signal
import sys

INTERRUPTED = 130
TERMINATED = 128 + signal.SIGTERM
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# Set to get the traceback of an unexpected failure instead of its one line.
DEBUG_VARIABLE = "IMAGEBUILD_DEBUG"


def _wants_json(args: list[str]) -> bool:
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _fail(line: str, exit_code: int, kind: str, json_out: bool) -> None:
    import json

    if _Stop.signum is not None and kind not in _Stop.KINDS:
        # The signal's exception was swallowed on its way (CPython ignores an exception raised in a
        # weakref callback or __del__), and the command went on to fail: it was still interrupted.
        _Stop.fail(json_out)
    line = " ".join(line.split())
    if json_out:
        sys.stdout.write(json.dumps({"error": {"message": line, "exit_code": exit_code, "kind": kind}},
                                    sort_keys=True) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"error: {line}\n")
    sys.exit(exit_code)


class Stopped(KeyboardInterrupt):
    """What SIGINT and SIGTERM raise, so the command unwinds and temp files are removed on the way out.

    A subclass, not KeyboardInterrupt itself: CPython remembers a plain KeyboardInterrupt that ended an
    `exec` of a string (a dataclass being made during an import) and then ends the process with SIGINT,
    whatever exit code was asked for."""


class _Stop:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C."""

    KINDS = ("Interrupted", "Terminated")
    signum: int | None = None       # the stop signal received, if any

    @classmethod
    def on_signal(cls, signum, _frame) -> None:
        cls.signum = signum
        raise Stopped

    @classmethod
    def on_unraisable(cls, unraisable) -> None:
        """CPython swallows an exception raised in a weakref callback or __del__, and so a signal's
        Stopped when the handler ran there (an import's module lock being freed): send the signal
        again, to land where it unwinds, instead of printing a traceback and going on. It is sent
        from another thread a moment later, so that its handler does not run inside this hook."""
        if isinstance(unraisable.exc_value, Stopped) and cls.signum is not None:
            import threading

            again = threading.Timer(0.01, os.kill, (os.getpid(), cls.signum))
            again.daemon = True
            again.start()
            return
        sys.__unraisablehook__(unraisable)

    @classmethod
    def fail(cls, json_out: bool) -> None:
        # A second Ctrl-C while the line is written must not turn it into a traceback; the handlers
        # are given back once it is out, so a caller that goes on (a test, an embedding program)
        # finds its Ctrl-C working again whoever catches the SystemExit.
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
        try:
            if cls.signum == signal.SIGTERM:
                _fail("terminated", TERMINATED, "Terminated", json_out)
            _fail("interrupted", INTERRUPTED, "Interrupted", json_out)
        finally:
            for signum, handler in previous.items():
                if handler is not None:     # None: set outside Python, cannot be put back
                    signal.signal(signum, handler)


def _usage_line(exc) -> str:
    message = exc.format_message().rstrip(".")
    if exc.ctx is not None:
        message = f"{message} (see '{exc.ctx.command_path} --help')"
    return message


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    json_out = _wants_json(args)
    # Only a whole process (the console script, `python -m imagebuild`) may end without tearing down,
    # or leave its garbage to the end.
    _Quick.allowed = argv is None
    if _Quick.allowed:
        gc.disable()
    _Stop.signum = None
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        # A signal the parent ignores stays ignored (`cmd &` in a script ignores SIGINT on purpose).
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _Stop.on_signal)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _Stop.on_unraisable
    try:
        try:
            # A parent may start us with these blocked; with the handlers in place they may come.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            _run(args, json_out)
        except KeyboardInterrupt:   # during start-up, before _run's own handling is in place
            _Stop.fail(json_out)
    finally:
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            if handler is not None:     # None: set outside Python, cannot be put back
                signal.signal(signum, handler)


def _run(args: list[str], json_out: bool) -> None:
    from imagebuild.cli.fast_path import runner

    command = runner(args)
    quick = command is not None and args[0] in QUICK_EXIT
    if not quick and _Quick.allowed:
        if command is not None and args[0] in COLLECT_AFTER_IMPORTS:
            from imagebuild.cli.helpers import CollectorHeld

            CollectorHeld.held = True   # the command turns it on once its imports are done
        else:
            gc.enable()     # a command that may run long or build much collects its garbage as it goes
    if command is not None:
        _run_fast(command, json_out, quick_exit=quick)
    _run_typer(args, json_out)


def _run_fast(command, json_out: bool, quick_exit: bool = False) -> None:
    """A simple everyday command line, without typer: every outcome ends as typer's would."""
    from imagebuild.errors import ImageBuildError

    try:
        command()
    except ImageBuildError as exc:
        _fail(exc.one_line(), exc.exit_code, type(exc).__name__, json_out)
    except EOFError:
        sys.stderr.write("\n")     # click's Abort on end of input
        _Stop.fail(json_out)
    except KeyboardInterrupt:
        _Stop.fail(json_out)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            # The reader went away: end quietly with 1, as click does, without flushing into the closed pipe.
            sys.stdout = _QuietFlush(sys.stdout)
            sys.stderr = _QuietFlush(sys.stderr)
            sys.exit(1)
        if exc.errno == errno.ENAMETOOLONG:
            _path_too_long(exc, json_out)
        _unexpected(exc, json_out)
    except Exception as exc:
        _unexpected(exc, json_out)
    if _Stop.signum is not None:
        _Stop.fail(json_out)
    if quick_exit:
        _Quick.exit_now()
    sys.exit(0)


# Commands that write nothing of their own but through closed files (the recipe cache is written
# atomically), so ending them without the interpreter's tear-down loses nothing. Short, and making
# little garbage, they also run without the cyclic garbage collector: its passes over the objects
# their imports make (httpx's above all) cost ~6-8 ms of CPU and would free almost nothing.
QUICK_EXIT = frozenset({"images", "status", "history"})
# Commands that import much before their work (bake: the build, the SBOM, the registry client) and
# call helpers.collect_from_here() where the work starts: the collector is off only until then.
COLLECT_AFTER_IMPORTS = frozenset({"bake"})


class _Quick:
    """Ending a finished command at once: the interpreter's tear-down of the ~300 modules that httpx and
    the command loaded costs ~8 ms of CPU, more than a `history`'s own work, and frees nothing the
    system would not. What the tear-down does that matters is still done: exit functions run
    (weakref finalizers, logging), threads are waited for, and stdout and stderr are flushed. It is
    not taken where a flush fails (the normal exit reports it)."""

    allowed = False

    @classmethod
    def exit_now(cls) -> None:
        if not cls.allowed:
            return
        import atexit
        import threading

        # As the normal exit does: wait for the threads that are not daemons (a read pool's workers
        # ending after their last read).
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()

        atexit._run_exitfuncs()
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):
            return
        os._exit(0)


class _QuietFlush:
    """A stream whose flush ignores a broken pipe (click's PacifyFlushWrapper)."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


def _run_typer(args: list[str], json_out: bool) -> None:
    import typer

    from imagebuild.cli.app import app
    from imagebuild.errors import ImageBuildError

    try:  # typer 0.2x carries its own copy of click
        from typer._click import exceptions as click_exceptions
    except ImportError:  # older typer runs on click itself
        from click import exceptions as click_exceptions
    usage_error = click_exceptions.UsageError
    # click before 8.2 prints the help itself for no_args_is_help; `except ()` then catches nothing.
    no_args_is_help = getattr(click_exceptions, "NoArgsIsHelpError", ())

    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="imagebuild", standalone_mode=False)
    except ImageBuildError as exc:
        _fail(exc.one_line(), exc.exit_code, type(exc).__name__, json_out)
    except no_args_is_help as exc:
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(exc.exit_code)
    except usage_error as exc:
        _fail(_usage_line(exc), exc.exit_code, "UsageError", json_out)
    except click_exceptions.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, type(exc).__name__, json_out)
    except (typer.Abort, KeyboardInterrupt):
        _Stop.fail(json_out)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            _path_too_long(exc, json_out)
        _unexpected(exc, json_out)
    except Exception as exc:
        _unexpected(exc, json_out)
    # typer turns Ctrl-C into exit code 130 without a word; a swallowed signal still ends it so.
    if code == INTERRUPTED or _Stop.signum is not None:
        _Stop.fail(json_out)
    sys.exit(code if isinstance(code, int) else 0)


def _path_too_long(exc: OSError, json_out: bool) -> None:
    """A path given on the command line that the file system cannot hold is the user's input, wherever
    in the code the file system says so."""
    from imagebuild.errors import quoted

    where = f" {quoted(os.fsdecode(exc.filename))}" if isinstance(exc.filename, (str, bytes)) else ""
    _fail(f"path{where} is too long for the file system ({exc.strerror})", 2, "UserError", json_out)


def _unexpected(exc: Exception, json_out: bool) -> None:
    if os.environ.get(DEBUG_VARIABLE):
        raise exc
    _fail(f"unexpected {type(exc).__name__}: {exc} (a bug: set {DEBUG_VARIABLE}=1 for the traceback "
          f"and report it)", 1, type(exc).__name__, json_out)
