"""What is baked into every image so it can configure itself at start.

`launch.sh` is the image's entrypoint (POSIX sh, no third-party anything, so
it runs in images without Python); `imagebuild_runtime.py` is the stdlib-only
helper Python apps import. This module produces them and the files the
launcher reads, from the recipe. See docs/launcher.md.

Files in the image (under /etc/imagebuild), from the config layer:
  environments          one environment name per line, in the recipe's order
  environments.json     every environment's config, features, secret names and detect rules
  detect.sh             the variable that names the environment, the default, the detect rules
  env/<name>.sh         what the launcher sources: `config`, `feature` and `secret` lines
and from the server layer:
  server.sh             how many workers the server runs (fixed, or per CPU)
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from imagebuild.contract import DEFAULT_ENVIRONMENT
from imagebuild.recipe.model import DetectSpec, Environment, Recipe

def feature_variable(name: str) -> str:
    """`new_checkout` → `NEW_CHECKOUT`; the launcher exports it as FEATURE_NEW_CHECKOUT."""
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def feature_names(recipe: Recipe) -> list[str]:
    """Every feature any environment names, in first-seen order.

    An environment that does not list a feature has it off, so `feature(name)`
    answers in every environment and a toggle is released by turning it on.
    The recipe's rules (imagebuild/recipe/checks.py) have refused names that are
    not variable names or that two toggles would share.
    """
    return list(dict.fromkeys(name for env in environments(recipe) for name in env.features))


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment_script(env: Environment, features: list[str] | None = None) -> bytes:
    """The lines the launcher sources for one environment; `features` is every toggle the image knows."""
    lines = [f"# environment {env.name}: sourced by imagebuild-launch"]
    lines += [f"config {key} {sh_quote(_value(value))}" for key, value in sorted(env.config.items())]
    for name in sorted(features if features is not None else env.features):
        state = "on" if env.features.get(name, False) else "off"
        lines.append(f"feature {name} {feature_variable(name)} {state}")
    lines += [f"secret {name}" for name in sorted(env.secrets)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def detect_script(detect: DetectSpec, envs: tuple[Environment, ...]) -> bytes:
    lines = ["# how imagebuild-launch picks the environment: the variable first, then the rules in order",
             f"variable={detect.variable}",
             f"default={sh_quote(detect.default or '')}",
             "detect_rules() {", "    :"]
    for env in envs:
        if env.detect.hostname or env.detect.file:
            lines.append(f"    rule {env.name} {sh_quote(env.detect.hostname or '')} {sh_quote(env.detect.file or '')}")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def environments(recipe: Recipe) -> tuple[Environment, ...]:
    return recipe.environments or (Environment(DEFAULT_ENVIRONMENT),)


def detect_spec(recipe: Recipe) -> DetectSpec:
    """A recipe without environments has one, which is always its own default."""
    if recipe.environments:
        return recipe.detect
    return DetectSpec(variable=recipe.detect.variable, default=DEFAULT_ENVIRONMENT)


def config_files(recipe: Recipe) -> Mapping[str, bytes]:
    """Image path (relative to /) → content, for every environment in the recipe.

    The recipe comes from the loader, whose rules (imagebuild/recipe/checks.py)
    have checked every name written into these files.
    """
    envs = environments(recipe)
    detect = detect_spec(recipe)
    features = feature_names(recipe)
    document = {
        "variable": detect.variable,
        "default": detect.default,
        "features": features,
        "environments": [{"name": env.name,
                          "config": {k: _value(v) for k, v in env.config.items()},
                          "features": {name: bool(env.features.get(name, False)) for name in features},
                          "secrets": list(env.secrets),
                          "detect": {k: v for k, v in (("hostname", env.detect.hostname),
                                                       ("file", env.detect.file)) if v}}
                         for env in envs],
    }
    files: dict[str, bytes] = {
        "etc/imagebuild/environments": ("\n".join(env.name for env in envs) + "\n").encode(),
        "etc/imagebuild/environments.json": json.dumps(document, indent=2, sort_keys=True).encode() + b"\n",
        "etc/imagebuild/detect.sh": detect_script(detect, envs),
    }
    for env in envs:
        files[f"etc/imagebuild/env/{env.name}.sh"] = environment_script(env, features)
    return files


def server_script(kind: str | None, workers: int | None, port: int, config: str | None = None,
                  level: str | None = None) -> bytes:
    """What the launcher needs to adapt the server: a fixed worker count or workers per CPU, and,
    for a server that cannot read PORT or LOG_LEVEL itself (nginx), the config file whose marked
    `listen` lines it rewrites, and the `error_log` level that file was baked with (`level`),
    which LOG_LEVEL replaces.

    gunicorn's sync workers wait on I/O, so it gets its documented 2 × CPUs + 1;
    uvicorn's event loop keeps one CPU busy per worker.
    """
    lines = [f"# server {kind}: sourced by imagebuild-launch", f"port_baked={port}"]
    if workers is not None and kind in ("gunicorn", "uvicorn"):
        lines.append(f"workers_fixed={workers}")
    elif kind == "gunicorn":
        lines += ["workers_per_cpu=2", "workers_plus=1"]
    elif kind == "uvicorn":
        lines += ["workers_per_cpu=1", "workers_plus=0"]
    if config:
        lines.append(f"port_config={sh_quote(config)}")
    if config and level:
        lines.append(f"level_baked={level}")
    return ("\n".join(lines) + "\n").encode("utf-8")
