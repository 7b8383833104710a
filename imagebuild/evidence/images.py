"""The image a `sign`, `verify` or `provenance` command names: in a registry or in the local store.

`HOST[:PORT]/NAME[:TAG|@DIGEST]` is a repository of that registry; `NAME[:TAG|@DIGEST]` an image of
the local store. Either way the evidence lives beside the image, in the same place.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from imagebuild.errors import UserError, quoted
from imagebuild.oci.model import ManifestBytes
from imagebuild.oci.reference import Reference
from imagebuild.stores.layout import LayoutStore
from imagebuild.stores.place import ImagePlace, LayoutPlace


@dataclass(frozen=True)
class ImageAt:
    place: ImagePlace
    manifest: ManifestBytes
    repository: str          # HOST/NAME for a registry, NAME in the local store: what a signature names

    @property
    def digest(self) -> str:
        return str(self.manifest.digest)


@contextlib.contextmanager
def open_image(text: str, store: LayoutStore, insecure: bool | None = None) -> Iterator[ImageAt]:
    """The image `text` names, with its place (a registry connection is closed on leaving)."""
    reference = Reference.parse(text)
    if reference.registry is None:
        if not store.exists():
            raise UserError(f"no image {quoted(text)}: the local store at {store.root} is empty",
                            hint="bake it first, or name HOST/NAME:TAG in a registry")
        yield _found(LayoutPlace(store, reference.repository), reference, text, reference.repository)
        return
    from imagebuild.stores.place import RegistryPlace
    from imagebuild.stores.registry import open_client

    with open_client(reference.registry, insecure=insecure) as client:
        place = RegistryPlace(client, reference.repository)
        yield _found(place, reference, text, f"{client.host}/{reference.repository}")


def _found(place: ImagePlace, reference: Reference, text: str, repository: str) -> ImageAt:
    manifest = place.manifest(reference.identifier)
    if manifest is None:
        raise UserError(f"no image {quoted(text)} in {place.label}", hint="check the name and tag")
    if reference.digest and manifest.digest != reference.digest:
        raise UserError(f"{place.label} answered {reference.identifier} with manifest {manifest.digest}",
                        hint="the place is broken; tell its operators")
    return ImageAt(place, manifest, repository)
