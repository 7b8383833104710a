"""A recipe's files as the loader and the recipe cache (recipe/cache.py) both see them, without
importing YAML: the file's name and size bound, what makes its text a template, where stock
recipes live, and the identity of a file a recipe names."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

RECIPE_FILE = "imagebuild.yaml"
MAX_RECIPE_BYTES = 1 << 20      # a recipe file, and its rendered text

# Jinja2's delimiters (variable, block, comment) and the line endings it rewrites: a text without
# them is its own rendering.
TEMPLATE_SYNTAX = re.compile(r"\{[{%#]|\r")


def stock_recipes_dir() -> Path:
    """Where stock recipes live: $IMAGEBUILD_RECIPES, else imagebuild/stock_recipes in an
    installed package (pyproject.toml ships recipes/ there), else recipes/ of the checkout."""
    configured = os.environ.get("IMAGEBUILD_RECIPES")
    if configured:
        return Path(configured)
    package = Path(__file__).resolve().parents[1]
    installed = package / "stock_recipes"
    if installed.is_dir():
        return installed
    return package.parent / "recipes"


def read_recipe_bytes(path: Path) -> bytes:
    """At most MAX_RECIPE_BYTES + 1 bytes of a recipe file (one more tells it is too large); OSError as it comes."""
    with open(path, "rb") as stream:
        return stream.read(MAX_RECIPE_BYTES + 1)


def path_identity(path: str) -> list:
    """What the recipe's checks could see of a path they were given, in a form JSON keeps: a
    regular file's size, mtime, ctime and inode (its bytes may be read), "dir" for a directory
    (only that is asked), else "other" or "missing"."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        return ["missing"]
    if stat.S_ISREG(found.st_mode):
        return ["file", found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino, found.st_dev]
    if stat.S_ISDIR(found.st_mode):
        return ["dir"]
    return ["other", stat.S_IFMT(found.st_mode)]
