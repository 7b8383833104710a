"""Entry point: runs the typer app and turns every failure into one line and an exit code.

CI logs are read line by line, so usage mistakes (unknown option, missing
argument) are printed as one `error:` line too, not as click's usage block.
With `--json`, a failure also prints one JSON object on stdout, so a script
that parses stdout always gets exactly one object.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import typer

from imagebuild.errors import ImageBuildError

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_exceptions

ClickException, UsageError = click_exceptions.ClickException, click_exceptions.UsageError
# click before 8.2 prints the help itself for no_args_is_help; `except ()` then catches nothing.
NoArgsIsHelpError = getattr(click_exceptions, "NoArgsIsHelpError", ())

INTERRUPTED = 130
TERMINATED = 128 + signal.SIGTERM
# Set to get the traceback of an unexpected failure instead of its one line.
DEBUG_VARIABLE = "IMAGEBUILD_DEBUG"


def _wants_json(args: list[str]) -> bool:
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _fail(line: str, exit_code: int, kind: str, json_out: bool) -> None:
    line = " ".join(line.split())
    if json_out:
        sys.stdout.write(json.dumps({"error": {"message": line, "exit_code": exit_code, "kind": kind}},
                                    sort_keys=True) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"error: {line}\n")
    sys.exit(exit_code)


class _Stop:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so temp files are removed on the way out."""

    terminated = False

    @classmethod
    def on_sigterm(cls, _signum, _frame) -> None:
        cls.terminated = True
        raise KeyboardInterrupt

    @classmethod
    def fail(cls, json_out: bool) -> None:
        if cls.terminated:
            _fail("terminated", TERMINATED, "Terminated", json_out)
        _fail("interrupted", INTERRUPTED, "Interrupted", json_out)


def _usage_line(exc: UsageError) -> str:
    message = exc.format_message().rstrip(".")
    if exc.ctx is not None:
        message = f"{message} (see '{exc.ctx.command_path} --help')"
    return message


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    _Stop.terminated = False
    previous = signal.signal(signal.SIGTERM, _Stop.on_sigterm)
    try:
        _run(args, _wants_json(args))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: list[str], json_out: bool) -> None:
    from imagebuild.cli.app import app

    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="imagebuild", standalone_mode=False)
    except ImageBuildError as exc:
        _fail(exc.one_line(), exc.exit_code, type(exc).__name__, json_out)
    except NoArgsIsHelpError as exc:
        sys.stderr.write(exc.format_message() + "\n")
        sys.exit(exc.exit_code)
    except UsageError as exc:
        _fail(_usage_line(exc), exc.exit_code, "UsageError", json_out)
    except ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, type(exc).__name__, json_out)
    except (typer.Abort, KeyboardInterrupt):
        _Stop.fail(json_out)
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (a bug: set {DEBUG_VARIABLE}=1 for the traceback "
              f"and report it)", 1, type(exc).__name__, json_out)
    # typer turns Ctrl-C into exit code 130 without a word.
    if code == INTERRUPTED:
        _Stop.fail(json_out)
    sys.exit(code if isinstance(code, int) else 0)
