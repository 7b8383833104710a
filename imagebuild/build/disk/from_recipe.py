"""A disk from a recipe: the kernel's Debian suite and the disk of an image just baked."""

from __future__ import annotations

from imagebuild.build.disk.artifact import DiskResult, bake_disk
from imagebuild.errors import UserError
from imagebuild.sources.debian_index import DEFAULT_MIRROR, DebianSource
from imagebuild.recipe.model import Recipe


def source_for(recipe: Recipe) -> DebianSource:
    """The suite the kernel comes from: the recipe's own, or the default one for an os.image base."""
    if recipe.os.debian:
        return DebianSource(suite=recipe.os.debian, mirror=(recipe.os.mirror or DEFAULT_MIRROR).rstrip("/"),
                            architecture=recipe.os.architecture)
    return DebianSource(architecture=recipe.os.architecture)


def refuse_unbootable(recipe: Recipe) -> None:
    """A disk boots x86-64 machines only, and holds one image."""
    if recipe.multi_platform:
        raise UserError(f"a disk holds one image; the recipe lists the platforms {', '.join(recipe.platforms)}",
                        hint="bake the disk from a recipe of one platform, linux/amd64")
    if recipe.os.architecture != "amd64":
        raise UserError(f"a disk boots x86-64 machines only; the recipe's os.architecture is {recipe.os.architecture}",
                        hint="bake the disk from an amd64 recipe")


def bake_recipe_disk(recipe: Recipe, store, image_ref: str) -> DiskResult:
    """The disk of IMAGE_REF, just baked from RECIPE (as the bake loaded it; its disk and os sections apply)."""
    refuse_unbootable(recipe)
    return bake_disk(store, image_ref, source_for(recipe), recipe.disk.kernel, recipe.name, recipe.disk.max_bytes)
