"""What runs the server inside the image: its rendered configuration files and argv.

The templates are the `*.j2` files of the stock recipe that belongs to the
recipe's server kind (recipes/python-wsgi for gunicorn, and so on); each one
renders to CONFIG_DIR/<name without .j2>.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

from imagebuild.errors import RecipeError
from imagebuild.contract import CONFIG_DIR
from imagebuild.recipe import plain_templates
from imagebuild.recipe.kinds import KINDS
from imagebuild.recipe.loader import stock_recipes_dir
from imagebuild.recipe.model import Recipe

CONFIG_MODE = 0o644


def template_dir(recipe: Recipe) -> Path | None:
    """The directory holding the server kind's templates, or None for kinds without any."""
    stock = KINDS[recipe.server.kind].stock
    return stock_recipes_dir() / stock if stock else None


def _context(recipe: Recipe) -> dict:
    server = recipe.server
    host = server.options.get("host", "0.0.0.0")
    bracketed = f"[{host}]" if ":" in host else host
    return {
        "recipe": recipe, "server": server, "app": recipe.app, "health": recipe.health,
        "runtime": recipe.runtime, "os": recipe.os, "options": dict(server.options),
        "port": server.port, "host": host, "bind": f"{bracketed}:{server.port}",
        "listen": f"{bracketed}:{server.port}" if "host" in server.options else str(server.port),
        "config_dir": CONFIG_DIR,
    }


def render_server_files(recipe: Recipe) -> dict[str, tuple[bytes, int]]:
    """Render the server's configuration for `recipe`.

    Returns {absolute path inside the image: (file bytes, permission bits)},
    e.g. {"/etc/imagebuild/gunicorn.conf.py": (b"...", 0o644)}; empty for kinds
    that need no files (java, command). Pure apart from reading the templates;
    the same recipe always gives the same bytes.
    """
    directory = template_dir(recipe)
    if directory is None:
        return {}
    context = _context(recipe)
    files: dict[str, tuple[bytes, int]] = {}
    for template in sorted(directory.glob("*.j2")):
        try:
            # Without Jinja2 (and its import) when the template and the values are plain enough.
            text = plain_templates.render(template.read_text(encoding="utf-8"), context)
        except (plain_templates.NotPlain, UnicodeDecodeError):
            text = render_with_jinja(recipe, template, context)
        files[f"{CONFIG_DIR}/{template.name.removesuffix('.j2')}"] = (text.encode("utf-8"), CONFIG_MODE)
    return files


def render_with_jinja(recipe: Recipe, template: Path, context: dict) -> str:
    """One stock template rendered by Jinja2 in the bounded sandbox."""
    import jinja2

    from imagebuild.recipe.sandbox import BoundedEnvironment

    # The templates are the package's own, but they render the recipe's values: the same
    # bounds as a recipe's own template.
    env = BoundedEnvironment(loader=jinja2.FileSystemLoader(str(template.parent)))
    env.filters["py"] = repr  # a Python literal, for templates that are Python code
    try:
        return env.render(env.get_template(template.name), context)
    except jinja2.TemplateError as exc:
        raise RecipeError(f"cannot render {template.name}: {exc}", file=str(template),
                          line=getattr(exc, "lineno", None)) from None
    except Exception as exc:  # a value the template cannot use, e.g. a number where text belongs
        raise RecipeError(f"cannot render {template.name} with the recipe's values ({type(exc).__name__})",
                          file=str(recipe.source) if recipe.source else str(template)) from None


# The JVM sizes its heap from the container's memory limit, not the host's, unless told otherwise.
JAVA_MEMORY_DEFAULT = "-XX:MaxRAMPercentage=75.0"
_JAVA_HEAP_OPTIONS = ("-Xmx", "-XX:MaxRAMPercentage", "-XX:MaxRAM=", "-XX:MaxHeapSize")


def java_options(recipe: Recipe) -> list[str]:
    """server.options.java_options, after the container-aware heap default unless they set the heap."""
    options = shlex.split(recipe.server.options.get("java_options", ""))
    if any(option.startswith(_JAVA_HEAP_OPTIONS) for option in options):
        return options
    return [JAVA_MEMORY_DEFAULT, *options]


def server_command(recipe: Recipe, java_main: str | None = None) -> list[str]:
    """The argv that runs the server inside the image, from its WorkingDir (app.dest).

    gunicorn: ["python3.11", "-m", "gunicorn", "-c", "/etc/imagebuild/gunicorn.conf.py", "hello:app"]
    uvicorn:  ["python3.11", "/etc/imagebuild/uvicorn_run.py"]
    nginx:    ["nginx", "-e", "stderr", "-c", "/etc/imagebuild/nginx.conf"]
    java:     ["java", "-XX:MaxRAMPercentage=75.0", *java_options, "-jar", "/app/app.jar"], or for a
              recipe with `java:` (its build output in layers) "-cp", "/app/resources:/app/classes:/app/libs/*"
              and the main class (java.main_class, else `java_main`, read from the jar's manifest)
    node:     ["node", *node_options, "/app/server.js"]
    command:  server.command as written
    Python servers run as `python3.X -m`/a script, never through console scripts,
    so they only need the libraries on the interpreter's path.
    """
    server = recipe.server
    if server.kind == "gunicorn":
        return [_python(recipe), "-m", "gunicorn", "-c", f"{CONFIG_DIR}/gunicorn.conf.py", server.app]
    if server.kind == "uvicorn":
        return [_python(recipe), f"{CONFIG_DIR}/uvicorn_run.py"]
    if server.kind == "nginx":
        # -e: nginx opens its built-in error log before reading the config, and a
        # non-root user cannot write /var/log/nginx.
        return ["nginx", "-e", "stderr", "-c", f"{CONFIG_DIR}/nginx.conf"]
    if server.kind == "java" and recipe.java is not None:
        from imagebuild.sources.java_build import classpath

        main = recipe.java.main_class or java_main
        if not main:
            raise RecipeError("the main class is only known once the jar is read", key="java.main_class",
                              file=str(recipe.source) if recipe.source else None, hint="set java.main_class")
        return ["java", *java_options(recipe), "-cp", classpath(recipe.app.dest), main]
    if server.kind == "java":
        jar = str(PurePosixPath(recipe.app.dest) / server.app)
        return ["java", *java_options(recipe), "-jar", jar]
    if server.kind == "node":
        main = str(PurePosixPath(recipe.app.dest) / server.app)
        return ["node", *shlex.split(server.options.get("node_options", "")), main]
    if server.kind == "command":
        return list(server.command)
    raise RecipeError(f"unknown server kind {server.kind!r}", file=str(recipe.source) if recipe.source else None,
                      key="server.kind")


def _python(recipe: Recipe) -> str:
    return f"python{recipe.runtime.python}"
