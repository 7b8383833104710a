"""Server configuration rendered from recipes, and the real servers run with it.

The slow tests install the examples' pinned, hashed requirements from PyPI (which
also proves the pins are complete) and run gunicorn, uvicorn and the JDK with
the rendered files and `server_command`, then ask /health over loopback.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from imagebuild.sources.git import GitFacts
from imagebuild.contract import RUNTIME_MODULE
from imagebuild.launcher.assets import runtime_module
from imagebuild.recipe.loader import load_recipe
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.templates import render_server_files, server_command

from conftest import REPO_ROOT
from tests.ports import free_port

NO_GIT = {"git": GitFacts().as_context()}
EXAMPLES = REPO_ROOT / "examples"
SYSTEM_PYTHON = "/usr/bin/python3.11"


def example(name: str) -> Recipe:
    return load_recipe(EXAMPLES / name, context=NO_GIT)


def with_server(recipe: Recipe, **changes) -> Recipe:
    return dataclasses.replace(recipe, server=dataclasses.replace(recipe.server, **changes))


def with_dest(recipe: Recipe, dest: Path) -> Recipe:
    return dataclasses.replace(recipe, app=dataclasses.replace(recipe.app, dest=str(dest)))


# -- rendering ------------------------------------------------------------------

def gunicorn_settings(recipe: Recipe, env: dict[str, str]) -> dict:
    """Run the rendered gunicorn.conf.py as gunicorn does, with `env` as the process environment."""
    text = render_server_files(recipe)["/etc/imagebuild/gunicorn.conf.py"][0]
    settings: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("PORT", "WEB_CONCURRENCY", "IMAGEBUILD_CPUS", "LOG_LEVEL"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        exec(compile(text, "gunicorn.conf.py", "exec"), settings)
    return settings


def uvicorn_settings(recipe: Recipe, env: dict[str, str]) -> dict:
    """The keywords the rendered uvicorn_run.py passes to uvicorn.run, evaluated with `env`
    (its helper functions run; uvicorn itself is not imported)."""
    text = render_server_files(recipe)["/etc/imagebuild/uvicorn_run.py"][0].decode()
    tree = ast.parse(text)
    helpers = ast.Module([node for node in tree.body if isinstance(node, ast.FunctionDef)], type_ignores=[])
    scope: dict = {"os": os, "sys": sys}
    exec(compile(helpers, "uvicorn_run.py", "exec"), scope)
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "run")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("PORT", "WEB_CONCURRENCY", "IMAGEBUILD_CPUS", "LOG_LEVEL"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        keywords = {kw.arg: eval(compile(ast.Expression(kw.value), "uvicorn_run.py", "eval"), scope)
                    for kw in call.keywords}
    keywords["app"] = ast.literal_eval(call.args[0])
    return keywords


def test_gunicorn_config_is_python_with_the_recipe_settings():
    recipe = with_server(example("flask-hello"), port=9001, workers=3, options={"timeout": "60"})
    files = render_server_files(recipe)
    assert list(files) == ["/etc/imagebuild/gunicorn.conf.py"]
    assert files["/etc/imagebuild/gunicorn.conf.py"][1] == 0o644
    settings = gunicorn_settings(recipe, {})
    assert settings["bind"] == ["0.0.0.0:9001"]
    assert settings["workers"] == 3 and settings["timeout"] == 60
    assert settings["chdir"] == "/app"
    assert settings["loglevel"] == "info"
    assert settings["accesslog"] == "-" and settings["errorlog"] == "-" and settings["pidfile"] is None
    assert settings["worker_tmp_dir"] in ("/dev/shm", "/tmp")
    assert server_command(recipe) == ["python3.11", "-m", "gunicorn", "-c", "/etc/imagebuild/gunicorn.conf.py",
                                      "hello:app"]


def test_gunicorn_takes_port_workers_and_log_level_when_it_starts():
    fixed = with_server(example("flask-hello"), port=9001, workers=3, options={"host": "::"})
    settings = gunicorn_settings(fixed, {"PORT": "7000", "LOG_LEVEL": "WARN"})
    assert settings["bind"] == ["[::]:7000"] and settings["loglevel"] == "warning"
    assert settings["workers"] == 3
    assert gunicorn_settings(fixed, {"WEB_CONCURRENCY": "7"})["workers"] == 7
    per_cpu = with_server(example("flask-hello"), workers=None)
    assert per_cpu.server.workers is None  # the stock recipe leaves it to the CPU count
    assert gunicorn_settings(per_cpu, {"IMAGEBUILD_CPUS": "4"})["workers"] == 9
    assert gunicorn_settings(per_cpu, {})["workers"] == 2 * len(os.sched_getaffinity(0)) + 1
    assert gunicorn_settings(per_cpu, {"LOG_LEVEL": "loud"})["loglevel"] == "info"


def test_uvicorn_launcher_is_python_with_the_recipe_settings():
    recipe = with_server(example("fastapi-hello"), port=9002, options={"host": "::"})
    keywords = uvicorn_settings(recipe, {})
    assert keywords["app"] == "main:app"
    assert keywords["host"] == "::" and keywords["port"] == 9002 and keywords["app_dir"] == "/app"
    assert keywords["workers"] == 1 and keywords["log_level"] == "info"
    assert server_command(recipe) == ["python3.11", "/etc/imagebuild/uvicorn_run.py"]
    moved = uvicorn_settings(recipe, {"PORT": "7001", "LOG_LEVEL": "debug", "WEB_CONCURRENCY": "3"})
    assert (moved["port"], moved["log_level"], moved["workers"]) == (7001, "debug", 3)
    per_cpu = with_server(recipe, workers=None)
    assert uvicorn_settings(per_cpu, {"IMAGEBUILD_CPUS": "4"})["workers"] == 4


def test_stock_python_recipes_leave_workers_to_the_cpu_count(tmp_path):
    for stock, app in (("python-wsgi", "hello:app"), ("python-asgi", "main:app")):
        (tmp_path / "imagebuild.yaml").write_text(f"name: x\nextends: {stock}\nserver:\n  app: {app}\n")
        assert load_recipe(tmp_path, context=NO_GIT).server.workers is None


def test_nginx_config_runs_without_root():
    recipe = example("static-site")
    text = render_server_files(recipe)["/etc/imagebuild/nginx.conf"][0].decode()
    for line in ("daemon off;", "pid /tmp/nginx.pid;", "error_log stderr warn;", "access_log /dev/stdout;",
                 "listen 8080; # imagebuild:port", "worker_processes auto;", "root /app;", "location = /health {", "return 200"):
        assert line in text, line
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path /tmp/" in text
    assert "location ~ /\\.(?!well-known/) {" in text
    assert text.count("{") == text.count("}")
    assert server_command(recipe) == ["nginx", "-e", "stderr", "-c", "/etc/imagebuild/nginx.conf"]


def test_nginx_host_option_and_health_path():
    recipe = with_server(example("static-site"), port=8081, options={"host": "127.0.0.1"})
    recipe = dataclasses.replace(recipe, health=dataclasses.replace(recipe.health, path="/-/ready"))
    text = render_server_files(recipe)["/etc/imagebuild/nginx.conf"][0].decode()
    assert "listen 127.0.0.1:8081; # imagebuild:port" in text and "location = /-/ready {" in text


def test_java_has_no_files_and_runs_the_jar():
    recipe = with_server(example("java-hello"), options={"java_options": "-Xmx64m -Dfile.encoding=UTF-8"})
    assert render_server_files(recipe) == {}
    assert server_command(recipe) == ["java", "-Xmx64m", "-Dfile.encoding=UTF-8", "-jar", "/app/app.jar"]


def test_command_kind_runs_its_argv(tmp_path):
    (tmp_path / "imagebuild.yaml").write_text("name: x\nserver:\n  kind: command\n  command: [./serve, '--port', '9']\n")
    recipe = load_recipe(tmp_path, context=NO_GIT)
    assert render_server_files(recipe) == {}
    assert server_command(recipe) == ["./serve", "--port", "9"]


def test_rendering_is_deterministic():
    for name in ("flask-hello", "fastapi-hello", "static-site"):
        assert render_server_files(example(name)) == render_server_files(example(name))


# -- the real servers -------------------------------------------------------------



def install(target: Path, recipe: Recipe) -> Path:
    """pip-install the recipe's requirements and server packages in one hash-checked run."""
    requirements = target.parent / f"{target.name}-requirements.txt"
    lines = list(recipe.server.packages)
    if recipe.libraries.requirements:
        lines.insert(0, f"-r {recipe.root / recipe.libraries.requirements}")
    requirements.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--require-hashes", "--only-binary=:all:", "--target", str(target),
                           "-r", str(requirements)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return target


def serve(argv: list[str], port: int, env: dict, cwd: Path, path: str = "/health") -> tuple[subprocess.Popen, httpx.Response]:
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            pytest.fail(f"{argv} exited with {process.returncode}: {process.stdout.read()}")
        try:
            return process, httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{argv} never answered on port {port}")
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_rendered(tmp_path: Path, recipe: Recipe, site: Path, extra_env: dict) -> dict[str, httpx.Response]:
    """Write the rendered files under tmp_path (standing in for /), run the command, fetch / and /health."""
    files = render_server_files(recipe)
    argv = server_command(recipe)
    for image_path, (data, mode) in files.items():
        local = tmp_path / "root" / image_path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        local.chmod(mode)
        argv = [str(local) if arg == image_path else arg for arg in argv]
    argv = [SYSTEM_PYTHON if arg == "python3.11" else arg for arg in argv]
    helper = tmp_path / "runtime"
    helper.mkdir()
    (helper / f"{RUNTIME_MODULE}.py").write_bytes(runtime_module())
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{site}:{helper}", "HOME": str(tmp_path),
           "IMAGEBUILD_RUN_DIR": str(tmp_path / "run"), **extra_env}
    process, health = serve(argv, recipe.server.port, env, Path(recipe.app.dest))
    try:
        index = httpx.get(f"http://127.0.0.1:{recipe.server.port}/", timeout=5)
    finally:
        stop(process)
    return {"/health": health, "/": index}


@pytest.fixture(scope="session")
def site_packages(tmp_path_factory):
    """The examples' libraries, installed once per session (from PyPI, hash-checked)."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing; the images' runtime is Debian's python3.11")
    base = tmp_path_factory.mktemp("site")
    return {name: install(base / name, example(name)) for name in ("flask-hello", "fastapi-hello")}


@pytest.mark.integration
def test_flask_example_runs_on_gunicorn_with_rendered_config(tmp_path, site_packages):
    app_dir = shutil.copytree(EXAMPLES / "flask-hello", tmp_path / "app")
    recipe = with_server(with_dest(example("flask-hello"), app_dir), port=free_port(),
                         options={"host": "127.0.0.1"})
    answers = run_rendered(tmp_path, recipe, site_packages["flask-hello"],
                           {"LOG_LEVEL": "debug", "FEATURE_NEW_CHECKOUT": "true", "IMAGEBUILD_ENV": "dev"})
    assert answers["/health"].status_code == 200 and answers["/health"].text == "ok\n"
    body = answers["/"].json()
    assert body == {"message": "Hello from Flask (new checkout)", "environment": "dev",
                    "log_level": "debug", "new_checkout": True}


@pytest.mark.integration
def test_fastapi_example_runs_on_uvicorn_with_rendered_launcher(tmp_path, site_packages):
    app_dir = shutil.copytree(EXAMPLES / "fastapi-hello", tmp_path / "app")
    # Two workers: uvicorn then spawns processes that must find the app through app_dir.
    recipe = with_server(with_dest(example("fastapi-hello"), app_dir), port=free_port(), workers=2,
                         options={"host": "127.0.0.1"})
    answers = run_rendered(tmp_path, recipe, site_packages["fastapi-hello"], {"LOG_LEVEL": "warning"})
    assert answers["/health"].status_code == 200 and answers["/health"].text == "ok\n"
    assert answers["/"].json()["log_level"] == "warning"


def build_jar(directory: Path) -> bytes:
    done = subprocess.run(["sh", str(directory / "build.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return (directory / "app.jar").read_bytes()


@pytest.mark.integration
def test_java_example_builds_reproducibly_and_runs(tmp_path):
    app_dir = shutil.copytree(EXAMPLES / "java-hello", tmp_path / "app", ignore=shutil.ignore_patterns("app.jar"))
    first = hashlib.sha256(build_jar(app_dir)).hexdigest()
    os.utime(app_dir / "Hello.java")  # a newer source mtime must not change the jar
    assert hashlib.sha256(build_jar(app_dir)).hexdigest() == first
    port = free_port()
    recipe = with_dest(example("java-hello"), app_dir)
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "GREETING": "Howdy", "IMAGEBUILD_ENV": "dev"}
    process, health = serve(server_command(recipe), port, env, app_dir)
    try:
        index = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    finally:
        stop(process)
    assert health.status_code == 200 and health.text == "ok\n"
    assert index.text == "Howdy from Java (environment dev)\n"
