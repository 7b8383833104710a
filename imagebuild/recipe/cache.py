"""A loaded recipe remembered between commands: `status`, `history`, `promote` and `push` on an
unchanged recipe skip YAML, the schema and the checks (and their imports).

One JSON file per recipe (by its real path) in a directory the caller gives (the store's
`imagebuild-cache/recipes/`, written by this user for this user alone), holding the recipe as
plain data and what it was made of (loader.RecipeInputs): the sha256 of the recipe's bytes and of
the stock recipe it extends, each path its checks resolved with that path's identity (size,
mtime, ctime, inode of a file; that a directory is one), and the identity of the code that loads
recipes (imagebuild's and PyYAML's). An entry is used only when all of it still holds; anything
else (a changed byte, a moved link, a damaged or foreign file) is a miss: the recipe is loaded as
always, and the entry written anew. Recipes whose text is a template (read the environment and
git) or that name a file outside their own directory (git answers where the repository is) are
never remembered. A failed load writes nothing, so its error comes again the next time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from imagebuild.recipe import model
from imagebuild.recipe.model import Recipe
from imagebuild.recipe.recipe_files import RECIPE_FILE, path_identity, read_recipe_bytes, stock_recipes_dir

FORMAT = 1
# The fields the loader sets from where the recipe was read, not from its text.
_PLACE_FIELDS = ("source", "stock_dir")
_CLASSES = {name: cls for name, cls in vars(model).items()
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == model.__name__}
_PACKAGE = Path(__file__).resolve().parents[1]
# The code whose answer is remembered: every module of recipe/, and what its checks and types use.
_CODE_ELSEWHERE = ("frozen.py", "contract.py", "errors.py", "oci/reference.py")


def load_recipe_cached(path: Path | str, cache_dir: Path | None) -> Recipe:
    """loader.load_recipe(path), from `cache_dir` when an entry there still holds (None: no cache)."""
    source = Path(path)
    if source.is_dir():
        source = source / RECIPE_FILE
    entry_file = _entry_file(cache_dir, source) if cache_dir is not None else None
    if entry_file is not None:
        remembered = _remembered(entry_file, source)
        if remembered is not None:
            return remembered
    from imagebuild.recipe.loader import load_recipe_with_inputs

    recipe, inputs = load_recipe_with_inputs(source)
    if entry_file is not None and inputs.self_contained:
        _remember(entry_file, source, recipe, inputs)
    return recipe


def entries_of_gone_recipes(cache_dir: Path) -> list[Path]:
    """The entries in `cache_dir` whose recipe file no longer exists (moved or deleted: an entry is
    named by the recipe's real path, so it would never be used again), and those that cannot be read
    as an entry (garbled: a miss anyway)."""
    gone = []
    try:
        files = sorted(path for path in cache_dir.iterdir() if path.suffix == ".json")
    except OSError:
        return []
    for path in files:
        try:
            with open(path, "rb") as stream:
                real = json.loads(stream.read(4 << 20))["body"]["where"]["real"]
            if not isinstance(real, str):
                raise TypeError("no path")
        except OSError:
            continue      # unreadable to this user: someone else's, left to them
        except (ValueError, TypeError, KeyError, RecursionError):
            gone.append(path)
            continue
        if not os.path.lexists(real):
            gone.append(path)   # wrongly judged (a recipe on a drive not mounted now), it costs one load
    return gone


def _entry_file(cache_dir: Path, source: Path) -> Path | None:
    try:
        real = os.path.realpath(source)
    except (OSError, ValueError):
        return None
    return cache_dir / f"{hashlib.sha256(real.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.json"


def _code_identity() -> list:
    """Each file of the code that loads recipes: a changed one makes every entry a miss."""
    names = sorted(entry.name for entry in os.scandir(_PACKAGE / "recipe") if entry.name.endswith(".py"))
    return [[name, path_identity(str(_PACKAGE / name))]
            for name in [f"recipe/{name}" for name in names] + list(_CODE_ELSEWHERE)]


def _parser_identity() -> list | None:
    """PyYAML's package file, as loaded for this entry: another PyYAML could parse the same text otherwise."""
    parser = sys.modules.get("yaml")
    where = getattr(parser, "__file__", None)
    return [where, path_identity(where)] if where else None


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_recipe_bytes(path)).hexdigest()
    except OSError:
        return None


def _where(source: Path) -> dict[str, str]:
    """Where the recipe lies, as the loader's checks depend on it: its real path and its directory's."""
    return {"real": os.path.realpath(source), "directory": os.path.realpath(source.parent)}


def _remember(entry_file: Path, source: Path, recipe: Recipe, inputs: Any) -> None:
    """Write the entry; a cache that cannot be written costs only the load next time."""
    files = dict(inputs.files)
    recipe_sha = files.pop(str(source), None)
    if recipe_sha is None or len(files) > 1:
        return
    stock = None
    if recipe.stock_dir is not None:
        stock = {"dir": str(recipe.stock_dir), "sha256": files.get(str(recipe.stock_dir / RECIPE_FILE))}
        if stock["sha256"] is None:
            return
    from imagebuild.atomic import write_atomically

    try:
        parser = _parser_identity()
        if parser is None:
            return
        body = {"format": FORMAT, "code": _code_identity(), "parser": parser, "where": _where(source),
                "sha256": recipe_sha, "stock": stock, "named": [list(item) for item in inputs.named],
                "recipe": _plain(recipe)}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        entry = json.dumps({"body": body, "sha256": hashlib.sha256(text.encode()).hexdigest()}, sort_keys=True)
        entry_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(entry_file, entry.encode(), mode=0o600)
    except (OSError, TypeError, ValueError):
        pass


def _remembered(entry_file: Path, source: Path) -> Recipe | None:
    """The recipe an entry holds, when every fact it was made of still holds; else None."""
    try:
        with open(entry_file, "rb") as stream:
            if not _own_private_file(os.fstat(stream.fileno())):
                return None
            entry = json.loads(stream.read(4 << 20))
        body = entry["body"]
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if hashlib.sha256(text.encode()).hexdigest() != entry["sha256"]:
            return None
        if body["format"] != FORMAT or body["where"] != _where(source) or body["code"] != _code_identity():
            return None
        if path_identity(body["parser"][0]) != body["parser"][1]:
            return None
        where = body["where"]
        if os.path.dirname(where["real"]) != where["directory"]:
            return None
        if _sha256_of(source) != body["sha256"]:
            return None
        for value, resolved, identity in body["named"]:
            if os.path.realpath(source.parent / value) != resolved or path_identity(resolved) != identity:
                return None
        recipe = _from_plain(body["recipe"])
        if not isinstance(recipe, Recipe):
            return None
        stock_dir = None
        if body["stock"] is not None:
            if recipe.extends is None:
                return None
            stock_dir = stock_recipes_dir() / recipe.extends
            if str(stock_dir) != body["stock"]["dir"] or _sha256_of(stock_dir / RECIPE_FILE) != body["stock"]["sha256"]:
                return None
        return dataclasses.replace(recipe, source=source, stock_dir=stock_dir)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None      # no entry, or a damaged one: loaded afresh, and written anew


def _own_private_file(found: os.stat_result) -> bool:
    """An entry is trusted only when this user wrote it and no one else may change it: a store
    shared with others must not let them hand this user's commands a recipe (its registry, its
    promotion policy) that the checks never saw."""
    return stat.S_ISREG(found.st_mode) and found.st_uid == os.geteuid() and not found.st_mode & 0o022


def _plain(value: Any) -> Any:
    """A recipe value as JSON: each type's fields under its name, mappings tagged, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                "fields": {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                           if f.name not in _PLACE_FIELDS}}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {"map": {key: _plain(item) for key, item in value.items()}}
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"a recipe holds a {type(value).__name__}")


def _from_plain(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_plain(item) for item in value)
    if isinstance(value, dict):
        if set(value) == {"map"}:
            return {key: _from_plain(item) for key, item in value["map"].items()}
        cls = _CLASSES[value["type"]]
        return cls(**{name: _from_plain(item) for name, item in value["fields"].items()})
    return value
