"""The in-image launcher, run by real POSIX shells (dash, and busybox sh as a minimal image
would have it) over the files bake generates, and the Python helper apps import."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from imagebuild.build.launcher_files import config_files, feature_variable, server_script
from imagebuild.launcher.assets import launcher_script, runtime_module
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import DetectRule, DetectSpec, Environment, Recipe
from imagebuild.recipe.templates import render_server_files

from test_recipe_loader import NO_GIT

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHELLS = [pytest.param([shutil.which("dash")], id="dash")]
if shutil.which("busybox"):
    SHELLS.append(pytest.param([shutil.which("busybox"), "sh"], id="busybox"))

GREETING = "it's \"quoted\" $HOME `x` back\\slash\ttab\nnewline \x01 é"
RECIPE = Recipe(name="hello", environments=(
    Environment("dev", config={"LOG_LEVEL": "debug", "GREETING": GREETING},
                features={"new-checkout": True, "dark_mode": False}),
    Environment("test", config={"LOG_LEVEL": "info"}, detect=DetectRule(file="/nonexistent/marker")),
    Environment("prod", config={"LOG_LEVEL": "info"}, features={"new-checkout": False},
                secrets=("DATABASE_URL", "API_KEY"), detect=DetectRule(hostname="no-such-host-*")),
))


def make_root(tmp_path: Path, recipe: Recipe, server: bytes | None = None) -> Path:
    root = tmp_path / "image"
    for path, content in config_files(recipe).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    if server is not None:
        (root / "etc/imagebuild/server.sh").write_bytes(server)
    (root / "launch.sh").write_bytes(launcher_script())
    return root


@pytest.fixture(params=SHELLS)
def shell(request) -> list[str]:
    return request.param


@pytest.fixture
def image_root(tmp_path) -> Path:
    return make_root(tmp_path, RECIPE, server_script("gunicorn", None, 8000))


def launch(shell: list[str], root: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "IMAGEBUILD_CONFIG_DIR": str(root / "etc/imagebuild"),
            "IMAGEBUILD_RUN_DIR": str(root / "run")}
    return subprocess.run([*shell, str(root / "launch.sh"), *argv], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def started(result: subprocess.CompletedProcess) -> tuple[dict[str, str], str]:
    """The environment the server command saw, and the launcher's start-up line."""
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imagebuild-launch: environment="), result.stderr
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item), lines[0]


def refused(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 64, (result.stdout, result.stderr)
    assert "started" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- picking the environment ---------------------------------------------------

def test_without_a_default_an_undetected_environment_is_refused(shell, image_root):
    line = refused(launch(shell, image_root, {}, "echo", "started"))
    assert "no environment named or detected" in line
    assert "dev, test, prod" in line and "IMAGEBUILD_ENV" in line and "detect.default" in line


def test_the_variable_names_the_environment(shell, image_root):
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "test"}, "env", "-0"))
    assert env["IMAGEBUILD_ENV"] == "test" and env["LOG_LEVEL"] == "info"
    assert "GREETING" not in env
    assert "environment=test (from IMAGEBUILD_ENV)" in line


def test_an_unknown_or_malformed_environment_is_refused_with_the_known_ones(shell, image_root):
    line = refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "staging"}, "echo", "started"))
    assert "unknown environment 'staging'" in line and "dev, test, prod" in line
    assert "not an environment name" in refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "../etc/passwd"}, "true"))


def test_detect_rules_hostname_and_file_then_the_default(shell, tmp_path):
    marker = tmp_path / "marker"
    recipe = Recipe(name="hello", detect=DetectSpec(variable="APP_ENV", default="dev"), environments=(
        Environment("dev"),
        Environment("test", detect=DetectRule(file=str(marker))),
        Environment("prod", detect=DetectRule(hostname=socket.gethostname()[:2] + "*", file=str(marker))),
        Environment("edge", detect=DetectRule(hostname=socket.gethostname())),
    ))
    root = make_root(tmp_path, recipe)
    env, line = started(launch(shell, root, {}, "env", "-0"))
    assert env["APP_ENV"] == "edge" and f"environment=edge (detected: hostname {socket.gethostname()})" in line
    marker.write_text("")
    env, line = started(launch(shell, root, {}, "env", "-0"))
    assert env["APP_ENV"] == "test" and "detected: file" in line  # list order: the first rule that holds
    env, line = started(launch(shell, root, {"APP_ENV": "prod"}, "env", "-0"))
    assert env["APP_ENV"] == "prod" and "from APP_ENV" in line
    assert "IMAGEBUILD_ENV" not in env
    marker.unlink()
    (root / "etc/imagebuild/detect.sh").write_text((root / "etc/imagebuild/detect.sh").read_text()
                                                   .replace(f"rule edge {socket.gethostname()!r}", "rule edge 'x'")
                                                   .replace(f"rule edge '{socket.gethostname()}'", "rule edge 'x'"))
    env, line = started(launch(shell, root, {}, "env", "-0"))
    assert env["APP_ENV"] == "dev" and "environment=dev (default)" in line


def test_a_recipe_without_environments_runs_as_its_one_default(shell, tmp_path):
    root = make_root(tmp_path, Recipe(name="hello"))
    env, line = started(launch(shell, root, {}, "env", "-0"))
    assert env["IMAGEBUILD_ENV"] == "default"
    assert json.loads((root / "run/config.json").read_text()) == {}


# -- config and toggles --------------------------------------------------------

def test_config_and_toggles_are_exported_and_written_as_json(shell, image_root):
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev"}, "env", "-0"))
    assert env["GREETING"] == GREETING and env["LOG_LEVEL"] == "debug"
    assert env["FEATURE_NEW_CHECKOUT"] == "on" and env["FEATURE_DARK_MODE"] == "off"
    assert env["IMAGEBUILD_RUN_DIR"] == str(image_root / "run")
    assert json.loads((image_root / "run/config.json").read_text()) == {"GREETING": GREETING, "LOG_LEVEL": "debug"}
    assert json.loads((image_root / "run/features.json").read_text()) == {"new-checkout": True, "dark_mode": False}
    assert "features=dark_mode:off,new-checkout:on" in line and "overrides=none" in line


def test_every_environment_knows_every_toggle_off_unless_listed(shell, image_root):
    env, _ = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "test"}, "env", "-0"))
    assert env["FEATURE_NEW_CHECKOUT"] == "off" and env["FEATURE_DARK_MODE"] == "off"
    assert json.loads((image_root / "run/features.json").read_text()) == {"new-checkout": False, "dark_mode": False}


@pytest.mark.parametrize("given, state", [("off", "off"), ("OFF", "off"), ("false", "off"), ("0", "off"),
                                          ("on", "on"), ("True", "on"), ("1", "on")])
def test_a_feature_variable_at_start_overrides_one_toggle(shell, image_root, given, state):
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "FEATURE_NEW_CHECKOUT": given,
                                                   "LOG_LEVEL": "warning"}, "env", "-0"))
    assert env["FEATURE_NEW_CHECKOUT"] == state and env["FEATURE_DARK_MODE"] == "off"
    assert env["LOG_LEVEL"] == "warning"
    features = json.loads((image_root / "run/features.json").read_text())
    assert features == {"new-checkout": state == "on", "dark_mode": False}
    assert json.loads((image_root / "run/config.json").read_text())["LOG_LEVEL"] == "warning"
    assert "overrides=LOG_LEVEL,FEATURE_NEW_CHECKOUT" in line
    assert "warning" not in line  # names, never values


def test_a_feature_variable_no_toggle_answers_to_is_named_as_unknown(shell, image_root):
    _, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "FEATURE_NEW_CHEKOUT": "on"}, "env", "-0"))
    assert line.endswith(" unknown-toggles=FEATURE_NEW_CHEKOUT")
    _, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "FEATURE_DARK_MODE": "on"}, "env", "-0"))
    assert "unknown-toggles" not in line


def test_a_feature_value_that_is_no_toggle_is_refused(shell, image_root):
    line = refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "FEATURE_DARK_MODE": "maybe"}, "echo", "started"))
    assert "FEATURE_DARK_MODE='maybe'" in line and "on or off" in line


# -- secrets ------------------------------------------------------------------

def test_a_missing_secret_stops_the_start_naming_it(shell, image_root):
    line = refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "prod", "API_KEY": ""}, "echo", "started"))
    assert "API_KEY, DATABASE_URL" in line and "'prod'" in line and "NAME_FILE" in line


def test_secrets_come_from_variables_or_files_and_are_never_printed(shell, image_root, tmp_path):
    secret_file = tmp_path / "db"
    secret_file.write_text("postgres://user:hunter2@db/app\n")
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "prod", "API_KEY": "k3y-value",
                                                   "DATABASE_URL_FILE": str(secret_file)}, "env", "-0"))
    assert env["DATABASE_URL"] == "postgres://user:hunter2@db/app" and env["API_KEY"] == "k3y-value"
    assert "secrets=API_KEY,DATABASE_URL(file)" in line
    assert "hunter2" not in line and "k3y-value" not in line
    for name in ("config.json", "features.json"):
        assert "hunter2" not in (image_root / "run" / name).read_text()


def test_a_secret_given_twice_or_from_an_unreadable_file_is_refused(shell, image_root, tmp_path):
    both = {"IMAGEBUILD_ENV": "prod", "API_KEY": "k", "DATABASE_URL": "x", "DATABASE_URL_FILE": "/etc/hostname"}
    assert "both DATABASE_URL and DATABASE_URL_FILE" in refused(launch(shell, image_root, both, "true"))
    gone = {"IMAGEBUILD_ENV": "prod", "API_KEY": "k", "DATABASE_URL_FILE": str(tmp_path / "nope")}
    assert "not a readable file" in refused(launch(shell, image_root, gone, "true"))


# -- the machine: port, workers, run directory -----------------------------------

def test_workers_follow_the_cpus_unless_fixed_or_given(shell, image_root, tmp_path):
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "IMAGEBUILD_CPUS": "3"}, "env", "-0"))
    assert env["WEB_CONCURRENCY"] == "7" and "cpus=3 workers=7" in line
    env, line = started(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "WEB_CONCURRENCY": "2"}, "env", "-0"))
    assert env["WEB_CONCURRENCY"] == "2" and "WEB_CONCURRENCY" in line.split("overrides=")[1]
    cpus = int(env["IMAGEBUILD_CPUS"])
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    fixed = make_root(tmp_path / "fixed", RECIPE, server_script("uvicorn", 4, 8000))
    env, _ = started(launch(shell, fixed, {"IMAGEBUILD_ENV": "dev"}, "env", "-0"))
    assert env["WEB_CONCURRENCY"] == "4"
    nginx = make_root(tmp_path / "nginx", RECIPE, server_script("nginx", None, 8080))
    env, line = started(launch(shell, nginx, {"IMAGEBUILD_ENV": "dev"}, "env", "-0"))
    assert "WEB_CONCURRENCY" not in env and "workers=" not in line
    assert "not a whole number" in refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "WEB_CONCURRENCY": "x"}, "true"))
    assert "not a TCP port" in refused(launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "PORT": "70000"}, "true"))


def test_workers_from_the_environment_config_are_no_override(shell, tmp_path):
    recipe = Recipe(name="hello", environments=(Environment("dev", config={"WEB_CONCURRENCY": "2"}),))
    root = make_root(tmp_path, recipe, server_script("gunicorn", None, 8000))
    env, line = started(launch(shell, root, {"IMAGEBUILD_ENV": "dev"}, "env", "-0"))
    assert env["WEB_CONCURRENCY"] == "2" and "workers=2" in line and "overrides=none" in line
    env, line = started(launch(shell, root, {"IMAGEBUILD_ENV": "dev", "WEB_CONCURRENCY": "5"}, "env", "-0"))
    assert env["WEB_CONCURRENCY"] == "5" and "workers=5" in line
    assert line.split("overrides=")[1].split()[0] == "WEB_CONCURRENCY"  # named once


def test_port_moves_the_marked_listen_line_of_a_server_that_cannot_read_it(shell, tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text("server {\n    listen 8080; # imagebuild:port\n    listen [::1]:8080; # imagebuild:port\n"
                    "    set $x 8080;\n}\n")
    root = make_root(tmp_path, RECIPE, server_script("nginx", None, 8080, str(conf)))
    same = launch(shell, root, {"IMAGEBUILD_ENV": "dev", "PORT": "8080"}, "echo", "nginx", "-c", str(conf))
    assert same.returncode == 0 and same.stdout.split() == ["nginx", "-c", str(conf)]
    moved = launch(shell, root, {"IMAGEBUILD_ENV": "dev", "PORT": "9090"}, "echo", "nginx", "-c", str(conf))
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.split() == ["nginx", "-c", str(root / "run/nginx.conf")]
    text = (root / "run/nginx.conf").read_text()
    assert "listen 9090; # imagebuild:port" in text and "listen [::1]:9090; # imagebuild:port" in text
    assert "set $x 8080;" in text


def test_log_level_sets_the_level_of_nginx_error_log(shell, tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_bytes(render_server_files(load_recipe(EXAMPLES / "static-site", context=NO_GIT))
                     ["/etc/imagebuild/nginx.conf"][0])
    root = make_root(tmp_path, RECIPE, server_script("nginx", None, 8080, str(conf), "warn"))
    base = {"IMAGEBUILD_ENV": "test", "PORT": "8080"}  # test's config sets LOG_LEVEL=info; a given one wins
    for level in ("WARNING", "chatty"):  # nginx's baked level, and a value nginx has no word for
        result = launch(shell, root, {**base, "LOG_LEVEL": level}, "echo", "nginx", "-c", str(conf))
        assert result.returncode == 0 and result.stdout.split() == ["nginx", "-c", str(conf)], (level, result)
    moved = launch(shell, root, {**base, "LOG_LEVEL": "critical", "PORT": "9090"}, "echo", "nginx", "-c", str(conf))
    assert moved.stdout.split() == ["nginx", "-c", str(root / "run/nginx.conf")], moved.stderr
    text = (root / "run/nginx.conf").read_text()
    assert "error_log stderr crit; # imagebuild:log-level" in text and "listen 9090; # imagebuild:port" in text
    # the environment's own LOG_LEVEL (test: info) moves it too, with the port left as baked
    result = launch(shell, root, {"IMAGEBUILD_ENV": "test"}, "echo", "nginx", "-c", str(conf))
    assert result.stdout.split() == ["nginx", "-c", str(root / "run/nginx.conf")], result.stderr
    text = (root / "run/nginx.conf").read_text()
    assert "error_log stderr info; # imagebuild:log-level" in text and "listen 8080; # imagebuild:port" in text
    assert text.replace("stderr info;", "stderr warn;") == conf.read_text()  # nothing else changed
    checked = subprocess.run(["nginx", "-t", "-e", "stderr", "-c", str(root / "run/nginx.conf")],
                             capture_output=True, text=True)  # nginx: scripts/setup-system.sh
    assert checked.returncode == 0, checked.stderr


def test_the_run_directory_falls_back_when_the_first_is_not_writable(shell, image_root, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    result = launch(shell, image_root, {"IMAGEBUILD_ENV": "dev", "IMAGEBUILD_RUN_DIR": str(blocked)}, "true")
    assert "IMAGEBUILD_RUN_DIR" in refused(result)  # an explicit choice is kept or refused, never ignored


def test_the_server_command_is_execed_with_its_arguments(shell, image_root):
    result = launch(shell, image_root, {"IMAGEBUILD_ENV": "dev"}, "sh", "-c", 'echo "$0 $1 $$"', "a b", "c")
    assert result.returncode == 0
    assert result.stdout.startswith("a b c ")


# -- baked files and recipe rules ------------------------------------------------

def test_a_recipe_without_environments_gets_one_default():
    files = config_files(Recipe(name="hello"))
    assert files["etc/imagebuild/environments"] == b"default\n"
    assert "etc/imagebuild/env/default.sh" in files
    assert b"default='default'" in files["etc/imagebuild/detect.sh"]


def test_feature_names_become_variable_names():
    assert feature_variable("new-checkout") == "NEW_CHECKOUT"
    assert feature_variable("Beta.UI") == "BETA_UI"


# -- the Python helper ---------------------------------------------------------

@pytest.fixture
def runtime(tmp_path, monkeypatch):
    path = tmp_path / "imagebuild_runtime.py"
    path.write_bytes(runtime_module())
    spec = importlib.util.spec_from_file_location("imagebuild_runtime_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in list(os.environ):
        if name.startswith("FEATURE_") or name.startswith("IMAGEBUILD_"):
            monkeypatch.delenv(name)
    return module


def test_the_helper_reads_what_the_launcher_wrote(runtime, image_root, monkeypatch):
    result = launch([shutil.which("dash")], image_root, {"IMAGEBUILD_ENV": "dev", "FEATURE_DARK_MODE": "on"}, "true")
    assert result.returncode == 0, result.stderr
    monkeypatch.setenv("IMAGEBUILD_RUN_DIR", str(image_root / "run"))
    monkeypatch.setenv("IMAGEBUILD_CONFIG_DIR", str(image_root / "etc/imagebuild"))
    monkeypatch.setenv("IMAGEBUILD_ENV", "dev")
    assert runtime.feature("new-checkout") is True and runtime.feature("dark_mode") is True
    assert runtime.feature("NEW_CHECKOUT") is True  # spelled as its variable
    assert runtime.features() == {"new-checkout": True, "dark_mode": True}
    assert runtime.config("GREETING") == GREETING and runtime.config()["LOG_LEVEL"] == "debug"
    assert runtime.config("NOPE", "fallback") == "fallback"
    with pytest.raises(KeyError):
        runtime.config("NOPE")
    with pytest.raises(LookupError, match="new_chekout"):
        runtime.feature("new_chekout")
    assert runtime.feature("new_chekout", default=False) is False
    assert runtime.environment() == "dev"


def test_the_helper_outside_an_image_reads_the_process_environment(runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEBUILD_RUN_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("FEATURE_NEW_CHECKOUT", "on")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert runtime.feature("new_checkout") is True
    assert runtime.feature("other") is False
    assert runtime.config("LOG_LEVEL") == "debug"
    assert runtime.environment() is None
    monkeypatch.setenv("FEATURE_BROKEN", "perhaps")
    with pytest.raises(ValueError):
        runtime.feature("broken")
