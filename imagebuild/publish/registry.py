"""`--push`: the baked image pushed to the recipe's registry as REGISTRY/NAME:VERSION."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagebuild.errors import RecipeError
from imagebuild.oci.reference import Reference
from imagebuild.progress import Progress
from imagebuild.recipe.model import Recipe
from imagebuild.stores.layout import LayoutStore

if TYPE_CHECKING:  # only for annotations: `imagebuild export` need not import the bake
    from imagebuild.build.bake import BakeInput, BakeResult
    from imagebuild.build.remote_cache import RemoteCache


def registry_target(recipe: Recipe, local_ref: str) -> Reference:
    """Where --push sends NAME:VERSION: under the recipe's registry."""
    if not recipe.registry:
        raise RecipeError("--push needs a registry in the recipe", file=str(recipe.source), key="registry",
                          hint="add e.g. registry: localhost:5000/acme")
    return Reference.parse(f"{recipe.registry}/{local_ref}")


def pushed_name(target: Reference) -> str:
    """The reference a push reports: REGISTRY/NAME:VERSION."""
    return f"{target.name}:{target.tag}"


class RegistryOutput:
    def __init__(self, insecure: bool | None = None):
        self.insecure = insecure
        self.reference: str | None = None       # REGISTRY/NAME:VERSION once pushed
        self.remote: RemoteCache | None = None  # the registry's layer cache, written after the push

    def check(self, source: BakeInput) -> None:
        """The recipe names a registry, and it answers."""
        from imagebuild.stores.registry import open_client  # httpx: only for a bake that pushes

        target = registry_target(source.recipe, source.local_ref)
        with open_client(target.registry, insecure=self.insecure) as client:
            client.ping()

    def publish(self, result: BakeResult, store: LayoutStore, progress: Progress) -> None:
        from imagebuild.stores.registry import push_image, remember_blobs

        target = registry_target(result.recipe, result.local_ref)
        remote = self.remote
        if result.remote and remote is not None:
            if remote.client.host == target.registry:
                # Layers the cache found stay in the registry: the push mounts (or skips) them.
                for layer in result.remote:
                    remember_blobs(store, target.registry, layer.repository, [str(layer.result.digest)])
            else:
                from imagebuild.build.remote_cache import fetch_layers
                fetch_layers(remote, store, result.remote)
        # The layer cache's client when it talks to the same registry: one connection, one TLS set-up.
        shared = remote.client if remote is not None and remote.client.host == target.registry else None
        pushed = push_image(store, result.local_ref, target, insecure=self.insecure, client=shared,
                            environments=result.recipe.environment_names())
        progress.note(f"pushed {pushed.reference}")
        self.reference = pushed_name(target)
        if remote is None or remote.cache_to is None:
            return
        before = len(remote.warnings)
        if remote.client.host == target.registry:
            remote.publish(result.keys, target.repository, store)
        else:    # an entry names a repository of its own registry, where the layer's blob lies
            remote.warn(f"the layer cache {remote.cache_to} is not in {target.registry}, where the image "
                        "was pushed; it was not written")
        for line in remote.warnings[before:]:
            progress.note(f"warning: {line}")
