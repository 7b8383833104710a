"""What to deploy: the digest an environment's tag points to, read from the registry.

Hosts pull REGISTRY/REPOSITORY@sha256:..., never the tag, so a promotion that
lands while a deploy runs cannot change what the remaining hosts get.
`--to VERSION` first moves the environment's tag back to VERSION (a promotion
that is recorded as a rollback), then deploys it like any other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from imagebuild.errors import UserError
from imagebuild.oci.digest import Digest
from imagebuild.release.promote import Places, image_version, promote, read_records, resolve_image
from imagebuild.stores.place import RegistryPlace
from imagebuild.recipe.model import Recipe, environment_index


@dataclass(frozen=True)
class Release:
    environment: str
    digest: Digest
    version: str
    reference: str              # what the hosts pull: HOST/REPOSITORY@DIGEST
    rolled_back: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_release(recipe: Recipe, places: Places, environment: str, to: str | None = None) -> Release:
    env = recipe.environments[environment_index(recipe.environments, environment)]
    target = places.target_for(env)
    if not isinstance(target.repository, RegistryPlace):
        raise UserError(f"deploy needs a registry the hosts pull from, and recipe {recipe.name} names none",
                        hint="set `registry:` in the recipe, then push and promote the image")
    rolled_back = False
    if to is not None:
        rolled_back = _roll_tag_back(recipe, places, environment, to)
    manifest = target.repository.manifest(target.tag)
    if manifest is None:
        raise UserError(f"{target.label} does not exist: nothing was promoted to {environment}",
                        hint=f"run `imagebuild promote VERSION --to {environment}` first")
    repository = target.repository
    reference = f"{repository.client.host}/{repository.repository}@{manifest.digest}"
    return Release(environment=environment, digest=manifest.digest, version=image_version(manifest, repository) or "",
                   reference=reference, rolled_back=rolled_back)


def _roll_tag_back(recipe: Recipe, places: Places, environment: str, version: str) -> bool:
    """Point the environment's tag at an image it ran before; True when the tag moved."""
    home = places.home
    wanted = resolve_image(home, version, recipe.name)
    if not read_records(home, environment, digest=wanted.digest):
        raise UserError(f"{version} ({wanted.digest.short}) was never in {environment}, so it is not a rollback",
                        hint=f"promote it with `imagebuild promote {version} --to {environment}`, then deploy")
    target = places.target_for(recipe.environment(environment))
    current = target.repository.manifest(target.tag)
    if current is not None and current.digest == wanted.digest:
        return False
    promote(home, recipe.environments, version, environment, target_for=places.target_for, name=recipe.name,
            root=recipe.root)
    return True
