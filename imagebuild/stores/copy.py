"""The one way an image moves between two places: push, pull, promote and `oci:DIR` all come here.

An image or an index is walked children first: every blob the target lacks
is mounted (two repositories of one registry) or streamed over, a bounded
number at a time, verified against its digest and size on the way; then the
child manifests by digest, and the top manifest last, under its tags, so a
failed copy never leaves a tag pointing at half an image. Manifest bytes
travel exactly as they are, so the digest cannot change.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from imagebuild.errors import StoreError
from imagebuild.oci.digest import Digest
from imagebuild.oci.model import Descriptor, Platform
from imagebuild.registry.client import ManifestBytes
from imagebuild.stores.place import ImagePlace, blobs_of, children_of, descriptor_of, same_place

DEFAULT_PARALLEL = 4
# (how: "copied" | "mounted", blob): one event per blob that moved, for progress lines.
BlobEvent = Callable[[str, Descriptor], None] | None
# A repository of the target's registry that may lend a blob by mount, besides the source.
MountHint = Callable[[Digest], ImagePlace | None] | None


@dataclass
class CopyResult:
    descriptor: Descriptor            # the top manifest, as the target now holds it
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    blob_bytes: int = 0               # blob bytes streamed to the target
    manifest_bytes: int = 0           # manifest bytes written to the target
    attachments: list[Digest] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        return self.descriptor.digest


def copy(source: ImagePlace, target: ImagePlace, image: str | ManifestBytes, tags: Sequence[str] = (), *,
         attachments: bool | Sequence[str] = False, mount_hint: MountHint = None,
         parallel: int = DEFAULT_PARALLEL, progress: BlobEvent = None,
         platform: Platform | None = None) -> CopyResult:
    """Make `image` (a digest, or manifest bytes the caller holds) and all it names present in `target`,
    tagged `tags`. `attachments`: True carries every manifest whose subject it is, a list only those
    artifact types. `platform`: what a layout target's index records beside the tags."""
    top = image if isinstance(image, ManifestBytes) else _manifest(source, image)
    if same_place(source, target):
        # A retag: everything is there already, so only the tags are written (no blob moves).
        if tags:
            target.put_manifest(top, tags, platform)
        return CopyResult(descriptor_of(top, platform), manifest_bytes=len(top.raw) if tags else 0)
    children = [_manifest(source, child.digest) for child in children_of(top)]
    blobs: dict[str, Descriptor] = {}
    for manifest in children + [top]:
        for blob in blobs_of(manifest):
            blobs.setdefault(blob.digest, blob)
    result = CopyResult(descriptor_of(top, platform))

    def one(blob: Descriptor) -> tuple[str, int]:
        how, sent = _deliver(source, target, blob, mount_hint)
        if progress and how != "skipped":
            progress(how, blob)
        return how, sent

    def tally(outcomes) -> None:
        for how, sent in outcomes:
            if how == "skipped":
                result.blobs_skipped += 1
            elif how == "mounted":
                result.blobs_mounted += 1
            else:
                result.blobs_copied += 1
                result.blob_bytes += sent

    if parallel <= 1:
        tally(map(one, blobs.values()))      # in this thread: the first failure ends the copy there
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            # map cancels the queued blobs once one fails, so a failed copy stops early.
            tally(pool.map(one, blobs.values()))
    for child in children:
        target.put_manifest(child)
        result.manifest_bytes += len(child.raw)
    target.put_manifest(top, tags, platform)
    result.manifest_bytes += len(top.raw)
    if attachments:
        wanted = [None] if attachments is True else list(attachments)
        for artifact_type in wanted:
            for referrer in source.referrers(top.digest, artifact_type):
                carried = copy(source, target, referrer.digest, mount_hint=mount_hint, parallel=parallel,
                               progress=progress)
                target.add_referrer(top.digest, referrer)
                result.attachments.append(carried.digest)
                result.blob_bytes += carried.blob_bytes
                result.manifest_bytes += carried.manifest_bytes
    return result


def _manifest(place: ImagePlace, digest: str) -> ManifestBytes:
    found = place.manifest(digest)
    if found is None:
        raise StoreError(f"{place.label} does not hold manifest {digest}", hint="push or pull the image again")
    return found


def _deliver(source: ImagePlace, target: ImagePlace, blob: Descriptor, mount_hint: MountHint) -> tuple[str, int]:
    """One blob: skipped when the target has it, else mounted, else streamed (verified)."""
    if target.has_blob(blob.digest):
        return "skipped", 0
    lender = mount_hint(blob.digest) if mount_hint else None
    for candidate in (lender, source):
        if candidate is not None and target.mount(blob, candidate):
            return "mounted", 0
    sent = source.retrying(lambda: target.put_blob(blob, lambda: source.open_blob(blob)),
                           f"copying blob {blob.digest}")
    if sent not in (0, blob.size):   # 0: a registry found the blob complete after a failed attempt
        raise StoreError(f"blob {blob.digest} is {sent} bytes, not the {blob.size} its descriptor says",
                         hint="the manifest and its blob disagree; bake or push the image again")
    return "copied", sent
