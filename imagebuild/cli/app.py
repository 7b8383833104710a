"""The typer application; each command lives in its own module and registers here."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Bake one reproducible image per commit, promote it, deploy it.")


def _register() -> None:
    # Imported for their @app.command side effects.
    from imagebuild.cli import export_cmd, images_cmd  # noqa: F401
    from imagebuild.cli import init_cmd  # noqa: F401
    from imagebuild.cli import history_cmd, login_cmd, promote_cmd, pull_cmd, push_cmd, status_cmd  # noqa: F401
    from imagebuild.cli import image_cmd  # noqa: F401
    from imagebuild.cli import bake_cmd, lock_cmd  # noqa: F401


_register()
