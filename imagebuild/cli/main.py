"""Entry point: runs the typer app and turns ImageBuildError into one line and an exit code."""

from __future__ import annotations

import sys

from imagebuild.errors import ImageBuildError


def main(argv: list[str] | None = None) -> None:
    from imagebuild.cli.app import app

    try:
        # Standalone mode lets click print usage errors itself, with exit code 2.
        app(args=argv, prog_name="imagebuild")
    except ImageBuildError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
