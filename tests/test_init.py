"""`imagebuild init`: detection of each kind of app, and a written recipe that loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imagebuild.errors import RecipeError, UserError
from imagebuild.recipe.initapp import detect_app, init_app
from imagebuild.recipe.loader import load_recipe

from conftest import REPO_ROOT, imagebuild

FLASK = "from flask import Flask\n\napp = Flask(__name__)\n\n@app.get('/health')\ndef health():\n    return 'ok'\n"
FASTAPI = "from fastapi import FastAPI\n\napi = FastAPI(title='x')\n"
PINNED = "flask==3.1.3\nwerkzeug==3.1.9\n"


def make(directory: Path, **files: str) -> Path:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


def init_and_load(directory: Path, **kwargs):
    result = init_app(directory, **kwargs)
    assert result.path == directory / "imagebuild.yaml"
    recipe = load_recipe(result.path)
    assert recipe.environment_names() == ["dev", "test", "prod"]
    assert not list(directory.glob(".imagebuild-*")), "temporary file left behind"
    return result, recipe


def test_flask_app(tmp_path):
    app = make(tmp_path / "My_Shop", **{"hello.py": FLASK, "requirements.txt": PINNED})
    result, recipe = init_and_load(app)
    assert result.detection.stock == "python-wsgi"
    assert recipe.extends == "python-wsgi" and recipe.server.kind == "gunicorn"
    assert recipe.server.app == "hello:app"
    assert recipe.libraries.requirements == "requirements.txt"
    assert recipe.name == "my-shop"
    assert recipe.health.path == "/health"


def test_django_style_wsgi_module(tmp_path):
    app = make(tmp_path / "site", **{
        "manage.py": "import sys\n",
        "shop/__init__.py": "",
        "shop/settings.py": "DEBUG = False\n",
        "shop/wsgi.py": "from django.core.wsgi import get_wsgi_application\n\napplication = get_wsgi_application()\n",
    })
    _, recipe = init_and_load(app)
    assert recipe.server.kind == "gunicorn" and recipe.server.app == "shop.wsgi:application"
    assert recipe.libraries.requirements is None


def test_fastapi_app(tmp_path):
    app = make(tmp_path / "api", **{"service/main.py": FASTAPI, "service/__init__.py": ""})
    result, recipe = init_and_load(app)
    assert result.detection.stock == "python-asgi"
    assert recipe.server.kind == "uvicorn" and recipe.server.app == "service.main:api"


def test_static_site(tmp_path):
    app = make(tmp_path / "site", **{"index.html": "<h1>hi</h1>", "style.css": ""})
    _, recipe = init_and_load(app)
    assert recipe.server.kind == "nginx" and recipe.server.port == 8080
    assert "nginx-light" in recipe.os.packages and recipe.app.path == "."


def test_static_site_in_public_directory(tmp_path):
    app = make(tmp_path / "site", **{"public/index.html": "<h1>hi</h1>", "README.md": "x"})
    _, recipe = init_and_load(app)
    assert recipe.server.kind == "nginx" and recipe.app.path == "public"


def test_jar(tmp_path):
    app = make(tmp_path / "svc", **{"target/svc-1.0.jar": "PK"})
    _, recipe = init_and_load(app)
    assert recipe.server.kind == "java" and recipe.server.app == "target/svc-1.0.jar"
    assert recipe.runtime.java == "17"


def test_node_app_with_and_without_a_lock(tmp_path):
    app = make(tmp_path / "web", **{"package.json": '{"name": "web", "main": "src/start.js"}',
                                   "src/start.js": "require('http')\n"})
    result, recipe = init_and_load(app)
    assert (recipe.server.kind, recipe.server.app, recipe.runtime.node) == ("node", "src/start.js", "18")
    assert recipe.libraries.package_lock is None and "npm install" in result.detection.reason
    make(app, **{"package-lock.json": '{"lockfileVersion": 3, "packages": {}}'})
    _, recipe = init_and_load(app, force=True)
    assert recipe.libraries.package_lock == "package-lock.json"


def test_nothing_recognisable(tmp_path):
    app = make(tmp_path / "empty", **{"README.md": "hello"})
    with pytest.raises(UserError, match="cannot tell what kind of app"):
        init_app(app)
    assert not (app / "imagebuild.yaml").exists()


def test_extends_overrides_detection(tmp_path):
    app = make(tmp_path / "docs", **{"index.html": "x", "build.py": "print('x')\n"})
    _, recipe = init_and_load(app, extends="static-nginx", name="docs-site")
    assert recipe.server.kind == "nginx" and recipe.name == "docs-site"


def test_unpinned_requirements_write_nothing(tmp_path):
    app = make(tmp_path / "shop", **{"app.py": FLASK, "requirements.txt": "flask\n"})
    with pytest.raises(RecipeError) as caught:
        init_app(app)
    assert caught.value.one_line().startswith(f"{app / 'requirements.txt'}:1: requirement 'flask' is not pinned")
    assert sorted(p.name for p in app.iterdir()) == ["app.py", "requirements.txt"]


def test_refuses_to_overwrite_without_force(tmp_path):
    app = make(tmp_path / "shop", **{"app.py": FLASK, "imagebuild.yaml": "name: mine\n"})
    with pytest.raises(UserError, match="already exists"):
        init_app(app)
    assert (app / "imagebuild.yaml").read_text() == "name: mine\n"
    init_and_load(app, force=True)
    assert "extends: python-wsgi" in (app / "imagebuild.yaml").read_text()


def test_cli_refuses_overwrite_with_exit_code_2(tmp_path):
    app = make(tmp_path / "shop", **{"app.py": FLASK, "imagebuild.yaml": "name: mine\n"})
    result = imagebuild("init", app)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {app / 'imagebuild.yaml'} already exists (pass --force to replace it)"
    assert (app / "imagebuild.yaml").read_text() == "name: mine\n"


@pytest.mark.parametrize("name", ["Bad Name", "registry.example.com/shop", "shop:v1"])
def test_cli_names_a_bad_name_option_not_a_temp_file(tmp_path, name):
    app = make(tmp_path / "shop", **{"app.py": FLASK})
    result = imagebuild("init", app, "--name", name)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: --name {name!r} is not a valid image name (use lowercase"), result.stderr
    assert sorted(p.name for p in app.iterdir()) == ["app.py"]


def test_cli_writes_into_the_current_directory(tmp_path):
    app = make(tmp_path / "shop", **{"app.py": FLASK})
    result = imagebuild("init", "--json", cwd=app)
    assert result.returncode == 0, result.stderr
    assert '"extends": "python-wsgi"' in result.stdout
    assert load_recipe(app / "imagebuild.yaml").server.app == "app:app"


@pytest.mark.parametrize("example, stock, app_ref", [
    ("flask-hello", "python-wsgi", "hello:app"),
    ("fastapi-hello", "python-asgi", "main:app"),
    ("static-site", "static-nginx", None),
    ("java-hello", "java-jar", "app.jar"),
    ("node-hello", "node-http", "server.js"),
])
def test_detects_each_example(tmp_path, example, stock, app_ref):
    copy = tmp_path / example
    shutil.copytree(REPO_ROOT / "examples" / example, copy,
                    ignore=shutil.ignore_patterns("imagebuild.yaml", "app.jar", "__pycache__"))
    found = detect_app(copy)
    assert (found.stock, found.app) == (stock, app_ref)
    init_and_load(copy)
