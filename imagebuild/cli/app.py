"""The typer application: every command is registered here, in the order `--help` lists them.

Each command lives in its own module (`*_cmd.py`), which imports only cli/common.py and keeps its
library imports inside the command, so `imagebuild images` need not load httpx, jinja2 or the bake
machinery: every invocation imports all the command modules.
"""

from __future__ import annotations

import typer

from imagebuild.cli import (bake_cmd, deploy_cmd, disk_cmd, dockerfile_cmd, export_cmd, gc_cmd, history_cmd, image_cmd,
                            images_cmd, init_cmd, keygen_cmd, lock_cmd, login_cmd, manifests_cmd, promote_cmd,
                            provenance_cmd, pull_cmd, push_cmd, reproduce_cmd, rm_cmd, run_cmd, sbom_cmd, sign_cmd,
                            status_cmd, verify_cmd)
from imagebuild.cli.common import PLAIN

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, **PLAIN,
                  help="Bake one reproducible image per commit and promote it by digest.")

app.command("init")(init_cmd.init)
app.command("bake")(bake_cmd.bake_command)
app.command("lock")(lock_cmd.lock_command)
app.command("images")(images_cmd.images)
app.command("export")(export_cmd.export)
app.command("sbom")(sbom_cmd.sbom_command)
app.command("dockerfile")(dockerfile_cmd.dockerfile_command)
app.command("rm")(rm_cmd.rm)
app.command("gc")(gc_cmd.gc)
app.command("run")(run_cmd.run_command)
app.command("reproduce")(reproduce_cmd.reproduce_command)
app.command("promote")(promote_cmd.promote_command)
app.command("push")(push_cmd.push)
app.command("pull")(pull_cmd.pull)
app.command("deploy")(deploy_cmd.deploy_command)
app.command("manifests")(manifests_cmd.manifests_command)
app.command("status")(status_cmd.status_command)
app.command("history")(history_cmd.history_command)
app.command("login")(login_cmd.login)
app.command("keygen")(keygen_cmd.keygen)
app.command("sign")(sign_cmd.sign)
app.command("verify")(verify_cmd.verify)
app.command("provenance")(provenance_cmd.provenance)
app.add_typer(image_cmd.image_app, name="image")
app.add_typer(disk_cmd.disk_app, name="disk")
