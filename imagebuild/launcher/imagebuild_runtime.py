"""The settings an imagebuild image chose when it started: environment, config, feature toggles.

    from imagebuild_runtime import feature, config, environment

    if feature("new_checkout"):
        ...
    level = config("LOG_LEVEL", "info")

The image's launcher writes config.json and features.json to the directory
in IMAGEBUILD_RUN_DIR (normally /run/imagebuild) before the server starts;
this module reads them once. Outside an image (tests, a developer's machine)
it falls back to the process environment: FEATURE_<NAME>=on|off and plain
variables. Standard library only; it ships inside every Python image.
"""

from __future__ import annotations

import functools
import json
import os
import re

__all__ = ["config", "environment", "feature", "features"]

RUN_DIR = "/run/imagebuild"
CONFIG_DIR = "/etc/imagebuild"
_MISSING = object()
_ON = ("on", "true", "1")
_OFF = ("off", "false", "0")


@functools.lru_cache(maxsize=None)
def _read(name: str) -> dict | None:
    path = os.path.join(os.environ.get("IMAGEBUILD_RUN_DIR") or RUN_DIR, name)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def _variable(name: str) -> str:
    return "FEATURE_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())


def features() -> dict[str, bool]:
    """Every toggle of this environment, after FEATURE_ overrides: {name: on?}."""
    found = _read("features.json")
    if found is not None:
        return dict(found)
    return {key[len("FEATURE_"):].lower(): value.lower() in _ON
            for key, value in os.environ.items() if key.startswith("FEATURE_")}


def feature(name: str, default: object = _MISSING) -> bool:
    """Whether the toggle `name` is on in this environment.

    In an image, a name the image does not know is a LookupError (a typo should
    not quietly read as off) unless a `default` is given. Outside one, the toggle
    is FEATURE_<NAME>, and off when that is unset.
    """
    found = _read("features.json")
    if found is not None:
        if name in found:
            return bool(found[name])
        # new-checkout, NEW_CHECKOUT and new_checkout are one toggle, as FEATURE_NEW_CHECKOUT is.
        alike = [value for key, value in found.items() if _variable(key) == _variable(name)]
        if alike:
            return bool(alike[0])
        if default is not _MISSING:
            return bool(default)
        raise LookupError(f"no feature toggle {name!r} in this image (known: {', '.join(sorted(found)) or 'none'})")
    text = os.environ.get(_variable(name))
    if text is None:
        return False if default is _MISSING else bool(default)
    if text.lower() in _ON:
        return True
    if text.lower() in _OFF:
        return False
    raise ValueError(f"{_variable(name)}={text!r} is not on or off")


def config(name: str | None = None, default: object = _MISSING):
    """config() → this environment's whole config as a dict; config(NAME) → one value (a string).

    Values set when the container started win over the baked ones, as the
    launcher decided. A missing NAME is a KeyError unless a `default` is given.
    """
    found = _read("config.json")
    values = dict(found) if found is not None else {}
    if name is None:
        return values
    if name in values:
        return values[name]
    if name in os.environ:
        return os.environ[name]
    if default is not _MISSING:
        return default
    raise KeyError(f"{name} is not in this environment's config")


@functools.lru_cache(maxsize=None)
def _environment_variable() -> str:
    """The variable that names the environment: baked into the image, so read once."""
    try:
        directory = os.environ.get("IMAGEBUILD_CONFIG_DIR") or CONFIG_DIR
        with open(os.path.join(directory, "environments.json"), encoding="utf-8") as handle:
            return json.load(handle).get("variable") or "IMAGEBUILD_ENV"
    except (OSError, ValueError):
        return "IMAGEBUILD_ENV"


def environment() -> str | None:
    """The name of the environment the image runs as (dev, test, prod, ...); None outside an image."""
    return os.environ.get(_environment_variable()) or None
