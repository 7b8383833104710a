"""Push and pull: the local store and a registry, over stores/copy.py.

Push sends only what the registry lacks: each blob is checked with HEAD,
mounted from another repository of the same registry when the store
remembers one that holds it, and otherwise uploaded, streamed from the
store. Pull resolves an index to one platform's image and brings that in.

Everything a registry sends is checked before it is used (stores/place.py
and stores/copy.py do it for every copy): manifests, the index and the
config field by field, every blob against its digest and size. A pull that
a registry's answer ends is one error naming the registry and the
reference, and writes no tag.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Callable, Sequence

from imagebuild.errors import RegistryError, RegistryUnreachableError, StoreError, UserError
from imagebuild.frozen import mutable
from imagebuild.oci import mediatypes as mt
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import Descriptor, MalformedError, ParsedManifest, Platform, parse_index
from imagebuild.oci.reference import Reference
from imagebuild.registry.client import ManifestBytes, RegistryClient
from imagebuild.stores.copy import DEFAULT_PARALLEL, copy, copy_blobs
from imagebuild.stores.known_blobs import KNOWN_BLOBS_FILE, known_blobs, where_is
from imagebuild.stores.layout import LayoutStore, StoreNotWritableError
from imagebuild.stores.place import LayoutPlace, RegistryPlace, blobs_of, children_of
from imagebuild.stores.reserved_tags import refuse_promotion_tag

Progress = Callable[[str], None] | None


@mutable
class PushResult:
    reference: str
    digest: Digest
    bytes_uploaded: int = 0
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@mutable
class PullResult:
    reference: str
    digest: Digest
    ref_name: str            # the name the image is tagged under in the local store
    bytes_downloaded: int = 0
    blobs_fetched: int = 0
    blobs_present: int = 0
    requests: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def registry_reference(text: str) -> Reference:
    ref = Reference.parse(text)
    if not ref.registry:
        raise UserError(f"{text!r} names no registry", hint="write it as HOST[:PORT]/NAME[:TAG], e.g. localhost:5000/acme/hello")
    return ref


def open_client(host: str, *, insecure: bool | None = None, **options) -> RegistryClient:
    return RegistryClient(host, insecure=insecure, **options)


# -- local store <-> registry ------------------------------------------------------------

def push_image(store: LayoutStore, local_ref_name: str, target: Reference, *, insecure: bool | None = None,
               progress: Progress = None, client: RegistryClient | None = None,
               parallel: int = DEFAULT_PARALLEL, environments: Sequence[str] = ()) -> PushResult:
    """Push an image of the local store to `target` (HOST/REPO[:TAG]), with what is attached to it
    (SBOMs, provenance, attestations) and its signature tag.

    Without a tag in `target`, the tag of `local_ref_name` is used (`hello:abc1234` → `abc1234`).
    A promotion record's tag, or one of `environments` (the recipe's), is refused: only promotion writes them.
    """
    if not target.registry:
        raise UserError(f"{target} names no registry", hint="use HOST[:PORT]/NAME[:TAG]")
    if target.digest:
        raise UserError(f"cannot push to a digest reference {target}", hint="push to a tag")
    if not store.exists():
        raise UserError(f"the local store at {store.root} is empty", hint="bake an image first")
    descriptor = store.resolve(local_ref_name)
    tag = target.tag or _tag_of(local_ref_name)
    refuse_promotion_tag(tag, environments)
    # Blobs lent by a registry's layer cache on another registry come here first; on this one, they are mounted.
    fetch_missing_blobs(store, descriptor.digest, progress=progress, leave_on=target.registry)
    own = client is None
    client = client or open_client(target.registry, insecure=insecure)
    try:
        known = _known_blobs(store, target.registry)

        def mount_hint(digest: Digest) -> RegistryPlace | None:
            repository = known.get(digest)
            return RegistryPlace(client, repository) if repository and repository != target.repository else None

        def report(how: str, blob: Descriptor) -> None:
            if progress:
                progress(f"{'uploaded' if how == 'copied' else how} {blob.digest.short} ({blob.size} bytes)")

        before = client.counters.requests
        # Under its own name, so the attachments and signatures the store lists for it travel along.
        copied = copy(LayoutPlace(store, _name_of(store, local_ref_name)), RegistryPlace(client, target.repository),
                      descriptor.digest, [tag], attachments=True, mount_hint=mount_hint, parallel=parallel,
                      progress=report)
        result = PushResult(reference=f"{client.host}/{target.repository}:{tag}", digest=copied.digest,
                            bytes_uploaded=copied.blob_bytes + copied.manifest_bytes,
                            blobs_uploaded=copied.blobs_copied, blobs_skipped=copied.blobs_skipped,
                            blobs_mounted=copied.blobs_mounted, requests=client.counters.requests - before)
        _remember_blobs(store, target.registry, target.repository, descriptor)
        return result
    finally:
        if own:
            client.close()


def _name_of(store: LayoutStore, local_ref_name: str) -> str:
    """The image name of a store ref `NAME:TAG` (whose attachments are listed under NAME); "" for a digest."""
    if local_ref_name in store.refs() and "@" not in local_ref_name:
        return local_ref_name.rpartition(":")[0]
    return ""


def _tag_of(local_ref_name: str) -> str:
    last = local_ref_name.rsplit("/", 1)[-1]
    if "@" in last:
        return "latest"
    return last.rpartition(":")[2] if ":" in last else "latest"


def pull_image(store: LayoutStore, source: Reference, *, insecure: bool | None = None,
               platform: Platform = Platform(), progress: Progress = None,
               client: RegistryClient | None = None) -> PullResult:
    """Bring `source` into the local store, tagged under `str(source)`.

    An index is resolved to the manifest for `platform`; the tag (or
    `name@digest` for a digest reference) then points at that image manifest,
    so `store.resolve(result.ref_name)` and `store.read_manifest` work on it.
    """
    if not source.registry:
        raise UserError(f"{source} names no registry", hint="use HOST[:PORT]/NAME[:TAG] or NAME@sha256:...")
    own = client is None
    client = client or open_client(source.registry, insecure=insecure)
    try:
        return _pull(store, source, client, platform, progress)
    except MalformedError as exc:
        raise RegistryError(f"registry {source.registry} sent a malformed answer for {source}: {exc}",
                            hint="the registry, or what pushed the image, is broken; tell its operators") from None
    except (RegistryError, RegistryUnreachableError) as exc:
        if str(source) in exc.message:
            raise
        # Name the reference: a pull in a script or a bake is one of several.
        renamed = (RegistryError(f"pulling {source}: {exc.message}", hint=exc.hint, status=exc.status,
                                 code=exc.code, retried=exc.retried) if isinstance(exc, RegistryError)
                   else RegistryUnreachableError(f"pulling {source}: {exc.message}", hint=exc.hint))
        raise renamed from None
    finally:
        if own:
            client.close()


def _pull(store: LayoutStore, source: Reference, client: RegistryClient, platform: Platform,
          progress: Progress) -> PullResult:
    before = client.counters.requests
    remote = RegistryPlace(client, source.repository)
    top = remote.manifest(source.identifier)
    if top is None:
        raise UserError(f"{source} is not in the registry", hint="check the name, tag or digest")
    image = top
    if top.media_type in mt.INDEX_TYPES:
        image = _platform_manifest(remote, source, top, platform)
    _require_image(source, image)
    store.ensure()
    local = LayoutPlace(store)

    def report(how: str, blob: Descriptor) -> None:
        if progress:
            progress(f"fetched {blob.digest.short} ({blob.size} bytes)")

    # One blob at a time, as before: a failing registry then costs one download's retries, not four.
    copied = copy(remote, local, image, [str(source)], progress=report, parallel=1)
    if image is not top:
        local.put_manifest(top)    # kept so the digest pulled by stays readable in the store
    return PullResult(reference=str(source), digest=top.digest, ref_name=str(source),
                      bytes_downloaded=copied.blob_bytes, blobs_fetched=copied.blobs_copied,
                      blobs_present=copied.blobs_skipped, requests=client.counters.requests - before)


def _require_image(source: Reference, manifest: ManifestBytes) -> None:
    """Artifacts (signatures, promotion records, Helm charts) share the manifest type but carry no image.
    MalformedError when it is no manifest at all (checked before the store is touched)."""
    config = ParsedManifest.parse(manifest.raw, manifest.media_type).config
    if config.media_type not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        raise UserError(f"{source} is not a container image: its config is {config.media_type!r}",
                        hint="pull an image tag or digest, not an artifact")


def _platform_manifest(remote: RegistryPlace, source: Reference, index: ManifestBytes,
                       platform: Platform) -> ManifestBytes:
    for child in parse_index(index.raw):
        if child.platform and child.platform.os == platform.os and \
                child.platform.architecture == platform.architecture and \
                (platform.variant is None or child.platform.variant == platform.variant):
            found = remote.manifest(child.digest)
            if found is None:
                break
            return found
    raise UserError(f"{source} has no image for {platform.os}/{platform.architecture}",
                    hint="pick a reference that offers this platform")


# -- which repository of a registry already holds a blob ---------------------------------
# A hint for cross-repository mounts, kept beside the store; losing it only costs uploads.

def _known_blobs(store: LayoutStore, host: str) -> dict[str, str]:
    return known_blobs(store).get(host, {})


def _remember_blobs(store: LayoutStore, host: str, repository: str, top: Descriptor) -> None:
    digests = [b.digest for b in blobs_of(LayoutPlace(store).manifest(top.digest))] \
        if top.media_type not in mt.INDEX_TYPES else []
    remember_blobs(store, host, repository, digests)


def remember_blobs(store: LayoutStore, host: str, repository: str, digests: Sequence[str]) -> None:
    """Note that `repository` of `host` holds these blobs, so a push there or beside it mounts them."""
    path = store.root / KNOWN_BLOBS_FILE
    try:
        with store.locked():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
            known = data.setdefault(host, {})
            for digest in digests:
                known[digest] = repository
            store._atomic_write(path, json.dumps(data, sort_keys=True).encode())
    except (OSError, StoreError, StoreNotWritableError):
        # Only a hint for later mounts: a read-only store still pushes.
        pass



# -- blobs a bake left in a registry ----------------------------------------------------
# A bake whose layers the registry's layer cache lent leaves their blobs where they lie; the
# store remembers which repository holds each (above). Whatever later reads the image's bytes
# from the store (export, run, a push elsewhere) fetches them first.

def fetch_missing_blobs(store: LayoutStore, image_digest: str, *, insecure: bool | None = None,
                        progress: Progress = None, leave_on: str | None = None) -> int:
    """Bring into `store` the blobs of its image `image_digest` that it lacks, from the registry
    repositories it remembers holding them, each verified against its digest and size. Returns the
    bytes fetched. `leave_on`: a registry host whose blobs stay where they are (a push there mounts
    them). A StoreError (exit 4) names a missing blob that no registry is known to hold."""
    place = LayoutPlace(store)
    try:
        blobs = blobs_of(place.manifest(image_digest))
    except MalformedError as exc:    # a manifest the store holds but that no tool should have written
        raise place.malformed(f"manifest {image_digest}", exc) from None
    missing = [blob for blob in blobs if not store.has_blob(blob.digest)]
    if not missing:
        return 0
    wanted: dict[tuple[str, str], list[Descriptor]] = {}
    for blob in missing:
        where = where_is(store, str(blob.digest))
        if where is None:
            raise StoreError(f"blob {blob.digest} of image {image_digest} is missing from the store at {store.root}, "
                             f"and no registry is known to hold it",
                             hint="bake the image again, or pull it from a registry that has it")
        if where[0] != leave_on:
            wanted.setdefault(where, []).append(blob)
    fetched = 0
    for (host, repository), blobs in wanted.items():
        if progress:
            progress(f"fetching {len(blobs)} blob(s) the store lacks from {host}/{repository}")
        with open_client(host, insecure=insecure) as client:
            fetched += copy_blobs(RegistryPlace(client, repository), LayoutPlace(store), blobs).blob_bytes
    return fetched
