"""`imagebuild manifests ENV`: the Kubernetes objects `deploy` would apply, as plain YAML."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from imagebuild.cli.common import InsecureOption, JsonOption, RecipeOption, StoreOption, emit_json, open_places

PartsOption = typer.Option(None, "--only", metavar="PART",
                           help="Print only this object (repeatable): service, deployment, expand, contract.")


def manifests_command(environment: str = typer.Argument(..., help="An environment whose recipe names a cluster"),
                      digest: Optional[str] = typer.Option(
                          None, "--digest", metavar="sha256:...",
                          help="This image of the registry instead of the one ENV's tag points to"),
                      only: Optional[List[str]] = PartsOption, recipe: Path = RecipeOption,
                      insecure: Optional[bool] = InsecureOption, store: Optional[Path] = StoreOption,
                      json_out: bool = JsonOption) -> None:
    """Print ENV's Deployment, Service and migration Jobs for its digest as multi-document YAML.

    The image is pinned by digest, resolved from ENV's tag in the registry as `deploy` does. The
    output is the same for the same recipe and digest, in the order the objects act: the expand
    Job, the Service, the Deployment, the contract Job. `kubectl apply -f` does not wait between
    them: apply the Jobs on their own (`--only expand`, `--only contract`) where order matters.
    """
    from imagebuild.release.kubernetes.manifests import PARTS, kubernetes_environment, objects, to_yaml
    from imagebuild.release.kubernetes.resolve import pinned_image
    from imagebuild.errors import UserError

    for part in only or ():
        if part not in PARTS:
            raise UserError(f"--only {part!r} is not an object of the environment", hint=f"use {', '.join(PARTS)}")
    loaded, places = open_places(recipe, store, insecure)
    try:
        kubernetes_environment(loaded, environment)
        image, release = pinned_image(loaded, places, environment, digest=digest)
    finally:
        places.close()
    documents = objects(loaded, environment, image, parts=only or PARTS)
    if json_out:
        emit_json({"environment": environment, "digest": release.digest, "version": image.version,
                   "reference": image.reference, "objects": documents})
        return
    sys.stdout.write(to_yaml(documents))
