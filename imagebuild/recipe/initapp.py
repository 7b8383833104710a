"""`imagebuild init`: look at an app's files, pick the stock recipe that fits and
write a starting imagebuild.yaml that loads cleanly."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from imagebuild.atomic import replacing
from imagebuild.errors import UserError
from imagebuild.sources.git import GitFacts
from imagebuild.recipe.checks import IMAGE_NAME_HINT, is_image_name
from imagebuild.recipe.loader import RECIPE_FILE, load_recipe, stock_recipe_names
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.schema import did_you_mean

_SKIP_DIRS = {".git", ".hg", ".venv", "venv", "env", ".tox", "node_modules", "__pycache__",
              "site-packages", "build", "dist", "tests", "test", ".mypy_cache", ".pytest_cache"}
_MAX_DEPTH = 2
_PREFERRED_MODULES = ("wsgi", "asgi", "app", "main", "application", "server", "api")
_ASGI = re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:fastapi\.)?(?:FastAPI|Starlette|Quart)\(", re.MULTILINE)
_WSGI = (re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:flask\.)?Flask\(", re.MULTILINE),
         re.compile(r"^(\w+)\s*(?::[^=\n]+)?=\s*(?:bottle\.)?Bottle\(", re.MULTILINE),
         re.compile(r"^(application)\s*=", re.MULTILINE))
_STATIC_ROOTS = (".", "public", "site", "_site", "dist", "www")
_DEFAULT_PORTS = {"python-wsgi": 8000, "python-asgi": 8000, "static-nginx": 8080, "java-jar": 8080,
                  "node-http": 3000}
_NODE_MAINS = ("server.js", "index.js", "app.js", "main.js")


@dataclass(frozen=True)
class Detection:
    """What init found in an app directory."""

    stock: str                      # the stock recipe to extend
    reason: str                     # what was found, in words, for the user
    app: str | None = None          # server.app: module:callable or a jar path
    app_path: str = "."             # app.path: the directory to bake
    requirements: str | None = None
    package_lock: str | None = None  # a Node app's package-lock.json


@dataclass(frozen=True)
class InitResult:
    path: Path
    detection: Detection
    recipe: Recipe


def _all_files(directory: Path) -> list[Path]:
    """Every file at most _MAX_DEPTH levels down, outside tool and dependency directories."""
    found = []
    for root, dirs, names in os.walk(directory):
        depth = len(Path(root).relative_to(directory).parts)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        if depth >= _MAX_DEPTH:
            dirs[:] = []
        found.extend(Path(root) / name for name in names)
    return found


def _files(directory: Path, all_files: list[Path], pattern: str) -> list[Path]:
    """The files of `all_files` whose names match `pattern`, shallowest and preferred first."""
    found = [path for path in all_files if Path(path.name).match(pattern)]

    def order(path: Path):
        stem = path.stem
        rank = _PREFERRED_MODULES.index(stem) if stem in _PREFERRED_MODULES else len(_PREFERRED_MODULES)
        return len(path.relative_to(directory).parts), rank, str(path)

    return sorted(found, key=order)


def _module(directory: Path, file: Path) -> str:
    return ".".join(file.relative_to(directory).with_suffix("").parts)


def _detect_python(directory: Path, python_files: list[Path]) -> Detection | None:
    wsgi_hit = None
    for file in python_files:
        try:
            text = file.read_text(encoding="utf-8", errors="replace")[:1_000_000]
        except OSError:
            continue
        module = _module(directory, file)
        asgi = _ASGI.search(text)
        if asgi:
            return Detection("python-asgi", f"an ASGI app in {file.relative_to(directory)}",
                             app=f"{module}:{asgi.group(1)}")
        for pattern in _WSGI:
            match = pattern.search(text)
            if match and wsgi_hit is None:
                wsgi_hit = Detection("python-wsgi", f"a WSGI app in {file.relative_to(directory)}",
                                     app=f"{module}:{match.group(1)}")
    if wsgi_hit:
        return wsgi_hit
    wsgi_files = [f for f in python_files if f.name == "wsgi.py"]
    if wsgi_files:
        return Detection("python-wsgi", f"{wsgi_files[0].relative_to(directory)}",
                         app=f"{_module(directory, wsgi_files[0])}:application")
    return None


def _detect_node(directory: Path) -> Detection | None:
    """A package.json at the top: its `main`, else the first of _NODE_MAINS that exists."""
    try:
        package = json.loads((directory / "package.json").read_text(encoding="utf-8")[:1_000_000])
    except (OSError, ValueError):
        return None
    main = package.get("main") if isinstance(package, dict) else None
    if not isinstance(main, str) or not (directory / main).is_file():
        main = next((name for name in _NODE_MAINS if (directory / name).is_file()), None)
    if main is None:
        return None
    lock = "package-lock.json" if (directory / "package-lock.json").is_file() else None
    reason = f"a Node app ({main}" + (", package-lock.json)" if lock else "; run `npm install` for a lock)")
    return Detection("node-http", reason, app=main, package_lock=lock)


def _detect_static(directory: Path) -> Detection | None:
    for root in _STATIC_ROOTS:
        if (directory / root / "index.html").is_file():
            where = "index.html" if root == "." else f"{root}/index.html"
            return Detection("static-nginx", f"a static site ({where})", app_path=root)
    return None


def detect_app(directory: Path) -> Detection:
    """Pick the stock recipe for the app in `directory`, or a UserError saying what was missing."""
    all_files = _all_files(directory)    # walked once, then filtered per kind of file
    python_files = _files(directory, all_files, "*.py")
    found = _detect_python(directory, python_files) if python_files else None
    if found is None:
        found = _detect_node(directory)
    if found is None:
        jars = _files(directory, all_files, "*.jar")
        if jars:
            jar = jars[0].relative_to(directory).as_posix()
            found = Detection("java-jar", f"the jar {jar}", app=jar)
    if found is None and (_files(directory, all_files, "*.java") or (directory / "pom.xml").is_file()
                          or (directory / "build.gradle").is_file()):
        found = Detection("java-jar", "Java sources (build the jar, then check server.app)", app="app.jar")
    if found is None and not python_files:
        found = _detect_static(directory)
    if found is None and python_files:
        module = _module(directory, python_files[0])
        found = Detection("python-wsgi", f"Python code but no app object (guessed {module}:app, check server.app)",
                          app=f"{module}:app")
    if found is None:
        raise UserError(f"cannot tell what kind of app {directory} holds",
                        hint="expected a Flask/FastAPI/WSGI app, a Node app, a jar, or index.html; "
                             "pass --extends NAME or write imagebuild.yaml by hand (see docs/recipe.md)")
    if (directory / "requirements.txt").is_file() and found.stock.startswith("python-"):
        found = dataclasses.replace(found, requirements="requirements.txt")
    return found


def image_name_for(directory: Path) -> str:
    """A valid image name from a directory name: lowercase, other characters become '-'."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return name or "app"


def _scalar(value: str) -> str:
    """A YAML scalar that reads back as exactly `value`."""
    if re.fullmatch(r"[A-Za-z0-9_./][A-Za-z0-9_./:-]*", value) and value not in ("true", "false", "null", "yes", "no"):
        return value
    return json.dumps(value)


def recipe_text(name: str, found: Detection) -> str:
    """The starting recipe: the stock recipe's defaults plus what this app needs."""
    lines = [
        "# imagebuild recipe: every key is described in docs/recipe.md.",
        f"# Written by `imagebuild init`, which found {found.reason}.",
        f"name: {_scalar(name)}",
        f"extends: {found.stock}",
        "",
    ]
    if found.requirements:
        lines += ["libraries:", f"  requirements: {_scalar(found.requirements)}  # pinned with =="]
    if found.package_lock:
        lines += ["libraries:", f"  package_lock: {_scalar(found.package_lock)}  # npm's lock is the pin"]
    lines += ["server:"]
    if found.app:
        lines += [f"  app: {_scalar(found.app)}"]
    lines += [f"  port: {_DEFAULT_PORTS.get(found.stock, 8000)}",
              "app:", f"  path: {_scalar(found.app_path)}  # only files git tracks are baked",
              "health:", "  path: /health  # must answer 200 when the app is ready",
              "",
              "# A container started without IMAGEBUILD_ENV=<name> runs as dev; drop the",
              "# default to make it refuse to start instead.",
              "detect:",
              "  default: dev",
              "# Listed in promotion order; every environment's settings travel in the one image.",
              "environments:",
              "  - name: dev",
              "    config: {LOG_LEVEL: debug}",
              "  - name: test",
              "    config: {LOG_LEVEL: info}",
              "  - name: prod",
              "    config: {LOG_LEVEL: info}",
              ""]
    return "\n".join(lines)


def init_app(directory: Path, *, force: bool = False, extends: str | None = None,
             name: str | None = None) -> InitResult:
    """Write DIRECTORY/imagebuild.yaml for the app found there.

    Refuses (UserError) to replace an existing recipe unless `force`. The text
    is loaded with load_recipe before it replaces anything, so a written recipe
    always loads.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"no such directory: {directory}")
    target = directory / RECIPE_FILE
    if target.exists() and not force:
        raise UserError(f"{target} already exists", hint="pass --force to replace it")
    if extends is not None:
        names = stock_recipe_names()
        if extends not in names:
            raise UserError(f"unknown stock recipe {extends!r}",
                            hint=did_you_mean(extends, names) or f"stock recipes: {', '.join(names)}")
    if name is not None and not is_image_name(name):
        raise UserError(f"--name {name!r} is not a valid image name", hint=IMAGE_NAME_HINT)
    found = _forced(directory, extends) if extends else detect_app(directory)
    text = recipe_text(name or image_name_for(directory), found)
    # The recipe is loaded from the temp file, so a recipe that would not load replaces nothing.
    try:
        with replacing(target, prefix=".imagebuild-", suffix=".yaml") as pending:
            pending.write(text.encode("utf-8"))
            pending.file.flush()
            recipe = load_recipe(pending.temp_path, context={"git": GitFacts().as_context()})
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}",
                        hint="make the directory writable") from None
    return InitResult(path=target, detection=found, recipe=dataclasses.replace(recipe, source=target))


def _forced(directory: Path, stock: str) -> Detection:
    """Detection for an explicitly chosen stock recipe, keeping what fits of the guess."""
    try:
        found = detect_app(directory)
    except UserError:
        found = None
    if found and found.stock == stock:
        return found
    app = {"python-wsgi": "app:app", "python-asgi": "main:app", "java-jar": "app.jar", "node-http": "server.js"}.get(stock)
    requirements = "requirements.txt" if stock.startswith("python-") and (directory / "requirements.txt").is_file() else None
    return Detection(stock, f"--extends {stock}", app=app, requirements=requirements)
