"""The in-image launcher, run by a real POSIX shell (dash when present) over generated config files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError
from imagebuild.launcher import config_files, feature_variable, launcher_script
from imagebuild.recipe.model import Environment, Recipe

SHELL = shutil.which("dash") or shutil.which("sh")

RECIPE = Recipe(name="hello", environments=(
    Environment("dev", config={"LOG_LEVEL": "debug", "GREETING": "it's \"quoted\" $HOME `x`"},
                features={"new-checkout": True, "dark_mode": False}),
    Environment("prod", config={"LOG_LEVEL": "info"}, features={"new-checkout": False},
                secrets=("DATABASE_URL", "API_KEY")),
))


@pytest.fixture
def image_root(tmp_path) -> Path:
    for path, content in config_files(RECIPE).items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    launcher = tmp_path / "launch.sh"
    launcher.write_bytes(launcher_script())
    return tmp_path


def launch(root: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "IMAGEBUILD_CONFIG_DIR": str(root / "etc/imagebuild")}
    return subprocess.run([SHELL, str(root / "launch.sh"), *argv], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def printed_env(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.split("\0") if "=" in line)


def test_the_first_environment_is_the_default(image_root):
    env = printed_env(launch(image_root, {}, "env", "-0"))
    assert env["IMAGEBUILD_ENV"] == "dev"
    assert env["LOG_LEVEL"] == "debug"
    assert env["GREETING"] == "it's \"quoted\" $HOME `x`"
    assert env["FEATURE_NEW_CHECKOUT"] == "true"
    assert env["FEATURE_DARK_MODE"] == "false"


def test_imagebuild_env_selects_an_environment_and_secrets_pass_through(image_root):
    env = printed_env(launch(image_root, {"IMAGEBUILD_ENV": "prod", "DATABASE_URL": "postgres://db",
                                          "API_KEY": "k"}, "env", "-0"))
    assert env["LOG_LEVEL"] == "info"
    assert env["FEATURE_NEW_CHECKOUT"] == "false"
    assert env["DATABASE_URL"] == "postgres://db"
    assert "GREETING" not in env


def test_a_value_set_at_run_time_wins_over_the_baked_one(image_root):
    env = printed_env(launch(image_root, {"LOG_LEVEL": "warning", "FEATURE_NEW_CHECKOUT": "false"}, "env", "-0"))
    assert env["LOG_LEVEL"] == "warning"
    assert env["FEATURE_NEW_CHECKOUT"] == "false"


def test_a_missing_secret_stops_the_start_with_one_line(image_root):
    result = launch(image_root, {"IMAGEBUILD_ENV": "prod", "API_KEY": ""}, "echo", "started")
    assert result.returncode == 64
    assert "started" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "DATABASE_URL" in lines[0] and "API_KEY" in lines[0] and "prod" in lines[0]


def test_an_unknown_environment_is_named_with_the_known_ones(image_root):
    result = launch(image_root, {"IMAGEBUILD_ENV": "staging"}, "true")
    assert result.returncode == 64
    assert "staging" in result.stderr and "dev prod" in result.stderr
    assert launch(image_root, {"IMAGEBUILD_ENV": "../etc/passwd"}, "true").returncode == 64


def test_the_server_command_is_execed_with_its_arguments(image_root):
    result = launch(image_root, {}, "sh", "-c", 'echo "$0 $1 $$"', "a b", "c")
    assert result.returncode == 0
    assert result.stdout.startswith("a b c ")


def test_a_recipe_without_environments_gets_one_default():
    files = config_files(Recipe(name="hello"))
    assert files["etc/imagebuild/environments"] == b"default\n"
    assert "etc/imagebuild/env/default.sh" in files


def test_bad_variable_names_are_recipe_errors():
    with pytest.raises(RecipeError, match="not a valid variable name"):
        config_files(Recipe(name="x", environments=(Environment("dev", config={"BAD-NAME": "1"}),)))
    with pytest.raises(RecipeError, match="both become"):
        config_files(Recipe(name="x", environments=(Environment("dev", features={"a-b": True, "a_b": False}),)))


def test_feature_names_become_variable_names():
    assert feature_variable("new-checkout") == "NEW_CHECKOUT"
    assert feature_variable("Beta.UI") == "BETA_UI"
