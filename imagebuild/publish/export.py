"""`oci:DIR` and `docker-archive:FILE` destinations (`bake --output`), and `imagebuild export IMAGE
DESTINATION`: an image of the local store written to one through the same outputs."""

from __future__ import annotations

from imagebuild.errors import UserError, quoted
from imagebuild.oci.digest import is_digest
from imagebuild.publish import docker_archive, oci_dir
from imagebuild.stores.layout import LayoutStore


def destination_output(destination: str) -> oci_dir.OciDirOutput | docker_archive.DockerArchiveOutput:
    """`oci:DIR` or `docker-archive:FILE` (bake --output, export)."""
    kind, sep, path = destination.partition(":")
    if sep and path and kind == oci_dir.KIND:
        return oci_dir.OciDirOutput(destination)
    if sep and path and kind == docker_archive.KIND:
        return docker_archive.DockerArchiveOutput(destination)
    raise UserError(f"unknown destination {quoted(destination)}", hint="use oci:DIR or docker-archive:FILE")


def export_image(store: LayoutStore, image: str, destination: str) -> dict:
    output = destination_output(destination)
    if not store.exists():
        raise UserError(f"the local store at {store.root} is empty", hint="bake an image first")
    descriptor = store.resolve(image)
    if store.kind_of(descriptor) in ("artifact", "disk", "referrers"):
        raise UserError(f"{image} is an artifact (such as a promotion record), not a container image",
                        hint="export an image; `imagebuild images` lists them")
    output.check()
    ref_name = _tagged_name(store, image, descriptor.digest)
    # Layers a registry's layer cache lent to the bake are fetched now, verified.
    from imagebuild.stores.registry import fetch_missing_blobs
    fetch_missing_blobs(store, descriptor.digest)
    name, _, tag = ref_name.rpartition(":")
    output.write(store, descriptor, name, tag or "latest")
    return {"image": ref_name, "digest": str(descriptor.digest), "destination": destination}


def _tagged_name(store: LayoutStore, image: str, digest: str) -> str:
    """The `name:tag` an export carries: the one asked for, or a tag of the same manifest."""
    refs = store.refs()
    if image in refs:
        return image
    if is_digest(image) or "@" in image:
        names = sorted(n for n, d in refs.items() if d.digest == digest and ":" in n.rsplit("/", 1)[-1])
        if names:
            return names[0]
        raise UserError(f"{image} has no name:tag in the local store; export it by name",
                        hint="run `imagebuild images` to see the names")
    return image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
