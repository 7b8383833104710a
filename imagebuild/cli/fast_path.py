"""The everyday commands without typer: a simple command line of `images`, `status`, `history`,
`promote`, `push` or `bake` is parsed here and run straight away.

Importing typer and its click costs more than the work of these commands. This parser takes only
what it reads exactly as click would (the commands' options, long form, `--opt value` or
`--opt=value`, each at most once unless the option is a list, the positional arguments, the
options' environment variables and defaults) and gives up on anything else: `--help`, a short or unknown option, a missing or
surplus argument, a value that click would refuse or that starts with `-`. The typer command line
then runs as before, so help and usage errors are click's own. The command's function is the one
its typer command calls (cli/everyday.py; cli/bake_run.py for `bake`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

# Kinds of option: a flag sets a fixed value; the others take one value (a list's, one per use).
FLAG, PATH, TEXT, PARALLEL, LIST = "flag", "path", "text", "parallel", "list"


class Option(NamedTuple):
    param: str
    kind: str
    value: Any = None         # what a flag sets


STORE = {"--store": Option("store", PATH)}
JSON = {"--json": Option("json_out", FLAG, True)}
RECIPE = {"--recipe": Option("recipe", PATH)}
INSECURE = {"--insecure": Option("insecure", FLAG, True), "--secure": Option("insecure", FLAG, False)}


class Command(NamedTuple):
    run: str                                  # the function's name in its module
    arguments: tuple[str, ...]                # positional parameters, all required
    options: dict[str, Option]
    defaults: dict[str, Any]
    required: tuple[str, ...] = ()            # options without a default
    envvars: dict[str, str] = {}              # parameter -> environment variable, read when not given
    optional_path: Optional[str] = None       # a last positional path parameter that has a default
    module: str = "everyday"                  # the module of imagebuild.cli holding the function


_STORE_DEFAULTS = {"store": None, "json_out": False}
_RECIPE_DEFAULTS = {"recipe": Path("imagebuild.yaml"), "insecure": None, **_STORE_DEFAULTS}
_STORE_ENV = {"store": "IMAGEBUILD_STORE"}

COMMANDS = {
    "images": Command("images", (), {**STORE, **JSON, "--all": Option("all_kinds", FLAG, True)},
                      {**_STORE_DEFAULTS, "all_kinds": False}, envvars=_STORE_ENV),
    "status": Command("status", (), {
        **RECIPE, **INSECURE, **STORE, **JSON,
        "--hosts": Option("hosts", FLAG, True), "--no-hosts": Option("hosts", FLAG, False),
        "--known-hosts": Option("known_hosts", PATH),
        "--agent": Option("agent", FLAG, True), "--no-agent": Option("agent", FLAG, False),
    }, {**_RECIPE_DEFAULTS, "hosts": True, "identity": None, "known_hosts": None, "agent": True},
        envvars={**_STORE_ENV, "known_hosts": "IMAGEBUILD_KNOWN_HOSTS"}),
    "history": Command("history", ("environment",), {**RECIPE, **INSECURE, **STORE, **JSON},
                       dict(_RECIPE_DEFAULTS), envvars=_STORE_ENV),
    "promote": Command("promote", ("image",), {
        **RECIPE, **INSECURE, **STORE, **JSON,
        "--to": Option("to", TEXT), "--dry-run": Option("dry_run", FLAG, True),
    }, {**_RECIPE_DEFAULTS, "dry_run": False}, required=("to",), envvars=_STORE_ENV),
    "push": Command("push", ("image",), {
        **RECIPE, **INSECURE, **STORE, **JSON,
        "--to": Option("to", TEXT), "--parallel": Option("parallel", PARALLEL),
    }, {**_RECIPE_DEFAULTS, "to": None, "parallel": 4}, envvars=_STORE_ENV),
    "bake": Command("bake", (), {
        **STORE, **INSECURE, **JSON,
        "--allow-dirty": Option("allow_dirty", FLAG, True), "--output": Option("output", LIST),
        "--load": Option("load", FLAG, True), "--push": Option("push", FLAG, True),
        "--cache-from": Option("cache_from", TEXT), "--cache-to": Option("cache_to", TEXT),
        "--format": Option("form", TEXT), "--sign": Option("sign", PATH),
        "--passphrase-env": Option("passphrase_env", TEXT),
    }, {"path": Path("."), "store": None, "allow_dirty": False, "output": (), "load": False, "push": False,
        "cache_from": None, "cache_to": None, "insecure": None, "form": "image", "sign": None,
        "passphrase_env": None, "json_out": False},
        envvars=_STORE_ENV, optional_path="path", module="bake_run"),
}
PARALLEL_RANGE = range(1, 33)     # push --parallel's min and max


def parse(argv: list[str]) -> Optional[tuple[str, dict[str, Any]]]:
    """(function name, keyword arguments) for a simple command line of an everyday command, else None."""
    if not argv or argv[0] not in COMMANDS:
        return None
    command = COMMANDS[argv[0]]
    given: dict[str, Any] = {}
    positional: list[str] = []
    rest = argv[1:]
    index = 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if not token.startswith("-"):
            positional.append(token)
            continue
        name, has_value, value = token.partition("=")
        option = command.options.get(name)
        if option is None or (option.param in given and option.kind != LIST):
            return None
        if option.kind == FLAG:
            if has_value:
                return None
            given[option.param] = option.value
            continue
        if not has_value:
            if index >= len(rest):
                return None
            value = rest[index]
            index += 1
        if value.startswith("-"):
            return None
        if option.kind == LIST:
            given.setdefault(option.param, []).append(value)
            continue
        converted = _convert(option.kind, value)
        if converted is None:
            return None
        given[option.param] = converted
    if command.optional_path is not None and len(positional) == len(command.arguments) + 1:
        given[command.optional_path] = _convert(PATH, positional.pop())
        if given[command.optional_path] is None:
            return None
    if len(positional) != len(command.arguments) or any(p not in given for p in command.required):
        return None
    for param, variable in command.envvars.items():
        if param not in given and os.environ.get(variable):
            given[param] = _convert(PATH, os.environ[variable])
            if given[param] is None:
                return None
    kwargs = {**command.defaults, **dict(zip(command.arguments, positional)), **given}
    kwargs.update((param, list(value)) for param, value in kwargs.items() if isinstance(value, tuple))
    if kwargs.get("recipe") is not None and _convert(PATH, str(kwargs["recipe"])) is None:
        return None
    return command.run, kwargs


def _convert(kind: str, value: str) -> Any:
    """The value as the typer command gets it, or None where click would refuse it (or might)."""
    if kind == TEXT:
        return value
    if kind == PARALLEL:
        if not value.isascii() or not value.isdigit() or int(value) not in PARALLEL_RANGE:
            return None
        return int(value)
    # A path click checks: one that exists must be readable.
    try:
        os.stat(value)
    except OSError:
        return Path(value)
    except ValueError:
        return None
    return Path(value) if os.access(value, os.R_OK) else None


def runner(argv: list[str]) -> Optional[Callable[[], None]]:
    """The command to run without typer, or None to leave the command line to typer."""
    parsed = parse(argv)
    if parsed is None:
        return None
    name, kwargs = parsed
    import importlib

    function = getattr(importlib.import_module(f"imagebuild.cli.{COMMANDS[argv[0]].module}"), name)
    return lambda: function(**kwargs)
