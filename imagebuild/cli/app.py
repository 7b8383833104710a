"""The typer application; each command lives in its own module and registers here."""

from __future__ import annotations

import typer

# Plain click help and errors, no rich boxes: they read well in CI logs and in a terminal.
PLAIN = {"rich_markup_mode": None}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, **PLAIN,
                  help="Bake one reproducible image per commit and promote it by digest.")


def _register() -> None:
    # Imported for their @app.command side effects; the order is the order of --help.
    # Every invocation loads all of them, so each keeps its library imports inside its command:
    # `imagebuild images` need not load httpx, jinja2 or the bake machinery.
    from imagebuild.cli import init_cmd, bake_cmd, lock_cmd  # noqa: F401
    from imagebuild.cli import images_cmd, image_cmd, export_cmd  # noqa: F401
    from imagebuild.cli import dockerfile_cmd  # noqa: F401
    from imagebuild.cli import rm_cmd, gc_cmd  # noqa: F401
    from imagebuild.cli import run_cmd  # noqa: F401
    from imagebuild.cli import push_cmd, pull_cmd, promote_cmd, status_cmd, history_cmd, login_cmd  # noqa: F401
    from imagebuild.cli import deploy_cmd  # noqa: F401
    from imagebuild.cli import disk_cmd  # noqa: F401


_register()
