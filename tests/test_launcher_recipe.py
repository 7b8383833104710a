"""Recipe rules for environments, detection and secrets, and bake's credential warnings:
each mistake is one line naming file:line and key, through the real loader and CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError
from imagebuild.build.layers.app import credential_warnings, looks_like_credentials
from imagebuild.sources.app_tree import TrackedFile
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import Recipe

from conftest import imagebuild
from test_recipe_loader import MINIMAL, NO_GIT


def write(directory: Path, text: str) -> Path:
    path = directory / "imagebuild.yaml"
    path.write_text(MINIMAL + textwrap.dedent(text))
    return path


def error(path: Path) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, context=NO_GIT)
    assert "\n" not in caught.value.one_line()
    return caught.value


def test_a_full_detection_recipe_loads(tmp_path):
    recipe = load_recipe(write(tmp_path, """\
        detect:
          variable: APP_ENV
          default: dev
        environments:
          - name: dev
          - name: prod
            detect: {hostname: "prod-*", file: /etc/prod-marker}
        """), context=NO_GIT)
    assert (recipe.detect.variable, recipe.detect.default) == ("APP_ENV", "dev")
    assert recipe.environments[1].detect.hostname == "prod-*"
    assert recipe.environments[1].detect.file == "/etc/prod-marker"


@pytest.mark.parametrize("text, line, key, fragment", [
    ("detect: {default: staging}\nenvironments:\n  - name: dev\n  - name: prod\n",
     7, "detect.default", "'staging' is not a listed environment"),
    ("detect: {default: dev}\n", 7, "detect.default", "lists no environments"),
    ("detect: {variable: APP-ENV}\n", 7, "detect.variable", "not an environment variable name"),
    ("detect: {variable: LOG_LEVEL}\nenvironments:\n  - name: dev\n    config: {LOG_LEVEL: debug}\n",
     7, "detect.variable", "also a config or secret name"),
    ("environments:\n  - name: prod\n    detect: {file: etc/marker}\n",
     9, "environments[0].detect.file", "must be an absolute path"),
    ("environments:\n  - name: prod\n    detect: {hostname: 'prod *'}\n",
     9, "environments[0].detect.hostname", "not a hostname pattern"),
    ("environments:\n  - name: dev\n    config: {PORT: '9000'}\n",
     9, "environments[0].config.PORT", "set by the image itself"),
    ("environments:\n  - name: dev\n    config: {FEATURE_X: 'on'}\n",
     9, "environments[0].config.FEATURE_X", "declare toggles under features"),
    ("environments:\n  - name: dev\n    features: {newCheckout: true}\n  - name: prod\n"
     "    features: {NEWCHECKOUT: false}\n", 11, "environments[1].features.NEWCHECKOUT", "same toggle"),
    # The names written into the image's files and the launcher's shell lines are checked here only.
    ("environments:\n  - name: dev\n    config: {BAD-NAME: '1'}\n",
     9, "environments[0].config.BAD-NAME", "not an environment variable name"),
    ("environments:\n  - name: dev\n    features: {a-b: true}\n",
     9, "environments[0].features.a-b", "not a feature name"),
    ("environments:\n  - name: dev.x\n", 8, "environments[0].name", "not an environment name"),
    ("detect: {default: qa}\nenvironments:\n  - name: dev\n", 7, "detect.default", "not a listed environment"),
])
def test_detection_and_environment_mistakes(tmp_path, text, line, key, fragment):
    exc = error(write(tmp_path, text))
    assert (exc.line, exc.key) == (line, key), exc.one_line()
    assert fragment in exc.one_line()


@pytest.mark.parametrize("secrets, line, key", [
    ("    secrets: {DATABASE_URL: postgres://u:p@db/app}\n", 9, "environments[0].secrets"),
    ("    secrets:\n      - DATABASE_URL: postgres://u:p@db/app\n", 10, "environments[0].secrets[0]"),
    ("    secrets: [DATABASE_URL=postgres://u:p@db/app]\n", 9, "environments[0].secrets[0]"),
])
def test_a_value_under_secrets_is_refused_with_why(tmp_path, secrets, line, key):
    exc = error(write(tmp_path, "environments:\n  - name: prod\n" + secrets))
    text = exc.one_line()
    assert (exc.line, exc.key) == (line, key), text
    assert "a secret is never baked" in text and "names only" in text and "run time" in text
    assert "u:p@db" not in text  # the value itself is not repeated


def test_the_cli_reports_a_secret_value_as_one_line_with_exit_code_2(tmp_path):
    path = write(tmp_path, "environments:\n  - name: prod\n    secrets: {API_KEY: abc123}\n")
    done = imagebuild("bake", path.parent, "--store", tmp_path / "store")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "abc123" not in done.stderr and "secrets lists names only" in done.stderr


@pytest.mark.parametrize("path, flagged", [
    (".env", True), ("config/.env.production", True), (".env.example", False), (".env.sample", False),
    ("deploy/id_rsa", True), ("deploy/id_rsa.pub", False), ("id_ed25519", True), ("certs/server.key", True),
    ("certs/ca.pem", True), ("client.p12", True), ("keystore.jks", True), (".netrc", True),
    ("app.py", False), ("keys.py", False), ("monkey.txt", False), ("environment.md", False),
])
def test_files_that_look_like_credentials(path, flagged):
    assert looks_like_credentials(path) is flagged


def test_the_warning_names_the_files_where_they_land_in_the_image():
    recipe = Recipe(name="x")
    files = [TrackedFile(f"svc/{name}", "100644", "0" * 40, 1)
             for name in ("app.py", ".env", "a.pem", "b.pem", "c.pem", "d.pem", "e.key")]
    assert credential_warnings(recipe, "svc", files[:1]) == []
    [line] = credential_warnings(recipe, "svc", files)
    assert "/app/.env, /app/a.pem, /app/b.pem, /app/c.pem, /app/d.pem and 1 more" in line
    assert "app.exclude" in line
