"""Which image a cluster environment runs: ENV's tag resolved to a digest in the registry, as the SSH
deploy does (release/deploy/release.py), or a digest given outright, checked to be in the registry.

The image's own labels name the variable its launcher reads, and its exposed ports the port it serves
on, so a rollback to an image baked before `detect.variable` or `server.port` changed still starts in
the right environment and is probed on the right port, as the SSH deploy does.
"""

from __future__ import annotations

from imagebuild.contract import launcher_variable
from imagebuild.errors import UserError
from imagebuild.oci.digest import Digest
from imagebuild.recipe.model import Recipe, environment_index
from imagebuild.release.deploy.release import Release, resolve_release
from imagebuild.release.kubernetes.manifests import PinnedImage
from imagebuild.release.promote import Places, image_settings, image_version
from imagebuild.stores.place import RegistryPlace


def pinned_image(recipe: Recipe, places: Places, environment: str, *, to: str | None = None,
                 digest: str | None = None) -> tuple[PinnedImage, Release]:
    """The image to run and the release it is (`to`: move ENV's tag back first, a recorded rollback)."""
    env = recipe.environments[environment_index(recipe.environments, environment)]
    if digest is None:
        release = resolve_release(recipe, places, environment, to)
    else:
        target = places.target_for(env)
        if not isinstance(target.repository, RegistryPlace):
            raise UserError(f"a cluster pulls from a registry, and recipe {recipe.name} names none",
                            hint="set `registry:` in the recipe, then push and promote the image")
        wanted = Digest(digest)
        repository = target.repository
        manifest = repository.manifest(wanted)
        if manifest is None:
            raise UserError(f"{repository.client.host}/{repository.repository} has no image {wanted}",
                            hint="push it first, or leave out --digest to take the environment's")
        release = Release(environment=environment, digest=wanted, version=image_version(manifest, repository) or "",
                          reference=f"{repository.client.host}/{repository.repository}@{wanted}")
    repository = places.target_for(env).repository
    manifest = repository.manifest(release.digest)
    settings = image_settings(repository, manifest) if manifest is not None else {}
    ports = sorted(int(key.split("/")[0]) for key in settings.get("ExposedPorts") or {}
                   if key.endswith("/tcp") and key.split("/")[0].isdigit())
    image = PinnedImage(reference=release.reference, version=release.version or release.digest.short,
                        variable=launcher_variable(settings.get("Labels")), ports=tuple(ports))
    return image, release
