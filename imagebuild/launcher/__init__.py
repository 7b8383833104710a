"""What is baked into every image so it can configure itself at start.

`launch.sh` is the image's entrypoint (POSIX sh, no third-party anything, so
it runs in images without Python). This module produces it and the files it
reads, one per environment, from the recipe. See docs/bake.md.

Files in the image (under /etc/imagebuild):
  environments          one environment name per line; the first is the default
  environments.json     every environment's config, features and secret names
  env/<name>.sh         what the launcher sources: `config`, `feature` and `secret` lines
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Mapping

from imagebuild.errors import RecipeError
from imagebuild.recipe.model import Environment, Recipe

DEFAULT_ENVIRONMENT = "default"
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def launcher_script() -> bytes:
    return resources.files(__package__).joinpath("launch.sh").read_bytes()


def feature_variable(name: str) -> str:
    """`new-checkout` → `NEW_CHECKOUT`; the launcher exports it as FEATURE_NEW_CHECKOUT."""
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _where(recipe: Recipe) -> str | None:
    return str(recipe.source) if recipe.source else None


def _check(recipe: Recipe, env: Environment) -> None:
    if not _ENV_NAME.match(env.name):
        raise RecipeError(f"environment name {env.name!r} may hold only letters, digits, '.', '_' and '-'",
                          file=_where(recipe), key="environments")
    for key in list(env.config) + list(env.secrets):
        if not _VAR_NAME.match(key):
            raise RecipeError(f"environment {env.name!r}: {key!r} is not a valid variable name",
                              file=_where(recipe), key=f"environments.{env.name}",
                              hint="use letters, digits and '_', not starting with a digit")
    seen: dict[str, str] = {}
    for name in env.features:
        variable = feature_variable(name)
        if variable in seen:
            raise RecipeError(f"environment {env.name!r}: features {seen[variable]!r} and {name!r} "
                              f"both become FEATURE_{variable}", file=_where(recipe),
                              key=f"environments.{env.name}.features")
        seen[variable] = name


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment_script(env: Environment) -> bytes:
    lines = [f"# environment {env.name}: sourced by imagebuild-launch"]
    lines += [f"config {key} {sh_quote(_value(value))}" for key, value in sorted(env.config.items())]
    lines += [f"feature {feature_variable(name)} {'true' if enabled else 'false'}"
              for name, enabled in sorted(env.features.items())]
    lines += [f"secret {name}" for name in sorted(env.secrets)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def environments(recipe: Recipe) -> tuple[Environment, ...]:
    return recipe.environments or (Environment(DEFAULT_ENVIRONMENT),)


def config_files(recipe: Recipe) -> Mapping[str, bytes]:
    """Image path (relative to /) → content, for every environment in the recipe."""
    envs = environments(recipe)
    for env in envs:
        _check(recipe, env)
    files: dict[str, bytes] = {
        "etc/imagebuild/environments": ("\n".join(env.name for env in envs) + "\n").encode(),
        "etc/imagebuild/environments.json": json.dumps(
            {"default": envs[0].name,
             "environments": [{"name": env.name,
                               "config": {k: _value(v) for k, v in env.config.items()},
                               "features": {k: bool(v) for k, v in env.features.items()},
                               "secrets": list(env.secrets)} for env in envs]},
            indent=2, sort_keys=True).encode() + b"\n",
    }
    for env in envs:
        files[f"etc/imagebuild/env/{env.name}.sh"] = environment_script(env)
    return files
