"""`imagebuild dockerfile`: print a Dockerfile equivalent to what `bake` makes of a recipe."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from imagebuild.cli.common import RecipeOption, StoreOption


def dockerfile_command(recipe: Path = RecipeOption, store: Optional[Path] = StoreOption) -> None:
    """Print a Dockerfile that builds what `imagebuild bake` makes of the recipe.

    Build it from the app's directory with `docker build -f FILE .`. The base
    is Dockerfile.base rendered with the recipe's os and runtime sections;
    --build-arg BASE=IMAGE starts from another image. With Python libraries,
    pip runs in a stage FROM PIP_IMAGE (an image with python3 and pip of the
    runtime's version); --build-arg PIP_IMAGE=IMAGE names another.

    The defaults, BASE=debian:SUITE-slim (unless os.image or os.dockerfile
    names the base) and PIP_IMAGE=python:VERSION-slim, come from Docker Hub:
    without access to it, name images the engine has or can pull with both
    --build-arg options. With os.image, the base image's Env is read from the
    local store when it is there.
    """
    from imagebuild.build.dockerfile_export import render_dockerfile
    from imagebuild.sources.git import git_facts
    from imagebuild.recipe.loader import load_recipe

    # One look at git serves both the recipe's `git.*` variables and the Dockerfile's labels.
    facts = git_facts(recipe if recipe.is_dir() else recipe.parent)
    loaded = load_recipe(recipe, {"git": facts.as_context()})
    sys.stdout.write(render_dockerfile(loaded, _base_env(loaded, store), facts=facts))


def _base_env(recipe, store: Optional[Path]) -> dict[str, str]:
    if recipe.os.image is None:
        return {}
    from imagebuild.cli.common import open_store
    from imagebuild.errors import UserError
    from imagebuild.build.layers.debian import base_from_store

    try:
        base = base_from_store(open_store(store), recipe.os.image, recipe.os.architecture)
    except UserError:
        return {}       # not pulled here: Docker takes the Env from the base itself
    env = (base.config.get("config") or {}).get("Env") or []
    return dict(item.split("=", 1) for item in env if "=" in item)
