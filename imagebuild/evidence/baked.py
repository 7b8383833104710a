"""`bake --sign KEY`: the baked image signed and its provenance attached, in the local store.

This runs after the bake and before the outputs publish, so everything an output copies with its
attachments carries both: `--push` sends the signature tag and the provenance with the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Sequence

from imagebuild.evidence.keys import key_id
from imagebuild.evidence.provenance import BakeRun, attach_provenance, bake_statement
from imagebuild.evidence.signatures import sign_image
from imagebuild.oci.reference import Reference
from imagebuild.recipe.model import Recipe
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.place import LayoutPlace

if TYPE_CHECKING:
    from imagebuild.build.bake import BakeInput, BakeResult


@dataclass(frozen=True)
class SignedBake:
    identity: str      # the repository the signature and the provenance name
    key_id: str

    def to_json(self) -> dict:
        return {"identity": self.identity, "key_id": self.key_id}


def signed_identity(recipe: Recipe) -> str:
    """What a bake's signature names: REGISTRY/NAME, where `--push` sends it; NAME without a registry."""
    if not recipe.registry:
        return recipe.name
    return Reference.parse(f"{recipe.registry.rstrip('/')}/{recipe.name}").name


def sign_bake(result: BakeResult, source: BakeInput, store: LayoutStore, key, *, outputs: Sequence[str],
              allow_dirty: bool, started_on: datetime) -> SignedBake:
    """Attach the bake's signed provenance to the image in `store`, then sign the image with `key`."""
    identity = signed_identity(result.recipe)
    place = LayoutPlace(store, result.recipe.name)
    manifest = place.manifest(str(result.digest))
    if manifest is None:      # the bake has just written it: a store that lost it is broken
        raise AssertionError(f"the store lost the baked manifest {result.digest}")
    document = bake_statement(result, source, identity, outputs, allow_dirty, BakeRun.observe(started_on))
    attach_provenance(place, manifest, document, key)
    sign_image(place, str(result.digest), identity, key)
    return SignedBake(identity, key_id(key))
